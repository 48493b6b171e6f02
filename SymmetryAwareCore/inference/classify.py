"""Scan-level classification (e.g. CT haemorrhage, fracture, midline shift), one probability per finding.

The scan is prepared as the model card says (the one preparation path,
:func:`SymmetryAwareCore.inference.pipeline.prepare_for_model`), and its brain box is
resized to the model's ROI (:func:`SymmetryAwareCore.preprocessing.whole_scan_input`); its
counterpart is then simply its left-right flip (the box is symmetric about the plane, so
the mirror box is the box itself), exactly as the training package feeds classifiers
(``SymmetryAwareTraining.data.WholeScanDataset``).

A classifier trained with ``pairing="mirror-pair"`` classified the scan AND its mirror image
(each the other's counterpart) in training; here too: both go through the encoder in one
call, at the cost of the counterpart pass that SACA needs anyway, and their probabilities
(and maps, the mirror image's flipped back) are averaged.

A card may carry a Platt calibration (``postprocessing.calibration``: ``p' = sigmoid(scale *
logit(p) + offset)`` per finding, fitted on cases apart from training and evaluation by
``Training/scripts/calibrate_classifier.py``); the probabilities and maps are then given on
that scale (:func:`calibrate`), and the result says so. The scale is positive, so the order of
the scans and the map's peak do not change.

A classifier with ``pooling="lesion"`` scores every token of a map whose maximum is the scan
logit: :func:`classify_case` with ``maps=True`` gives each finding's map as a probability on
the input's grid (the map resized over the brain box, linear; 0 outside the head).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..contract import card_findings, card_has_lesion_map
from ..errors import InputError
from ..geometry.mirror import flip_lr
from ..preprocessing import whole_scan_input
from .device import resolve_device
from .engine import fused_window_attention
from .model_source import LoadedModel
from .pipeline import Progress, SegmentOptions, StageProgress, model_preprocessing, prepare_for_model, unit_map_on_native

# Share of the progress bar per stage: on a CPU, aligning and the one encoder call take most.
CLASSIFY_STAGES = (("loading", 0.05), ("aligning", 0.45), ("classifying", 0.4), ("maps", 0.1))

__all__ = ["CLASSIFY_STAGES", "finding_names", "has_lesion_map", "calibration_of", "calibrate", "classify_prepared", "classify_case"]


def finding_names(model: LoadedModel) -> List[str]:
    """The findings a classifier's outputs stand for, in output order, from its card
    (:func:`SymmetryAwareCore.contract.card_findings`); InputError for any other model."""
    card = model.card
    names = list(card_findings(card))
    if not names:
        raise InputError(f"model {card.name or card.architecture} is not a scan-level classifier (its card names no findings)")
    return names


def has_lesion_map(model: LoadedModel) -> bool:
    """Whether the classifier scores a lesion map (``pooling="lesion"``) whose maximum is its
    logit: its card says so (:func:`SymmetryAwareCore.contract.card_has_lesion_map`, the rule the
    Slicer module reads too) and the network is built that way."""
    return card_has_lesion_map(model.card) and getattr(model.network, "pooling", None) == "lesion"


def calibration_of(model: LoadedModel) -> Optional[Dict]:
    """The card's Platt calibration (checked when the card was read), or None."""
    return (model.card.postprocessing or {}).get("calibration")


def calibrate(probabilities: np.ndarray, calibration: Optional[Dict]) -> np.ndarray:
    """``sigmoid(scale * logit(p) + offset)`` with finding ``f``'s scale and offset applied
    along axis 0 (``(F,)`` probabilities or ``(F, ...)`` maps); ``p`` unchanged without a
    calibration. The one calibration rule: classify and the calibration script both use it."""
    p = np.asarray(probabilities, dtype=np.float64)
    if not calibration:
        return p
    shape = (-1,) + (1,) * (p.ndim - 1)
    scale = np.asarray(calibration["scale"], dtype=np.float64).reshape(shape)
    offset = np.asarray(calibration["offset"], dtype=np.float64).reshape(shape)
    q = np.clip(p, 1e-7, 1.0 - 1e-7)  # a sigmoid in float32 can round to exactly 0 or 1
    return 1.0 / (1.0 + np.exp(-(scale * np.log(q / (1.0 - q)) + offset)))


def classify_prepared(cropped: np.ndarray, model: LoadedModel, device: Union[str, torch.device] = "cpu",
                      return_maps: bool = False, calibrated: bool = True):
    """Finding probabilities ``(F,)`` of one prepared brain box ``(C', w, h, d)`` (axis 1
    left-right, as :attr:`~SymmetryAwareCore.preprocessing.PreparedCase.cropped` or a
    training cache entry): resized to the card's ROI, paired with its left-right flip.

    With ``return_maps`` (a ``pooling="lesion"`` classifier) also ``(F, w, h, d)`` float32
    probabilities over the box: the token map resized onto the box (trilinear), axis 1
    left-right. ``calibrated``: on the card's calibrated scale when it has one (:func:`calibrate`);
    False gives the network's own sigmoid (what a calibration is fitted to).
    """
    names = finding_names(model)
    if return_maps and not has_lesion_map(model):
        raise InputError(f"model {model.card.name or model.card.architecture} has no lesion map (pooling is not 'lesion')")
    x = whole_scan_input(cropped, model_preprocessing(model).roi_size)[None].to(device)
    x_mirror = flip_lr(x, spatial_start=2)
    network = model.network.to(device).eval()
    both = getattr(network, "pairing", "input") == "mirror-pair"
    with torch.inference_mode(), fused_window_attention(network):
        if return_maps:
            logits, maps = network(x, x_mirror, mirror_pair=both, return_map=True)
        else:
            logits, maps = network(x, x_mirror, mirror_pair=both), None
    if logits.shape[-1] != len(names):
        raise InputError(f"the network gives {logits.shape[-1]} outputs, the card names {len(names)} findings")
    probabilities = torch.sigmoid(logits.float())
    if maps is not None:
        maps = torch.sigmoid(maps.float())
    if both:  # row 1 is the mirror image: its map goes back to the scan's own left-right layout
        probabilities = probabilities.mean(dim=0, keepdim=True)
        if maps is not None:
            maps = 0.5 * (maps[:1] + flip_lr(maps[1:], spatial_start=2))
    calibration = calibration_of(model) if calibrated else None
    probabilities = calibrate(probabilities[0].cpu().numpy(), calibration)
    if not return_maps:
        return probabilities
    box = torch.nn.functional.interpolate(maps, size=tuple(int(s) for s in cropped.shape[1:]), mode="trilinear",
                                          align_corners=False)
    return probabilities, calibrate(box[0].clamp(0.0, 1.0).cpu().numpy(), calibration).astype(np.float32)


def classify_case(
    paths: Sequence[Path],
    model: LoadedModel,
    device: str = "auto",
    msp_on_failure: str = "error",
    maps: bool = False,
    progress: Optional[Progress] = None,
    calibrated: bool = True,
) -> Dict:
    """Probability of each finding for one scan.

    ``calibrated``: as for :func:`classify_prepared` (False: the network's own sigmoid, what a
    calibration is fitted to; the result's ``calibration`` is then None).

    ``progress``: ``callable(fraction 0..1, stage name)`` over :data:`CLASSIFY_STAGES`, as
    :func:`~SymmetryAwareCore.inference.pipeline.segment_case` reports its stages.

    Returns:
        a JSON-ready dict: ``probabilities`` ``{finding: p}``, the plane, model, device and
        runtime per stage. With ``maps`` (a classifier with a lesion map) the dict also holds
        ``maps``: ``{finding: (X, Y, Z) float32}`` probabilities on the input's grid (not JSON:
        write them with :func:`SymmetryAwareCore.io.writers.write_map`), and ``native``, that
        grid's :class:`~SymmetryAwareCore.io.image.Image`.
    """
    names = finding_names(model)
    card = model.card
    started = time.perf_counter()
    times = {}
    stages = StageProgress(progress, CLASSIFY_STAGES)
    prepared = prepare_for_model(paths, model, SegmentOptions(msp_on_failure=msp_on_failure), progress=stages.stage)
    times.update(prepared.times)
    stages.begin("classifying")
    t = time.perf_counter()
    dev = resolve_device(device)
    if maps:
        probabilities, box_maps = classify_prepared(prepared.cropped, model, dev, return_maps=True,
                                                    calibrated=calibrated)
    else:
        probabilities, box_maps = classify_prepared(prepared.cropped, model, dev, calibrated=calibrated), None
    calibration = calibration_of(model) if calibrated else None
    times["inference"] = time.perf_counter() - t
    notes = list(model.notes) + prepared.notes
    extra = {}
    if box_maps is not None:
        stages.begin("maps")
        t = time.perf_counter()
        extra["maps"] = {n: unit_map_on_native(prepared, prepared.frame_map(m)) for n, m in zip(names, box_maps)}
        extra["native"] = prepared.native
        times["maps"] = time.perf_counter() - t
    stages.end()
    if progress is not None:
        progress(1.0, "done")
    return {
        "inputs": [str(p) for p in paths],
        "probabilities": {n: float(p) for n, p in zip(names, probabilities)},
        # What the probabilities mean: fitted to observed frequencies (on which cases), or the
        # network's raw sigmoid, a ranking score that need not be a frequency.
        "calibration": calibration.get("fitted_on", "platt") if calibration else None,
        "msp": prepared.plane.to_dict(),
        "model": model.describe(),
        "device": str(dev),
        "notes": notes,
        "runtime_s": {k: round(v, 3) for k, v in {**times, "total": time.perf_counter() - started}.items()},
        **extra,
    }
