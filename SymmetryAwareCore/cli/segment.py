"""``symmetryaware segment``: lesion segmentation, hemispheric attention and a report per case."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import InputError
from .progress import ProgressPrinter, format_seconds

EXAMPLE = """examples:
  symmetryaware segment --sample --output-dir out
  symmetryaware segment case_t1.nii.gz case_t1ce.nii.gz case_t2.nii.gz case_flair.nii.gz -o out
  symmetryaware segment cases/ -o out --device cuda --tta       (one sub-folder per case)
  symmetryaware segment cases.csv -o out                        (case_id,t1,t1ce,t2,flair)
  symmetryaware segment scan/ -o out --roi-center=-30,12,20 --roi-size 50,50,50
  symmetryaware segment --sample -o out --attention-from=-40,-10,20  (where that point attends;
                                            "=" because the value starts with "-")

Per case, <output-dir>/<case_id>/ receives segmentation.nii.gz and segmentation.seg.nrrd
(on the first input's grid), attention.nii.gz (mirror focus, 0..1, models with SACA),
asymmetry.nii.gz, msp.mrk.json, overview.png and report.json; with --attention-from also
attention_from.nii.gz (attention per mL of that point over the other hemisphere). The maps
are explained in docs/attention.md. Finished cases are skipped unless --overwrite."""


def _triple(text: str) -> List[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 10,-5,20, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers like 10,-5,20, got {text!r}")
    return values


def _overlap(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"overlap must be in [0, 1), got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment lesions with a symmetry-aware model (files, a folder of cases, or a CSV)",
        description="Segment brain lesions: align each scan to its mid-sagittal plane, run the model on "
        "mirror-paired windows, and write labels, attention maps, the plane and a report on the "
        "input's own grid.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments shared by ``segment`` and ``attention``."""
    parser.add_argument("inputs", nargs="*", help="channel files of one case, a folder, or a CSV of cases")
    parser.add_argument("--sample", action="store_true", help="run on the bundled sample case (a glioma phantom)")
    parser.add_argument("-o", "--output-dir", required=True, type=Path, help="folder for the results (one sub-folder per case)")
    parser.add_argument("-m", "--model", default="default", help="model name (see `symmetryaware models list`) or card path")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument("--overlap", type=_overlap, default=0.25, help="sliding-window overlap (default 0.25)")
    parser.add_argument("--sw-batch", type=_positive_int, default=2, help="windows per forward pass (default 2)")
    parser.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation")
    parser.add_argument("--amp", default="auto", choices=("auto", "off", "float16", "bfloat16"), help="mixed precision")
    parser.add_argument("--roi-center", type=_triple, metavar="R,A,S", help="run on a box around this RAS point (mm)")
    parser.add_argument("--roi-size", type=_triple, metavar="X,Y,Z", help="size of that box in mm")
    parser.add_argument(
        "--msp-fallback", choices=("error", "axes"), default="error",
        help="when no mid-sagittal plane can be found: refuse the case (default) or use the image axes",
    )
    parser.add_argument(
        "--attention-from", type=_triple, metavar="R,A,S",
        help="also write attention_from.nii.gz: where this RAS point (mm) attends in the other hemisphere "
        "(models with SACA); write --attention-from=-40,10,20 when the first value is negative",
    )
    parser.add_argument("--case-id", help="name of the output folder (one case only)")
    parser.add_argument("--no-overview", action="store_true", help="do not write overview.png")
    parser.add_argument("--overwrite", action="store_true", help="replace results that already exist")
    parser.add_argument("--progress", choices=("bar", "machine", "none"), default="bar", help="progress display")


def _sample_inputs() -> List[str]:
    from ..phantoms import sample_case_paths

    paths = sample_case_paths()
    return [str(paths[c]) for c in ("t1", "t1ce", "t2", "flair")]


def run(args: argparse.Namespace, outputs=None, model=None) -> int:
    """Run the pipeline over every case; ``outputs`` limits the files written (default: all);
    ``model`` is an already loaded model (default: ``args.model``)."""
    from ..inference.cases import ChannelSpec, discover_cases
    from ..inference.model_source import resolve_model
    from ..inference.pipeline import SegmentOptions, segment_case

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if (args.roi_center is None) != (args.roi_size is None):
        raise InputError("--roi-center and --roi-size go together")
    inputs = list(args.inputs)
    if args.sample:
        if inputs:
            raise InputError("give either --sample or input files, not both")
        inputs = _sample_inputs()
    if not inputs:
        raise InputError("no input given (files, a folder, a CSV, or --sample)")
    printer = ProgressPrinter(args.progress)
    model = model or resolve_model(args.model)
    if args.attention_from is not None and not getattr(model.network, "use_saca", False):
        raise InputError(f"--attention-from needs a model with symmetry-aware cross-attention; {args.model!r} has none")
    for note in model.notes:
        printer.message(f"WARNING: {note}")
    channels = [ChannelSpec(c.name, tuple(c.patterns)) for c in model.card.channels]
    cases = discover_cases(inputs, channels, case_id=args.case_id)
    options = SegmentOptions(
        device=args.device,
        overlap=args.overlap,
        sw_batch_size=args.sw_batch,
        tta=args.tta,
        amp=args.amp,
        msp_on_failure=args.msp_fallback,
        roi_center_ras=args.roi_center,
        roi_size_mm=args.roi_size,
        overview=not args.no_overview,
        overwrite=args.overwrite,
        outputs=tuple(outputs) if outputs else None,
        attention_from_ras=args.attention_from,
    )
    rows = []
    for index, case in enumerate(cases):
        printer.start_case(index, len(cases), case.case_id)
        for note in case.notes:
            printer.message(f"{case.case_id}: {note}")

        def windows(done: int, total: int) -> None:
            printer.detail = f"window {done}/{total}"

        start = time.perf_counter()
        try:
            result = segment_case(case.paths, args.output_dir, model, options, case.case_id, printer.update, windows)
        except InputError as error:
            if len(cases) == 1:
                raise
            printer.message(f"{case.case_id}: error: {error}")
            rows.append((case.case_id, "failed", "-", format_seconds(time.perf_counter() - start), str(error)))
            continue
        except Exception as error:  # a bug on one case must not end a batch; say what it was
            if len(cases) == 1:
                raise
            logging.exception("case %s failed", case.case_id)
            rows.append((case.case_id, "failed", "-", format_seconds(time.perf_counter() - start), f"{type(error).__name__}: {error}"))
            continue
        printer.detail = ""
        volume = result.report.get("total", {}).get("volume_ml", 0.0)
        status = "skipped (done)" if result.skipped else "ok"
        rows.append((case.case_id, status, f"{volume:.2f}", format_seconds(time.perf_counter() - start), str(result.output_dir)))
    _print_summary(rows)
    return 0 if all(r[1] != "failed" for r in rows) else 1


def _print_summary(rows: Sequence[tuple]) -> None:
    header = ("case", "status", "lesion mL", "time", "output / error")
    table = [header, *rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(4)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header[:4], widths)) + "  " + header[4], file=sys.stderr)
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r[:4], widths)) + "  " + str(r[4]), file=sys.stderr)
    failed = sum(r[1] == "failed" for r in rows)
    print(f"{len(rows)} case(s): {len(rows) - failed} ok, {failed} failed", file=sys.stderr)
