"""From network outputs to labels, as the model card's ``postprocessing`` says.

Two output kinds exist:

- ``{"activation": "softmax"}``: channel 0 is background, channel ``k`` is the card's
  ``k``-th label (in the card's order); the label map is the argmax.
- ``{"activation": "sigmoid", "regions": {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]},
  "threshold": 0.5}``: one channel per region, in that order, as BraTS models are
  trained. Regions must nest (each one inside the next larger); a voxel takes the label
  of the smallest active region that is not in any smaller region (WT-only -> 2,
  TC-only -> 1, ET -> 4).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from .hemispheric import foreground_probability

__all__ = ["labels_from_logits", "check_threshold", "effective_threshold", "probabilities_from_logits", "labels_from_probabilities", "foreground_from_logits",
           "region_label_order", "outside_probabilities"]


def _post(card) -> dict:
    return dict(getattr(card, "postprocessing", None) or {"activation": "softmax"})


def region_label_order(regions: Dict[str, Sequence[int]]) -> List[tuple]:
    """``[(channel index, label value)]`` from the largest region to the smallest.

    Each region must add exactly one label to the regions nested inside it.
    """
    items = [(i, name, set(int(v) for v in values)) for i, (name, values) in enumerate(regions.items())]
    items.sort(key=lambda t: -len(t[2]))
    order = []
    for pos, (index, name, values) in enumerate(items):
        inner = set().union(*[v for _, _, v in items[pos + 1 :]]) if pos + 1 < len(items) else set()
        if not inner <= values:
            raise InputError(f"model card regions do not nest: {name} does not contain the smaller regions")
        own = values - inner
        if len(own) != 1:
            raise InputError(f"model card region {name} must add exactly one label to the regions inside it, adds {sorted(own)}")
        order.append((index, own.pop()))
    return order


def probabilities_from_logits(logits, card) -> np.ndarray:
    """``(out, X, Y, Z)`` logits -> float32 probabilities as the card's activation says
    (softmax over channels, or a sigmoid per region channel)."""
    post = _post(card)
    t = torch.as_tensor(logits).float()
    if post["activation"] == "softmax":
        if t.shape[0] != len(card.labels) + 1:
            raise InputError(f"the network gives {t.shape[0]} channels, the card names {len(card.labels)} labels + background")
        return torch.softmax(t, 0).numpy()
    if post["activation"] == "sigmoid":
        if t.shape[0] != len(post["regions"]):
            raise InputError(f"the network gives {t.shape[0]} channels, the card names {len(post['regions'])} regions")
        return torch.sigmoid(t).numpy()
    raise InputError(f"unknown activation {post['activation']!r} in the model card")


def outside_probabilities(card) -> np.ndarray:
    """``(out,)`` the probabilities of a voxel the network never saw: background."""
    post = _post(card)
    if post["activation"] == "softmax":
        return np.array([1.0] + [0.0] * len(card.labels), np.float32)
    return np.zeros(len(post["regions"]), np.float32)


def check_threshold(card, threshold: Optional[float]) -> None:
    """Refuse a threshold for a softmax card (its labels are an argmax) or outside (0, 1)."""
    if threshold is None:
        return
    if _post(card)["activation"] != "sigmoid":
        raise InputError(f"--threshold applies only to a region (sigmoid) model; {getattr(card, 'name', '') or 'this model'}'s "
                         "labels are an argmax over classes")
    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"--threshold must lie in (0, 1), got {threshold}")


def effective_threshold(card, threshold: Optional[float] = None) -> Optional[float]:
    """The probability at which a region card's labels are decided (``threshold`` or the
    card's own); None for a softmax card (argmax)."""
    post = _post(card)
    if post["activation"] != "sigmoid":
        return None
    return float(post.get("threshold", 0.5) if threshold is None else threshold)


def labels_from_probabilities(probabilities: np.ndarray, card, threshold: Optional[float] = None) -> np.ndarray:
    """``(out, X, Y, Z)`` probabilities (any grid) -> ``(X, Y, Z)`` uint8 label values of the card.

    Applied on the input's own grid after the probabilities were resampled there (linear),
    so label borders are decided at the input's resolution, not the model's. ``threshold``
    replaces a region (sigmoid) card's own, for operating-point sweeps; a softmax card
    (argmax, no threshold) refuses it.
    """
    post = _post(card)
    p = np.asarray(probabilities)
    check_threshold(card, threshold)
    if post["activation"] == "softmax":
        values = np.array([0] + [l.value for l in card.labels], dtype=np.uint8)
        return values[np.argmax(p, axis=0)]
    if post["activation"] == "sigmoid":
        threshold = effective_threshold(card, threshold)
        out = np.zeros(p.shape[1:], np.uint8)
        for channel, value in region_label_order(post["regions"]):  # largest first, smaller ones overwrite
            out[p[channel] >= threshold] = value
        return out
    raise InputError(f"unknown activation {post['activation']!r} in the model card")


def labels_from_logits(logits: np.ndarray, card) -> np.ndarray:
    """``(out, X, Y, Z)`` logits -> ``(X, Y, Z)`` uint8 label values of the card (same grid)."""
    return labels_from_probabilities(probabilities_from_logits(logits, card), card)


def foreground_from_logits(logits: np.ndarray, card) -> np.ndarray:
    """``(X, Y, Z)`` probability of any lesion label, in ``[0, 1]``."""
    return foreground_probability(logits, _post(card)["activation"])
