"""``symmetryaware attention``: hemispheric attention and asymmetry maps, for researchers.

The same pipeline as ``segment`` (alignment, mirror-paired windows, mapping back), writing
only the maps, the plane and the report. The model must have SACA: its attention weights
are what the hemispheric attention map is made of.
"""

from __future__ import annotations

import argparse

from ..errors import InputError
from . import segment

EXAMPLE = """examples:
  symmetryaware attention --sample --output-dir maps
  symmetryaware attention case_t1.nii.gz case_t1ce.nii.gz case_t2.nii.gz case_flair.nii.gz -o maps
  symmetryaware attention --sample -o maps --attention-from=-40,-10,20

Per case, <output-dir>/<case_id>/ receives attention.nii.gz (mirror focus: how much of each
region's SACA attention, at the model's finest SACA stage, falls on and around its mirror
position, 0..1, 0 outside the head), asymmetry.nii.gz (p(x) - p(mirror x)), msp.mrk.json
and report.json (mirror focus in the lesion against its contralateral mirror), on the first
input's grid; with --attention-from R,A,S also attention_from.nii.gz (where that point
attends in the other hemisphere, per mL). See docs/attention.md."""

OUTPUTS = ("attention", "attention_from", "asymmetry", "plane")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "attention",
        help="hemispheric attention and asymmetry maps (no segmentation files)",
        description="Write the hemispheric attention map (from SACA's attention weights), the signed "
        "asymmetry map and the mid-sagittal plane of each case, on the input's own grid.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    segment.add_run_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.model_source import resolve_model
    from ..io.outputs import check_output_dir

    check_output_dir(args.output_dir, args.inputs)  # before the model is loaded
    model = resolve_model(args.model)
    if not getattr(model.network, "use_saca", False):
        raise InputError(f"model {args.model!r} has no symmetry-aware cross-attention, so no attention map")
    return segment.run(args, outputs=OUTPUTS, model=model)
