"""Write phantom datasets: images, labels, case JSONs and a MONAI-style datalist.

Layout of a dataset folder::

    datalist.json                  # paths relative to this file
    case_0000_t1.nii.gz ...        # one NIfTI per channel (t1, t1ce, t2, flair | ct), int16
    case_0000_label.nii.gz         # uint8 lesion labels
    case_0000.json                 # the truth (seed, scenario, pose, true plane, lesions)

Each case has its own seed derived from the dataset seed and the case index, recorded in
its JSON, so ``make_subject(case["seed"], ...)`` rebuilds any one case alone.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.writers import write_nifti
from .generator import LESION_CONTRAST_RANGE, MODALITIES, VARIATION_RANGE, Phantom, label_names, make_subject
from .lesions import bleed_ranges

__all__ = ["DATASET_KINDS", "case_seed", "plan_cases", "write_case", "write_dataset", "write_json"]

DATASET_KINDS = ("glioma", "haemorrhage", "wml", "mixed")
_PATIENT_KINDS = {"mri": ("glioma", "wml"), "ct": ("haemorrhage",)}
# Image-level flags of the datalist, one per finding or hard case.
FLAGS = ("glioma", "haemorrhage", "wml", "bilateral", "midline", "asymmetric")


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset made with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def plan_cases(cases: int, seed: int, kind: str, modality: str, healthy_fraction: float) -> List[dict]:
    """Per case: seed, kind (``healthy`` or a finding) - before anything is generated."""
    rng = np.random.default_rng([int(seed), 2**31 - 1])
    plan = []
    for index in range(cases):
        if rng.uniform() < healthy_fraction:
            case_kind = "healthy"
        elif kind == "mixed":
            case_kind = str(rng.choice(_PATIENT_KINDS[modality]))
        else:
            case_kind = kind
        plan.append({"index": index, "seed": case_seed(seed, index), "kind": case_kind})
    return plan


def write_json(data: dict, path: Union[str, Path]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_case(phantom: Phantom, folder: Union[str, Path], name: str) -> Dict[str, Path]:
    """Write one phantom as ``<name>_<channel>.nii.gz``, ``<name>_label.nii.gz``, ``<name>.json``.

    Returns channel name -> path, plus ``"label"`` and ``"case_json"``.
    """
    folder = Path(folder)
    paths: Dict[str, Path] = {}
    for index, channel in enumerate(phantom.image.channel_names):
        paths[channel] = write_nifti(phantom.image.channel(index), folder / f"{name}_{channel}.nii.gz", dtype=np.int16)
    paths["label"] = write_nifti(phantom.label, folder / f"{name}_label.nii.gz", dtype=np.uint8)
    paths["case_json"] = write_json(dict(phantom.info, name=name), folder / f"{name}.json")
    return paths


def _validate(output_dir: Path, cases, seed, kind, modality, spacing, folds, overwrite, healthy_fraction,
              bleed_radius_mm=None, bleed_hu=None):
    if not isinstance(cases, int) or cases < 1:
        raise InputError(f"--cases must be a positive integer, got {cases}")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}")
    if kind not in DATASET_KINDS:
        raise InputError(f"unknown --kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")
    if modality not in MODALITIES:
        raise InputError(f"unknown --modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    if kind != "mixed" and kind not in _PATIENT_KINDS[modality]:
        raise InputError(f"--kind {kind} needs --modality {'mri' if kind != 'haemorrhage' else 'ct'}")
    if not (0.5 <= spacing <= 6.0):
        raise InputError(f"--spacing must be between 0.5 and 6 mm, got {spacing}")
    if folds != 0 and not (2 <= folds <= cases):
        raise InputError(f"--folds must be 0 (train/validation split) or between 2 and --cases ({cases}), got {folds}")
    if not (0.0 <= healthy_fraction <= 1.0):
        raise InputError(f"--healthy-fraction must be within 0-1, got {healthy_fraction}")
    if (bleed_radius_mm is not None or bleed_hu is not None) and modality != "ct":
        raise InputError("--bleed-radius-mm and --bleed-hu shape CT haemorrhages: they need --modality ct")
    bleed_ranges(bleed_radius_mm, bleed_hu)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError("is not a folder", output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise InputError("folder is not empty; use --overwrite to write into it anyway", output_dir)


def _check_difficulty(lesion_contrast, variation) -> None:
    # The generator's own ranges, checked before the first case is written.
    for flag, value, (lo, hi) in (("--lesion-contrast", lesion_contrast, LESION_CONTRAST_RANGE),
                                  ("--variation", variation, VARIATION_RANGE)):
        if not (lo <= float(value) <= hi):
            raise InputError(f"{flag} must be within {lo}-{hi}, got {value}")


def write_dataset(
    output_dir: Union[str, Path],
    cases: int,
    seed: int = 0,
    kind: str = "mixed",
    modality: str = "mri",
    spacing: float = 2.0,
    folds: int = 5,
    *,
    overwrite: bool = False,
    healthy_fraction: float = 0.2,
    et_label: int = 4,
    validation_fraction: float = 0.2,
    prefix: str = "case",
    bleed_radius_mm: Optional[Tuple[float, float]] = None,
    bleed_hu: Optional[Tuple[float, float]] = None,
    progress: Optional[Callable[[str], None]] = None,
    lesion_contrast: float = 1.0,
    variation: float = 1.0,
    patient_asymmetry: float = 0.0,
) -> Path:
    """Generate ``cases`` phantoms into ``output_dir`` and write ``datalist.json``; return its path.

    ``kind="mixed"`` draws among the modality's findings (MRI: glioma, WML; CT:
    haemorrhage); any kind mixes in healthy subjects at ``healthy_fraction`` (image-level
    labels for symmetry pretraining). ``folds >= 2`` puts every case in ``"training"``
    with a ``"fold"``; ``folds=0`` splits into ``"training"`` and ``"validation"``.
    Cases are named ``<prefix>_0000``...: give datasets that are used together (a
    pretraining set beside a labelled one) different prefixes, or the leakage check, which
    matches cases by name, sees the same case in both. ``bleed_radius_mm`` / ``bleed_hu``
    (CT only) set the ``(low, high)`` ranges each haemorrhage's radius and density are drawn
    from (see :func:`.generator.make_subject`); the datalist records the ranges used.
    ``lesion_contrast`` and ``variation`` are :func:`~.generator.make_subject`'s difficulty
    controls (1 = default); ``patient_asymmetry`` the probability that a patient also has
    natural asymmetry (default 0: only healthy subjects have it). The ``asymmetric`` flag of
    an entry says whether its subject has natural asymmetry, healthy or not.
    """
    output_dir = Path(output_dir)
    _validate(output_dir, cases, seed, kind, modality, float(spacing), folds, overwrite, healthy_fraction,
              bleed_radius_mm, bleed_hu)
    _check_difficulty(lesion_contrast, variation)
    if not 0.0 <= float(patient_asymmetry) <= 1.0:
        raise InputError(f"--patient-asymmetry must be a probability in [0, 1], got {patient_asymmetry}")
    bleeds = {}
    if modality == "ct":
        radius, hu = bleed_ranges(bleed_radius_mm, bleed_hu)
        bleeds = {"bleed_radius_mm": radius, "bleed_hu": hu}
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", prefix):
        raise InputError(f"--prefix must be letters, digits and '-', got {prefix!r}")
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    output_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_cases(cases, seed, kind, modality, healthy_fraction)
    order = np.random.default_rng([int(seed), 2**31 - 2]).permutation(cases)
    n_validation = max(1, int(round(validation_fraction * cases))) if cases > 1 else 0
    entries: Dict[str, List[dict]] = {"training": [], "validation": []}
    channels: List[str] = []
    for item in plan:
        start = time.perf_counter()
        phantom = make_subject(item["seed"], item["kind"], modality, spacing, et_label=et_label,
                               lesion_contrast=lesion_contrast, variation=variation,
                               patient_asymmetry=patient_asymmetry, **bleeds)
        name = f"{prefix}_{item['index']:04d}"
        paths = write_case(phantom, output_dir, name)
        info = phantom.info
        channels = list(info["channels"])
        rank = int(np.nonzero(order == item["index"])[0][0])
        entry = {
            "name": name,
            "image": [paths[c].name for c in channels],
            "label": paths["label"].name,
            "case_json": paths["case_json"].name,
            "healthy": int(info["status"] == "healthy"),
            "patient": int(info["status"] == "patient"),
        }
        # "asymmetric": natural asymmetry, the healthy scenario's or a patient's (patient_asymmetry).
        natural = info["natural_asymmetry"]["hemisphere_scale"] != 0.0
        for flag in FLAGS:
            entry[flag] = int(natural if flag == "asymmetric" else flag in info["findings"] or info["scenario"] == flag)
        if folds:
            entry["fold"] = rank % folds
            entries["training"].append(entry)
        else:
            entries["validation" if rank < n_validation else "training"].append(entry)
        say(f"phantom {item['index'] + 1}/{cases}: {name} {item['kind']} {info['scenario']} "
            f"({time.perf_counter() - start:.1f} s)")
    datalist = {
        "description": "SymmetryAwareSeg phantoms on MNI152 2009a anatomy; paths are relative to this file",
        "seed": seed,
        "kind": kind,
        "modality": modality,
        "spacing_mm": float(spacing),
        "lesion_contrast": float(lesion_contrast),
        "variation": float(variation),
        "patient_asymmetry": float(patient_asymmetry),
        "channels": channels,
        **{k: list(v) for k, v in bleeds.items()},
        # Label values mean different things per finding (1 is necrotic core in a glioma,
        # the lesion itself in WML); each case JSON names its own.
        "labels": {f: {str(k): v for k, v in label_names(f, et_label).items()}
                   for f in (_PATIENT_KINDS[modality] if kind == "mixed" else (kind,))},
        "num_folds": folds,
        "training": entries["training"],
        "validation": entries["validation"],
    }
    return write_json(datalist, output_dir / "datalist.json")
