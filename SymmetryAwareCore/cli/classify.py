"""``symmetryaware classify``: scan-level findings (probability per finding) with a classifier model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import InputError
from .progress import add_progress_argument

EXAMPLE = """examples:
  symmetryaware classify head_ct.nii.gz --model ct-findings
  symmetryaware classify cases/ --model ct-findings --output findings.json
  symmetryaware classify head_ct.nii.gz --model ct-haemorrhage-phantom-saswin-f12 --maps maps/

Prints one line per case with each finding's probability; --output writes them all as JSON;
--maps writes, for a classifier with a lesion map, <case>_<finding>_map.nii.gz (probability
on the input's grid: where the classifier sees the finding)."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="scan-level findings (e.g. haemorrhage, fracture, midline shift) with a classifier model",
        description="Align each scan to its mid-sagittal plane and give the probability of each finding "
        "named by the classifier's model card.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="channel files of one case, a folder, or a CSV of cases")
    parser.add_argument("-m", "--model", required=True, help="classifier model name or card path")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--msp-fallback", choices=("error", "axes"), default="error")
    parser.add_argument("--output", type=Path, help="JSON file for all results (written atomically)")
    parser.add_argument("--maps", type=Path, metavar="DIR",
                        help="folder for each finding's map on the input grid (classifiers with a lesion map)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file or map files")
    add_progress_argument(parser)
    from .segment import add_budget_argument

    add_budget_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.cases import ChannelSpec, discover_cases
    from ..contract import finding_map_file
    from ..inference.classify import classify_case, finding_names, has_lesion_map
    from ..inference.model_source import resolve_model
    from ..io.atomic import atomic_path
    from ..io.outputs import check_distinct_outputs, check_output_dir, check_output_file
    from ..io.writers import write_map
    from .progress import ProgressPrinter
    from .segment import check_frame_budget

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.output is not None:  # before the model is loaded or any scan read
        check_output_file(args.output, args.inputs, overwrite=args.overwrite)
    if args.maps is not None:
        check_output_dir(args.maps, args.inputs)
    model = resolve_model(args.model)
    names = finding_names(model)  # refuse a segmentation model before reading any scan
    if args.maps is not None and not has_lesion_map(model):
        raise InputError(f"--maps: model {args.model} gives no lesion map (only classifiers with pooling 'lesion' do)")
    channels = [ChannelSpec(c.name, tuple(c.patterns)) for c in model.card.channels]
    cases = discover_cases(args.inputs, channels)
    all_inputs = [p for case in cases for p in case.paths]
    if args.output is not None:
        check_output_file(args.output, all_inputs, overwrite=args.overwrite)
    map_files = {}
    if args.maps is not None:
        map_files = {case.case_id: {n: args.maps / finding_map_file(case.case_id, n) for n in names} for case in cases}
        every = [f for files in map_files.values() for f in files.values()]
        check_distinct_outputs(every + ([args.output] if args.output is not None else []))
        for f in every:
            check_output_file(f, all_inputs, overwrite=args.overwrite)
    spacing = model.card.preprocessing.get("spacing") or (1.0, 1.0, 1.0)
    results, failed = {}, 0
    printer = ProgressPrinter(args.progress)

    def until_written(fraction: float, stage: str) -> None:
        # The maps are written here, after classify_case ends: "done" waits for them.
        if stage != "done":
            printer.update(fraction, stage)

    for index, case in enumerate(cases):
        printer.start_case(index, len(cases), case.case_id)
        try:
            check_frame_budget(case.paths, spacing)
            result = classify_case(case.paths, model, args.device, args.msp_fallback, maps=args.maps is not None,
                                   progress=until_written)
        except InputError as error:
            if len(cases) == 1:
                raise
            printer.message(f"{case.case_id}: error: {error}")
            failed += 1
            continue
        maps, native = result.pop("maps", None), result.pop("native", None)
        if maps is not None:
            args.maps.mkdir(parents=True, exist_ok=True)
            result["maps"] = {}
            for name, array in maps.items():
                path = map_files[case.case_id][name]
                write_map(array, native, path, "float16", case.paths)
                result["maps"][name] = str(path)
        printer.update(1.0, "done")
        results[case.case_id] = result
        text = ", ".join(f"{k} {v:.3f}" for k, v in result["probabilities"].items())
        print(f"{case.case_id}: {text}")
    if args.output is not None:
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0
