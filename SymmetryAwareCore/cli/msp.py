"""``symmetryaware msp``: find a scan's mid-sagittal plane; export it and the aligned scan.

Example::

    symmetryaware msp head.nii.gz --report msp.json --markups msp.mrk.json \\
        --aligned head_aligned.nii.gz --spacing 1 1 1
    symmetryaware msp case_t1.nii.gz case_t1ce.nii.gz case_t2.nii.gz case_flair.nii.gz --report msp.json

Several files are the channels of one case: the plane is the one ``segment`` uses, fitted on
the first and, only when that fit is not confident, on the next ones in order
(:func:`~SymmetryAwareCore.geometry.msp.estimate_msp`). ``segment`` with a model whose card
asks for N4 (the default glioma model) fits it after bias-field correction: ``--bias-correction``
does the same here.

Everything is computed before anything is written, and each file is written atomically,
so a failure leaves no partial output. A plane that is not confident is still written,
flagged ``"confident": false`` in the report (with the score, the rule and the reason under
``plane.confidence``), with a warning on stderr; so is an image that is not a head
(``plane.head``), unless ``--require-head`` refuses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..geometry.markups import write_plane_markups
from ..geometry.msp import estimate_msp
from ..geometry.symmetric_frame import align_to_msp
from ..io.atomic import atomic_path
from ..io.case import load_case
from ..io.outputs import check_distinct_outputs, check_output_file
from ..io.readers import read_image, read_labelmap
from ..io.validate import MAX_SPACING_MM, MIN_SPACING_MM, check_resampled_budget
from ..io.writers import write_nifti

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "msp",
        help="estimate the mid-sagittal plane; write it as JSON / Slicer markups and the aligned scan",
        description="Estimate the mid-sagittal plane of a head scan (MRI of any contrast or CT) by "
        "registering it to its own left-right mirror. Writes the plane (RAS normal and point, symmetry "
        "score, confidence) as JSON, as a Slicer markups plane, and optionally the scan resampled into "
        "its symmetric frame (the plane at the centre of axis 0).",
    )
    parser.add_argument("input", nargs="+", help="head scan: NIfTI, NRRD, MetaImage or a DICOM folder; several: the "
                        "channels of one case (e.g. t1 t1ce t2 flair), resampled onto the first's grid if they differ; "
                        "the plane is fitted on the first and, when that fit is not confident, on the next ones, as "
                        "`segment` does")
    parser.add_argument("--mask", help="optional head/brain mask on the scan's grid (non-zero = head)")
    parser.add_argument("--bias-correction", action="store_true",
                        help="MRI: remove each channel's bias field (N4) first, as `segment` does for a model whose "
                        "card asks for it (the default glioma model); the aligned scan is then the corrected one")
    parser.add_argument(
        "--on-failure",
        choices=("error", "axes"),
        default="error",
        help="when no plane can be estimated (no head, degenerate mask): refuse (default), or use the "
        "image axes through the head's centre of mass, flagged not confident",
    )
    parser.add_argument(
        "--require-head",
        action="store_true",
        help="refuse an image that does not show a head (a chest, an abdomen); by default it is only warned about",
    )
    parser.add_argument("--report", help="JSON report to write (plane, score, confidence, frame)")
    parser.add_argument("--markups", help="Slicer markups plane file to write (.mrk.json)")
    parser.add_argument("--markups-coordinates", choices=("LPS", "RAS"), default="LPS", help="coordinate system of the markups file (default LPS, as Slicer writes)")
    parser.add_argument("--aligned", help="write the scan resampled into its symmetric frame (NIfTI)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("LR", "AP", "IS"), help="voxel size of the aligned scan in mm (default 1 1 1)")
    from .segment import add_budget_argument

    add_budget_argument(parser)
    parser.set_defaults(func=run)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output location, before the scan is read (see :mod:`SymmetryAwareCore.io.outputs`)."""
    inputs = [*args.input, args.mask]
    if args.report:
        check_output_file(args.report, inputs)
    if args.markups:
        check_output_file(args.markups, inputs)
    if args.aligned:
        check_output_file(args.aligned, inputs, suffixes=(".nii", ".nii.gz"))
        if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in args.spacing):
            raise InputError(f"--spacing must lie in [{MIN_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm, got {list(args.spacing)}")
    check_distinct_outputs([args.report, args.markups, args.aligned])


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    if len(args.input) == 1:
        image = read_image(args.input[0], allow_channels=True)
    else:
        if len({str(Path(p).resolve()) for p in args.input}) != len(args.input):
            raise InputError(f"a file is given twice: {' '.join(args.input)}")
        names = [Path(p).name for p in args.input]
        image = load_case(args.input, names if len(set(names)) == len(names) else [str(p) for p in args.input])
    if args.aligned:  # the aligned grid covers the scan's field of view at --spacing
        voxel_mm3 = abs(float(np.linalg.det(image.affine[:3, :3])))
        check_resampled_budget(image.spatial_shape, voxel_mm3, args.spacing, "the aligned scan", args.input[0])
    mask = read_labelmap(args.mask).array if args.mask else None
    if mask is not None and mask.shape != image.spatial_shape:
        raise InputError(f"the mask has shape {mask.shape} but the scan has {image.spatial_shape}", args.mask)
    if args.bias_correction:
        from ..preprocessing.bias import n4_correct

        image = n4_correct(image)
    plane = estimate_msp(image, mask=mask, on_failure=args.on_failure, on_not_head="error" if args.require_head else "warn")
    aligned = frame = None
    if args.aligned:
        aligned, frame = align_to_msp(image, plane, spacing=args.spacing)

    report = {
        "input": str(args.input[0]),
        "inputs": [str(p) for p in args.input],
        "version": __version__,
        "plane": plane.to_dict(),
        "bias_correction": "n4" if args.bias_correction else None,
        "frame": frame.to_dict() if frame is not None else None,
    }
    if args.report:
        with atomic_path(Path(args.report)) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    if args.markups:
        write_plane_markups(plane, args.markups, coordinate_system=args.markups_coordinates)
    if aligned is not None:
        write_nifti(aligned, args.aligned)

    n, p = plane.normal, plane.point
    print(
        f"normal (RAS) {n[0]:.4f} {n[1]:.4f} {n[2]:.4f}  point {p[0]:.2f} {p[1]:.2f} {p[2]:.2f} mm  "
        f"tilt {plane.tilt_deg:.2f} deg  score {plane.symmetry_score:.3f}  method {plane.method}"
    )
    for warning in plane.warnings:
        print(f"symmetryaware msp: warning: {warning}", file=sys.stderr)
    if not plane.confident:
        print(f"symmetryaware msp: warning: low confidence: {plane.message}", file=sys.stderr)
    return 0
