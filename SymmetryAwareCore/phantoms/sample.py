"""The bundled sample case: one glioma patient, four MRI channels, 2 mm, with its truth.

It lives in ``SymmetryAwareCore/data/sample`` and is rebuilt, identically, by
``python -m SymmetryAwareCore.phantoms.make_sample``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

__all__ = ["SAMPLE_DIR", "SAMPLE_NAME", "SAMPLE_ARGS", "sample_case_paths"]

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"
SAMPLE_NAME = "sample_glioma"
# Everything make_subject needs to rebuild the sample.
SAMPLE_ARGS = {"seed": 2024, "kind": "glioma", "modality": "mri", "spacing": 2.0, "scenario": "unilateral"}
_CHANNELS = ("t1", "t1ce", "t2", "flair")


def sample_case_paths() -> Dict[str, Path]:
    """Channel name (t1, t1ce, t2, flair) -> NIfTI path, plus ``"label"`` and ``"case_json"``."""
    paths = {c: SAMPLE_DIR / f"{SAMPLE_NAME}_{c}.nii.gz" for c in _CHANNELS}
    paths["label"] = SAMPLE_DIR / f"{SAMPLE_NAME}_label.nii.gz"
    paths["case_json"] = SAMPLE_DIR / f"{SAMPLE_NAME}.json"
    return paths
