"""Scan-level classification (e.g. CT haemorrhage, fracture, midline shift), one probability per finding.

The scan is prepared as the model card says (the one preparation path,
:func:`SymmetryAwareCore.inference.pipeline.prepare_for_model`), and its brain box is
resized to the model's ROI (:func:`SymmetryAwareCore.preprocessing.whole_scan_input`); its
counterpart is then simply its left-right flip (the box is symmetric about the plane, so
the mirror box is the box itself), exactly as the training package feeds classifiers
(``SymmetryAwareTraining.data.WholeScanDataset``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..contract import card_findings
from ..errors import InputError
from ..geometry.mirror import flip_lr
from ..preprocessing import whole_scan_input
from .device import resolve_device
from .engine import fused_window_attention
from .model_source import LoadedModel
from .pipeline import SegmentOptions, model_preprocessing, prepare_for_model

__all__ = ["finding_names", "classify_prepared", "classify_case"]


def finding_names(model: LoadedModel) -> List[str]:
    """The findings a classifier's outputs stand for, in output order, from its card
    (:func:`SymmetryAwareCore.contract.card_findings`); InputError for any other model."""
    card = model.card
    names = list(card_findings(card))
    if not names:
        raise InputError(f"model {card.name or card.architecture} is not a scan-level classifier (its card names no findings)")
    return names


def classify_prepared(cropped: np.ndarray, model: LoadedModel, device: Union[str, torch.device] = "cpu") -> np.ndarray:
    """Finding probabilities ``(F,)`` of one prepared brain box ``(C', w, h, d)`` (axis 1
    left-right, as :attr:`~SymmetryAwareCore.preprocessing.PreparedCase.cropped` or a
    training cache entry): resized to the card's ROI, paired with its left-right flip."""
    names = finding_names(model)
    x = whole_scan_input(cropped, model_preprocessing(model).roi_size)[None].to(device)
    network = model.network.to(device).eval()
    with torch.inference_mode(), fused_window_attention(network):
        logits = network(x, flip_lr(x, spatial_start=2))
    if logits.shape[-1] != len(names):
        raise InputError(f"the network gives {logits.shape[-1]} outputs, the card names {len(names)} findings")
    return torch.sigmoid(logits.float())[0].cpu().numpy()


def classify_case(
    paths: Sequence[Path],
    model: LoadedModel,
    device: str = "auto",
    msp_on_failure: str = "error",
) -> Dict:
    """Probability of each finding for one scan.

    Returns:
        a JSON-ready dict: ``probabilities`` ``{finding: p}``, the plane, model, device and
        runtime per stage.
    """
    names = finding_names(model)
    card = model.card
    started = time.perf_counter()
    times = {}
    prepared = prepare_for_model(paths, model, SegmentOptions(msp_on_failure=msp_on_failure))
    times.update(prepared.times)
    t = time.perf_counter()
    dev = resolve_device(device)
    probabilities = classify_prepared(prepared.cropped, model, dev)
    times["inference"] = time.perf_counter() - t
    notes = list(model.notes) + prepared.notes
    return {
        "inputs": [str(p) for p in paths],
        "probabilities": {n: float(p) for n, p in zip(names, probabilities)},
        "msp": prepared.plane.to_dict(),
        "model": model.describe(),
        "device": str(dev),
        "notes": notes,
        "runtime_s": {k: round(v, 3) for k, v in {**times, "total": time.perf_counter() - started}.items()},
    }
