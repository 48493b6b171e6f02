"""Headless batch segmentation of a folder with the SymmetryAwareSeg logic.

Inside Slicer, without a window::

    Slicer --no-splash --no-main-window --python-script batch.py -- \\
        --input /data/cases --output /data/results [--model CARD.json] [--device cuda]

Also runs with a plain Python that has ``slicer-core`` (headless MRML) and the core::

    python batch.py --input /data/cases --output /data/results

A case is a sub-folder of ``--input`` holding its channel images, or one image at the top
level. Per case, ``<output>/<case>/`` receives the core's files plus ``<case>.seg.nrrd``,
the attention/asymmetry maps as ``.nrrd`` and a ``<case>.mrb`` scene. ``summary.json``
lists every case (with its error, if any). Run options (``--model``, ``--device``,
``--overlap``, ``--tta``, ``--dicom-seg``...) are the core's own (``SymmetryAwareCore.contract``).
Exit code: 0 all cases done, 1 some failed,
2 bad arguments or missing dependencies.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The module folder holds SymmetryAwareSegLib; Slicer puts it on the path, plain Python does not.
sys.path.insert(0, str(HERE.parent))


def parse_args(argv):
    from SymmetryAwareCore.contract import add_run_option_arguments

    parser = argparse.ArgumentParser(prog="SymmetryAwareSeg batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder of cases")
    parser.add_argument("--output", required=True, help="folder for the results")
    # Model, device, overlap...: the same definition (defaults, ranges) as the core's command.
    add_run_option_arguments(parser)
    parser.add_argument("--no-bundle", action="store_true", help="do not save a .mrb per case")
    parser.add_argument("--install", action="store_true", help="install missing dependencies without asking (Slicer only)")
    parser.add_argument("--core-module", default="SymmetryAwareCore", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import slicer

    from SymmetryAwareCore.contract import RunOptions
    from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic
    from SymmetryAwareSegLib.nodes import new_scene

    in_slicer = hasattr(slicer, "app")
    if in_slicer:
        from SymmetryAwareSegLib.install import DependencyError, detect_environment, ensure_dependencies, plan_install

        features = ["dicom"] if args.dicom_seg else []
        try:
            ready = plan_install(detect_environment(), features).nothing_to_do or (
                args.install and ensure_dependencies(ask=False, features=features)
            )
        except DependencyError as error:
            print(f"SymmetryAwareSeg batch: error: {error}\n{error.detail}", file=sys.stderr)
            return 2
        if not ready:
            print("missing dependencies: run once with --install, or install them from the module panel", file=sys.stderr)
            return 2
    # Each case gets a fresh scene of its own (with the markups classes Slicer 5.8 lacks there).
    logic = SymmetryAwareSegLogic(scene=new_scene(), core_module=args.core_module)

    def report(case, event):
        if event.kind == "progress":
            print(f"{case}: {event.value:.0%}", flush=True)
        elif event.kind in ("stage", "case"):
            print(f"{case}: {event.text}", flush=True)

    try:
        summaries = logic.batch(
            args.input, args.output, RunOptions.from_namespace(args), save_bundle=not args.no_bundle, on_event=report,
        )
    except ValueError as error:
        print(f"SymmetryAwareSeg batch: error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output)
    failed = [s for s in summaries if "error" in s]
    for summary in failed:
        print(f"{summary['case']}: FAILED: {summary['error']}", file=sys.stderr)
    print(f"{len(summaries) - len(failed)} case(s) done, {len(failed)} failed; summary in {output / 'summary.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    try:
        import slicer

        if hasattr(slicer, "app"):
            slicer.util.exit(code)  # quits the Slicer application with this status
    except ImportError:
        pass
    sys.exit(code)
