"""``symmetryaware phantom``: write a dataset of brain phantoms with known truth.

Example::

    symmetryaware phantom --output-dir phantoms/ --cases 20 --seed 0 --kind glioma --modality mri
    symmetryaware phantom --output-dir ct/ --cases 40 --kind haemorrhage --modality ct --spacing 3 \
        --healthy-fraction 0.5 --bleed-radius-mm 3,15 --bleed-hu 44,75     # small to large, subtle to obvious
"""

from __future__ import annotations

import argparse

from ..phantoms.dataset import DATASET_KINDS, write_dataset

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "phantom",
        help="write brain phantoms (lesions, poses, true mid-sagittal planes) as a dataset",
        description="Generate phantom subjects on MNI152 anatomy with known lesion labels, head pose "
        "and true mid-sagittal plane; write one NIfTI per channel, a label NIfTI, a case JSON and a "
        "MONAI-style datalist.json with relative paths.",
    )
    parser.add_argument("--output-dir", required=True, help="folder to write into (must be empty unless --overwrite)")
    parser.add_argument("--cases", type=int, required=True, help="number of subjects")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0); each case derives its own")
    parser.add_argument("--kind", choices=DATASET_KINDS, default="mixed", help="lesion kind (default mixed)")
    parser.add_argument("--modality", choices=("mri", "ct"), default="mri", help="mri: t1, t1ce, t2, flair; ct: HU")
    parser.add_argument("--spacing", type=float, default=2.0, help="isotropic voxel size in mm (default 2)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds; 0 = training/validation split")
    parser.add_argument("--healthy-fraction", type=float, default=0.2, help="share of healthy subjects (default 0.2)")
    parser.add_argument("--et-label", type=int, choices=(3, 4), default=4, help="enhancing tumour label: 4 (BraTS 2021) or 3 (2023)")
    parser.add_argument("--prefix", default="case", help="case names <prefix>_0000... (default case); give "
                        "datasets used together different prefixes")
    parser.add_argument("--bleed-radius-mm", type=_pair, metavar="LOW,HIGH",
                        help="CT: radius range of each haemorrhage in mm, drawn uniformly (default 6,15)")
    parser.add_argument("--bleed-hu", type=_pair, metavar="LOW,HIGH",
                        help="CT: density range of each haemorrhage in HU (default 58,72; grey matter is ~38 HU, "
                        "so 40,50 gives subtle bleeds)")
    parser.add_argument("--lesion-contrast", type=float, default=1.0,
                        help="share of the lesion-minus-tissue contrast kept, 0.05-1 (default 1); labels unchanged")
    parser.add_argument("--variation", type=float, default=1.0,
                        help="strength of healthy anatomical and intensity variation (warp, head size, bias "
                        "field, tissue values), 0-3 (default 1)")
    parser.add_argument("--patient-asymmetry", type=float, default=0.0,
                        help="probability that a patient also has natural asymmetry (default 0: only healthy "
                        "subjects have it, so asymmetry signals health; 0.5 matches the healthy share)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    parser.set_defaults(func=run)
    return parser


def _pair(text: str):
    """``"LOW,HIGH"`` -> two floats (ranges are checked by the generator)."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LOW,HIGH, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..io.outputs import check_output_dir

    check_output_dir(args.output_dir)  # before the first phantom is made
    path = write_dataset(
        args.output_dir,
        args.cases,
        seed=args.seed,
        kind=args.kind,
        modality=args.modality,
        spacing=args.spacing,
        folds=args.folds,
        overwrite=args.overwrite,
        healthy_fraction=args.healthy_fraction,
        et_label=args.et_label,
        prefix=args.prefix,
        bleed_radius_mm=args.bleed_radius_mm,
        bleed_hu=args.bleed_hu,
        lesion_contrast=args.lesion_contrast,
        variation=args.variation,
        patient_asymmetry=args.patient_asymmetry,
    )
    print(path)
    return 0
