"""The preprocessing a model was trained with, as its model card records it (torch-free).

One definition, read from the card's ``preprocessing`` block, drives every path that
prepares a scan for a network: ``segment``, ``attention``, ``classify``, training datasets
and ``evaluate`` (the way nnU-Net's plans file drives both its preprocessing and its
inference). A card that lacks something preprocessing needs is refused with one line.

The block (JSON)::

    {"spacing": [3.0, 3.0, 3.0],          # mm of the symmetric frame (LR, AP, IS); required
     "roi_size": [64, 64, 64],           # network window; required
     "normalisation": "zscore-nonzero",  # or "ct-windows" or "none"; required
     "ct_windows": [[0, 80], [-20, 180], [-800, 2000]],   # HU, one channel each (CT)
     "alignment": "msp",                 # "msp" (default) or "none" (an ablation)
     "anti_alias": true,                 # Gaussian pre-filter when downsampling
     "bias_correction": "n4"}            # MRI: N4 on each channel first; "none" (default)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..contract import card_bias_correction
from ..errors import InputError

__all__ = ["Preprocessing", "NORMALISATIONS", "ALIGNMENTS", "BIAS_CORRECTIONS", "DEFAULT_CT_WINDOWS", "AIR_HU"]

NORMALISATIONS = ("zscore-nonzero", "ct-windows", "none")
ALIGNMENTS = ("msp", "none")
BIAS_CORRECTIONS = ("none", "n4")

# Brain (W80 L40), subdural / blood (W200 L80) and bone (W2800 L600) windows: blood and
# brain differ by ~30 HU, which only a narrow window resolves, while fractures need bone.
DEFAULT_CT_WINDOWS: Tuple[Tuple[float, float], ...] = ((0.0, 80.0), (-20.0, 180.0), (-800.0, 2000.0))

# What fills the frame outside a CT scan's field of view: air. 0 HU would read as brain.
AIR_HU = -1024.0

# Plausible ranges, checked so that a card with absurd values fails in one line rather than
# deep inside resampling or torch.
_SPACING_RANGE = (0.1, 20.0)
_ROI_RANGE = (16, 512)


def _triple(value: Any, name: str, cast, lo, hi) -> Tuple:
    try:
        items = tuple(cast(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"model card preprocessing.{name} must be three numbers, got {value!r}") from None
    if len(items) != 3 or not all(lo <= v <= hi for v in items):
        raise InputError(f"model card preprocessing.{name} must be three numbers in [{lo}, {hi}], got {value!r}")
    return items


@dataclass(frozen=True)
class Preprocessing:
    """How scans are prepared for one model (see the module docstring for the card block).

    Attributes:
        spacing: voxel size of the symmetric frame in mm ``(LR, AP, IS)``.
        roi_size: the network's window ``(X, Y, Z)`` in frame voxels.
        normalisation: ``"zscore-nonzero"`` (MRI, skull-stripped: z-score over each channel's
            head voxels, background stays 0), ``"ct-windows"`` (each HU window clipped and
            scaled to [0, 1], one network channel per window and input channel) or
            ``"none"``.
        ct_windows: the HU windows of ``"ct-windows"``.
        alignment: ``"msp"`` (the scan is resampled into its symmetric frame) or ``"none"``
            (only reoriented to RAS and resampled at ``spacing``: mirror pairs are then not
            anatomical; an ablation that has to be asked for).
        anti_alias: Gaussian pre-filter when the frame is coarser than the scan.
        bias_correction: ``"n4"``: each MRI channel's intensity bias field is removed (N4,
            :mod:`.bias`) before anything else, so the plane, the frame and the network see
            the corrected scan; ``"none"``: not. A run may override it
            (``--bias-correction`` / ``--no-bias-correction``). Not for CT.
    """

    spacing: Tuple[float, float, float]
    roi_size: Tuple[int, int, int]
    normalisation: str
    ct_windows: Tuple[Tuple[float, float], ...] = ()
    alignment: str = "msp"
    anti_alias: bool = True
    bias_correction: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", _triple(self.spacing, "spacing", float, *_SPACING_RANGE))
        object.__setattr__(self, "roi_size", _triple(self.roi_size, "roi_size", int, *_ROI_RANGE))
        if self.normalisation not in NORMALISATIONS:
            raise InputError(f"model card preprocessing.normalisation {self.normalisation!r} is not one of {', '.join(NORMALISATIONS)}")
        if self.alignment not in ALIGNMENTS:
            raise InputError(f"model card preprocessing.alignment {self.alignment!r} is not one of {', '.join(ALIGNMENTS)}")
        windows = tuple((float(lo), float(hi)) for lo, hi in (self.ct_windows or ()))
        if self.normalisation == "ct-windows":
            if not windows or any(not hi > lo for lo, hi in windows):
                raise InputError("model card preprocessing.ct_windows must list HU windows [low, high] with high > low")
        elif windows:
            raise InputError("model card preprocessing.ct_windows is only for normalisation 'ct-windows'")
        object.__setattr__(self, "ct_windows", windows)
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise InputError(f"model card preprocessing.bias_correction {self.bias_correction!r} is not one of {', '.join(BIAS_CORRECTIONS)}")
        if self.bias_correction != "none" and self.is_ct:
            raise InputError("model card preprocessing.bias_correction is for MRI; a CT model's Hounsfield units are calibrated")

    @property
    def is_ct(self) -> bool:
        return self.normalisation == "ct-windows"

    @property
    def fill(self) -> float:
        """Value of frame voxels outside the scan, in the scan's own units."""
        return AIR_HU if self.is_ct else 0.0

    def network_channels(self, input_channels: int) -> int:
        """Channels the network sees for ``input_channels`` scans (one per CT window)."""
        return input_channels * (len(self.ct_windows) if self.is_ct else 1)

    @classmethod
    def from_card(cls, block: Optional[Mapping[str, Any]], source: str = "") -> "Preprocessing":
        """Read a card's ``preprocessing`` block; refuse one that lacks what preparation needs."""
        block = dict(block or {})
        missing = [k for k in ("spacing", "roi_size", "normalisation") if k not in block]
        if missing:
            raise InputError(f"model card {source + ' ' if source else ''}lacks preprocessing.{', preprocessing.'.join(missing)}: "
                             "it cannot be prepared as it was trained; re-export it with a full card")
        normalisation = block["normalisation"]
        windows = block.get("ct_windows", ())
        if normalisation == "ct-window":
            # Cards written before windows were configurable: one fixed window.
            normalisation, windows = "ct-windows", ((-100.0, 200.0),)
        alignment = block.get("alignment", "msp")
        if "align_to_msp" in block and "alignment" not in block:  # training cards before 0.3
            alignment = "msp" if block["align_to_msp"] else "none"
        if isinstance(alignment, str) and alignment.startswith("mid-sagittal"):  # bundled cards before 0.3
            alignment = "msp"
        spacing = block["spacing"]
        if isinstance(spacing, (int, float)):
            spacing = [spacing] * 3
        return cls(spacing=spacing, roi_size=block["roi_size"], normalisation=normalisation, ct_windows=windows,
                   alignment=alignment, anti_alias=bool(block.get("anti_alias", True)),
                   bias_correction=card_bias_correction({"preprocessing": block}))

    def to_card(self) -> Dict[str, Any]:
        """The card's ``preprocessing`` block (JSON-ready)."""
        out: Dict[str, Any] = {
            "spacing": list(self.spacing),
            "roi_size": list(self.roi_size),
            "normalisation": self.normalisation,
            "alignment": self.alignment,
            "anti_alias": self.anti_alias,
        }
        if self.ct_windows:
            out["ct_windows"] = [list(w) for w in self.ct_windows]
        if self.bias_correction != "none":
            # Written only when asked for: cards (and preparation caches keyed by this
            # block) from before the field existed stay what they were.
            out["bias_correction"] = self.bias_correction
        return out

    def replace(self, **changes: Any) -> "Preprocessing":
        values = {**self.__dict__, **changes}
        return Preprocessing(**values)


def windows_or_default(windows: Optional[Sequence[Sequence[float]]]) -> Tuple[Tuple[float, float], ...]:
    """``windows`` as tuples, or :data:`DEFAULT_CT_WINDOWS` when none are given."""
    return tuple((float(a), float(b)) for a, b in windows) if windows else DEFAULT_CT_WINDOWS
