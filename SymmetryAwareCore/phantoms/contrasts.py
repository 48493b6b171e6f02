"""Image intensities from tissue fractions: four MRI contrasts and CT in Hounsfield units.

Each voxel's value is the fraction-weighted sum of its compartments' values (partial
volume). MRI values are in arbitrary scanner units (WM about 800 on T1), loosely after
BraTS: enhancement bright on T1ce, oedema and WM lesions bright on T2 and FLAIR, CSF dark
on FLAIR. CT values are HU: bone about +1000, brain 20-45, CSF 0-15, air -1000, fresh
blood 50-80. Each subject jitters the values a little so no two scans match exactly.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

__all__ = ["MRI_CHANNELS", "CT_CHANNELS", "MRI_VALUES", "CT_VALUES", "channels_for", "subject_values", "intensities"]

MRI_CHANNELS: Tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
CT_CHANNELS: Tuple[str, ...] = ("ct",)

MRI_VALUES: Dict[str, Dict[str, float]] = {
    "t1": {"gm": 560, "wm": 800, "csf": 220, "necrosis": 260, "enhancing": 560, "oedema": 470, "wml": 600},
    "t1ce": {"gm": 580, "wm": 810, "csf": 230, "necrosis": 270, "enhancing": 1350, "oedema": 490, "wml": 610},
    "t2": {"gm": 720, "wm": 480, "csf": 1400, "necrosis": 1250, "enhancing": 850, "oedema": 1100, "wml": 1000},
    "flair": {"gm": 620, "wm": 480, "csf": 120, "necrosis": 450, "enhancing": 850, "oedema": 1100, "wml": 1100},
}
CT_VALUES: Dict[str, float] = {
    "gm": 38.0, "wm": 28.0, "csf": 8.0, "oedema": 18.0, "skull": 1000.0, "scalp": 25.0, "air": -1000.0,
}


def channels_for(modality: str) -> Tuple[str, ...]:
    """Channel names, in datalist order, of ``"mri"`` or ``"ct"``."""
    return MRI_CHANNELS if modality == "mri" else CT_CHANNELS


def subject_values(rng: np.random.Generator, modality: str, variation: float = 1.0) -> Dict[str, Dict[str, float]]:
    """Per-subject tissue values ``{channel: {compartment: value}}`` with small jitter.

    MRI: a global gain (0.8-1.2) and +-5 % per tissue. CT: brain tissues +-2 HU, bone
    900-1200 HU; air stays -1000 and blood is set per haemorrhage by the lesion.
    ``variation`` scales the gain's and the jitter's ranges (1 = the values above; the
    same number of draws at any value, so 1 reproduces earlier datasets exactly).
    """
    if modality == "mri":
        gain = rng.uniform(1.0 - 0.2 * variation, 1.0 + 0.2 * variation)
        spread = 0.05 * variation
        return {
            ch: {t: float(v * gain * rng.uniform(1.0 - spread, 1.0 + spread)) for t, v in table.items()}
            for ch, table in MRI_VALUES.items()
        }
    values = dict(CT_VALUES)
    for t in ("gm", "wm", "csf", "oedema"):
        values[t] = float(values[t] + rng.uniform(-2.0 * variation, 2.0 * variation))
    values["skull"] = float(rng.uniform(900.0, 1200.0))
    return {"ct": values}


def intensities(fractions: Dict[str, np.ndarray], values: Dict[str, float], air_value: float = 0.0) -> np.ndarray:
    """``sum_t fractions[t] * values[t]`` plus ``air_value`` for what no compartment fills.

    ``fractions`` maps compartment names to ``(N,)`` arrays; a name absent from ``values``
    (e.g. ``haemorrhage``, whose density is per lesion) must be added by the caller.
    """
    total = None
    filled = None
    for name, frac in fractions.items():
        if name not in values:
            continue
        total = frac * values[name] if total is None else total + frac * values[name]
        filled = frac.copy() if filled is None else filled + frac
    if air_value:
        total = total + np.clip(1.0 - filled, 0.0, 1.0) * air_value
    return total.astype(np.float32)
