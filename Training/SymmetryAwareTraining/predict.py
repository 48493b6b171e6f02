"""Segment whole cases with a trained model, mirror-paired.

Used by ``symmetryaware-train evaluate --model``: every evaluation case goes through
:func:`SymmetryAwareCore.inference.sliding_window.mirror_paired_sliding_window` (each window
paired with ITS counterpart from the whole volume), then sigmoid > 0.5 per region.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn as nn


__all__ = ["predict_regions", "regions_to_labels"]


@torch.no_grad()
def predict_regions(model: nn.Module, volume: np.ndarray, roi_size: Sequence[int], overlap: float = 0.5,
                    device: Union[str, torch.device] = "cpu") -> np.ndarray:
    """``(R, X, Y, Z)`` bool regions of a normalised ``(C, X, Y, Z)`` RAS volume (X left-right)."""
    from SymmetryAwareCore.inference.engine import fused_window_attention
    from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window

    with fused_window_attention(model):
        result = mirror_paired_sliding_window(volume, model, roi_size, overlap=overlap, device=device)
    return (torch.sigmoid(result.logits) > 0.5).numpy()


def regions_to_labels(regions: np.ndarray, enhancing_label: int = 4) -> np.ndarray:
    """``(3, X, Y, Z)`` TC, WT, ET -> BraTS labels (oedema 2, necrosis 1, ET ``enhancing_label``).

    Nesting is imposed (ET inside TC inside WT), as the regions are defined.
    """
    labels = np.zeros(regions.shape[1:], dtype=np.uint8)
    labels[regions[1]] = 2
    labels[regions[0]] = 1
    labels[regions[2]] = enhancing_label
    return labels
