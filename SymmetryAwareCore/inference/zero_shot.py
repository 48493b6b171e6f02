"""Zero-shot asymmetry of a whole scan from a trained symmetry-aware head (SAH).

How a model carries a head (the one definition): its card's ``extra.symmetry_head`` names
the card file (``.json``) of a :class:`~SymmetryAwareCore.models.symmetry_head.SASwinPretrainer`
saved beside it (``save_model``; its SHA-256 is checked on load like any model). The
pretrainer keeps its own encoder: fine-tuning changes the segmentation network's encoder,
and the symmetry embeddings are only meaningful with the encoder they were trained with.
The head must have been trained on the same preprocessing (spacing, normalisation,
alignment) and number of network inputs as the model, because it reads the very arrays
the model reads. A card without ``extra.symmetry_head`` has no zero-shot score (null in
the report, with the reason); a card that names a head that is missing, corrupt or
mismatched is refused in one line.

Score and map (:func:`zero_shot_asymmetry`): the brain box of the prepared case is resized
to the head's ``roi_size`` (as scan-level classifiers see a scan,
:func:`~SymmetryAwareCore.preprocessing.whole_scan_input`), its left-right flip is the
exact counterpart, and the head gives ``(1 - cos(z, z~)) / 2`` in ``[0, 1]`` per bottleneck
token (each token covers ``roi_size / 32`` of the box along each axis) against its mirror
token; the scan's score is the largest token's
(:func:`~SymmetryAwareCore.models.symmetry_head.scan_asymmetry`). The token map is resized back onto the box (trilinear) and set on
the frame, 0 outside the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from ..contract import SYMMETRY_HEAD_ARCHITECTURE
from ..errors import InputError
from ..preprocessing import PreparedCase, Preprocessing, whole_scan_input

__all__ = ["SYMMETRY_HEAD_KEY", "HEAD_ARCHITECTURE", "SymmetryHead", "ZeroShot", "load_symmetry_head",
           "zero_shot_asymmetry", "zero_shot_for_model"]

SYMMETRY_HEAD_KEY = "symmetry_head"
"""Key in a model card's ``extra``: the file name of its pretrainer card, beside the card."""

HEAD_ARCHITECTURE = SYMMETRY_HEAD_ARCHITECTURE

MEASURED_APART_KEY = "zero_shot_by_bias_correction"
"""Key in a head card's ``metrics``: its zero-shot figures on scans prepared with another
bias-field correction than its training scans, by that correction (``{"n4": {...}}``)."""

DEFINITION = ("(1 - cos(z, z~)) / 2 of the symmetry head's token embeddings of each region of the brain box "
              "(resized to the head's roi_size) and of its mirror region; the scan's score is the largest "
              "region's; 0 = symmetric, 1 = opposite")


@dataclass
class SymmetryHead:
    """A loaded pretrainer used for zero-shot scores.

    Attributes:
        network: the :class:`SASwinPretrainer` (eval mode).
        roi_size: ``(X, Y, Z)`` its input size (its card's ``preprocessing.roi_size``).
        describe: name, file and SHA-256 for the report.
        bias_correction: what its training scans were prepared with (``"n4"`` or
            ``"none"``, its card's): a scan prepared otherwise is outside what its figures
            cover, unless ``measured_apart`` names that preparation.
        measured_apart: the other bias corrections its zero-shot figures were measured on
            (its card's ``metrics.zero_shot_by_bias_correction`` keys).
    """

    network: torch.nn.Module
    roi_size: Tuple[int, int, int]
    describe: dict
    bias_correction: str = "none"
    measured_apart: Tuple[str, ...] = ()

    def describe_for(self, scan_bias_correction: Optional[str]) -> dict:
        """``describe`` for the report of one scan, with a note when the scan was prepared
        with another bias-field correction than the head's training scans: where the head's
        figures on such scans are (its card), or that none were measured."""
        scan = scan_bias_correction or "none"
        if scan == self.bias_correction:
            return dict(self.describe)
        if scan in self.measured_apart:
            return {**self.describe, "note": f"the head was trained on scans prepared with bias correction "
                    f"{self.bias_correction}, this scan with {scan}: its separation on such scans is its card's "
                    f"metrics.{MEASURED_APART_KEY}.{scan} (docs/models.md)"}
        return {**self.describe, "note": f"the head was trained on scans prepared with bias correction "
                f"{self.bias_correction}, this scan with {scan}: its measured separation (docs/models.md) does not cover it"}


@dataclass
class ZeroShot:
    """One case's zero-shot result: ``score`` in [0, 1]; ``frame_map`` ``(W, H, D)`` float32
    on the symmetric frame (axis 0 left -> right), 0 outside the head."""

    score: float
    frame_map: np.ndarray


def load_symmetry_head(card, card_path: Optional[Union[str, Path]], spec: Preprocessing,
                       network_inputs: int) -> Tuple[Optional[SymmetryHead], Optional[str]]:
    """The head a model card names, or ``(None, reason)`` when it names none.

    Args:
        card: the model's :class:`~SymmetryAwareCore.models.model_card.ModelCard`.
        card_path: where that card lies (the head's card is looked for beside it).
        spec: the model's preprocessing (the head must match it).
        network_inputs: the model's network input channels.
    Raises:
        InputError: the card names a head that cannot be used.
    """
    from ..models.model_card import load_model, read_card

    name = (card.extra or {}).get(SYMMETRY_HEAD_KEY)
    if name is None:
        return None, f"the model card names no symmetry head (extra.{SYMMETRY_HEAD_KEY})"
    where = f"model card extra.{SYMMETRY_HEAD_KEY}"
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".json"):
        raise InputError(f"{where} must be the file name of a pretrainer card (.json) beside the card, got {name!r}")
    if card_path is None or not Path(card_path).is_file():
        raise InputError(f"{where} names {name}, but the model was not loaded from a card file to look beside")
    path = Path(card_path).parent / name
    if not path.is_file():
        raise InputError(f"symmetry head card named by {where} not found", path)
    head_card = read_card(path)
    if head_card.architecture != HEAD_ARCHITECTURE:
        raise InputError(f"the symmetry head must be a {HEAD_ARCHITECTURE}, this card holds {head_card.architecture}", path)
    head_spec = Preprocessing.from_card(head_card.preprocessing, source=str(path))
    for field in ("spacing", "normalisation", "alignment"):
        if getattr(head_spec, field) != getattr(spec, field):
            raise InputError(f"the symmetry head was pretrained with preprocessing.{field} "
                             f"{getattr(head_spec, field)}, the model uses {getattr(spec, field)}", path)
    network, head_card = load_model(path)
    if int(getattr(network, "in_channels", -1)) != int(network_inputs):
        raise InputError(f"the symmetry head takes {network.in_channels} inputs, the model {network_inputs}", path)
    describe = {"name": head_card.name, "card": name, "sha256": head_card.sha256 or None}
    apart = (head_card.metrics or {}).get(MEASURED_APART_KEY) or {}
    measured_apart = tuple(sorted(k for k in apart if isinstance(k, str) and k != head_spec.bias_correction))
    return SymmetryHead(network, tuple(head_spec.roi_size), describe, head_spec.bias_correction, measured_apart), None


@torch.no_grad()
def zero_shot_asymmetry(cropped: np.ndarray, head: SymmetryHead, device: Union[str, torch.device] = "cpu"
                        ) -> Tuple[float, np.ndarray]:
    """Score and map of one brain box.

    Args:
        cropped: ``(C, w, h, d)`` the prepared network input inside the brain box, axis 1
            left -> right with the box symmetric about the mid-sagittal plane.
        head: from :func:`load_symmetry_head`.
    Returns:
        ``(score in [0, 1], map (w, h, d) float32 in [0, 1])``.
    """
    network = head.network.to(device)
    x = whole_scan_input(cropped, head.roi_size)[None].to(device)
    # The box is symmetric about the plane, so its flip is the exact counterpart.
    score, token_map = network.asymmetry(x, torch.flip(x, dims=(2,)))
    box_map = torch.nn.functional.interpolate(token_map[:, None].float(), size=tuple(cropped.shape[1:]),
                                              mode="trilinear", align_corners=False)[0, 0]
    return float(score[0].clamp(0.0, 1.0)), box_map.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)


def zero_shot_for_model(prepared: PreparedCase, head: SymmetryHead, device: Union[str, torch.device] = "cpu") -> ZeroShot:
    """:func:`zero_shot_asymmetry` of a prepared case, the map set on the whole frame."""
    score, box_map = zero_shot_asymmetry(prepared.cropped, head, device)
    return ZeroShot(score, prepared.frame_map(box_map))
