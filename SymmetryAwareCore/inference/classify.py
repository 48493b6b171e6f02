"""Scan-level classification (e.g. CT haemorrhage, fracture, midline shift), one probability per finding.

The scan is aligned to its mid-sagittal plane, normalised as the model card says, and the
whole aligned volume is resized to the model's ROI; its counterpart is then simply its
left-right flip (for a whole volume the mirror box is the volume itself), exactly as the
training package feeds classifiers (``SymmetryAwareTraining.data.WholeScanDataset``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..geometry.mirror import flip_lr
from ..geometry.msp import estimate_msp
from ..geometry.symmetric_frame import align_to_msp
from ..io.case import load_case
from .device import resolve_device
from .engine import fused_window_attention
from .model_source import LoadedModel
from .pipeline import normalise_intensities

__all__ = ["finding_names", "classify_case"]


def finding_names(model: LoadedModel) -> List[str]:
    """The findings a classifier's outputs stand for, in output order, from its card."""
    card = model.card
    names = (card.postprocessing or {}).get("findings") or (card.extra or {}).get("findings")
    if not names:
        raise InputError(f"model {card.name or card.architecture} is not a scan-level classifier (its card names no findings)")
    return [str(n) for n in names]


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
    image = load_case([Path(p) for p in paths], [c.name for c in card.channels], on_grid_mismatch="resample")
    times["loading"] = time.perf_counter() - started
    t = time.perf_counter()
    plane = estimate_msp(image, on_failure=msp_on_failure)
    spacing = card.preprocessing.get("spacing")
    aligned, _ = align_to_msp(image, plane, spacing)
    volume = normalise_intensities(aligned, card.preprocessing.get("normalisation", "zscore-nonzero"))
    times["aligning"] = time.perf_counter() - t
    t = time.perf_counter()
    roi = tuple(int(r) for r in card.preprocessing.get("roi_size", (96, 96, 96)))
    x = torch.nn.functional.interpolate(torch.from_numpy(volume)[None], size=roi, mode="trilinear", align_corners=False)
    dev = resolve_device(device)
    network = model.network.to(dev).eval()
    x = x.to(dev)
    with torch.inference_mode(), fused_window_attention(network):
        logits = network(x, flip_lr(x, spatial_start=2))
    if logits.shape[-1] != len(names):
        raise InputError(f"the network gives {logits.shape[-1]} outputs, the card names {len(names)} findings")
    probabilities = torch.sigmoid(logits.float())[0].cpu().numpy()
    times["inference"] = time.perf_counter() - t
    notes = list(model.notes)
    if not plane.confident:
        notes.append(f"mid-sagittal plane has low confidence: {plane.message or 'poor symmetry score'}")
    return {
        "inputs": [str(p) for p in paths],
        "probabilities": {n: float(p) for n, p in zip(names, probabilities)},
        "msp": plane.to_dict(),
        "model": model.describe(),
        "device": str(dev),
        "notes": notes,
        "runtime_s": {k: round(v, 3) for k, v in {**times, "total": time.perf_counter() - started}.items()},
    }
