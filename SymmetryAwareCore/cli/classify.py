"""``symmetryaware classify``: scan-level findings (probability per finding) with a classifier model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import InputError

EXAMPLE = """examples:
  symmetryaware classify head_ct.nii.gz --model ct-findings
  symmetryaware classify cases/ --model ct-findings --output findings.json

Prints one line per case with each finding's probability; --output writes them all as JSON."""


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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    from .segment import add_budget_argument

    add_budget_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.cases import ChannelSpec, discover_cases
    from ..inference.classify import classify_case, finding_names
    from ..inference.model_source import resolve_model
    from ..io.atomic import atomic_path
    from ..io.outputs import check_output_file
    from .segment import check_frame_budget

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.output is not None:  # before the model is loaded or any scan read
        check_output_file(args.output, args.inputs, overwrite=args.overwrite)
    model = resolve_model(args.model)
    finding_names(model)  # refuse a segmentation model before reading any scan
    channels = [ChannelSpec(c.name, tuple(c.patterns)) for c in model.card.channels]
    cases = discover_cases(args.inputs, channels)
    if args.output is not None:
        check_output_file(args.output, [p for case in cases for p in case.paths], overwrite=args.overwrite)
    spacing = model.card.preprocessing.get("spacing") or (1.0, 1.0, 1.0)
    results, failed = {}, 0
    for case in cases:
        try:
            check_frame_budget(case.paths, spacing)
            result = classify_case(case.paths, model, args.device, args.msp_fallback)
        except InputError as error:
            if len(cases) == 1:
                raise
            print(f"{case.case_id}: error: {error}", file=sys.stderr)
            failed += 1
            continue
        results[case.case_id] = result
        text = ", ".join(f"{k} {v:.3f}" for k, v in result["probabilities"].items())
        print(f"{case.case_id}: {text}")
    if args.output is not None:
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0
