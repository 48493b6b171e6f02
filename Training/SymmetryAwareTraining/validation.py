"""Validation during training: whole held-out cases through the deployed inference path.

The engine calls one function, :func:`validate_segmentation`, every ``validation.every``
steps. Each process takes its share of the evaluation fold (case ``i`` goes to rank
``i % world_size``), segments each whole case exactly as deployment does
(:func:`SymmetryAwareCore.inference.engine.run_paired_inference`: mirror-paired sliding
window, each window with ITS counterpart from the whole volume; labels from the model
card's region postprocessing), scores it against its label on the file's own grid (after
the inverse alignment when cases are aligned), and the per-case scores of all processes are
gathered, so every rank computes the same summary and takes the same best-checkpoint and
early-stopping decisions.

:class:`BestTracker` holds the best-checkpoint rule (which metric, which direction,
patience); its state travels in the checkpoints, so a resumed run keeps its best.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from .distributed import DistEnv, gather_objects
from .metrics import REGIONS, case_metrics, labels_to_regions, summarise

__all__ = ["ValidationResult", "SegmentedCase", "BestTracker", "segment_entry", "predict_case", "validate_segmentation",
           "flat_summary"]

_AMP = {"fp32": "off", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class ValidationResult:
    """Scores of one validation.

    Attributes:
        metrics: flat summary, e.g. ``dice_mean`` (mean over regions of the mean over cases),
            ``ET_dice``, ``WT_lesion_hd95`` (see :func:`flat_summary`).
        per_case: ``{case: {region: {"dice", "hd95", "lesion_dice", ...}}}`` of all processes.
        seconds: wall time of this process's share.
    """

    metrics: Dict[str, float]
    per_case: Dict[str, Dict[str, Dict[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def cases(self) -> int:
        return len(self.per_case)


def flat_summary(per_case: Dict[str, Dict[str, Dict[str, float]]]) -> Dict[str, float]:
    """``{region}_{metric}`` (mean over cases) and ``{metric}_mean`` (mean over regions)."""
    summary = summarise(per_case)
    out: Dict[str, float] = {}
    for metric in ("dice", "hd95", "lesion_dice", "lesion_hd95"):
        values = []
        for region in REGIONS:
            value = summary.get(region, {}).get(f"{metric}_mean", float("nan"))
            out[f"{region}_{metric}"] = value
            values.append(value)
        finite = [v for v in values if math.isfinite(v)]
        out[f"{metric}_mean"] = float(np.mean(finite)) if finite else float("nan")
    return out


@dataclass
class SegmentedCase:
    """A case segmented as deployment does it.

    Attributes:
        labels: ``(X, Y, Z)`` uint8 project labels (1 necrotic core, 2 oedema, 4 enhancing).
        affine: voxel -> RAS of the grid of ``labels``: the first channel file's own grid when
            the case was aligned (probabilities resampled linearly from the symmetric frame,
            then thresholded there), else its RAS grid (an exact permutation of the file's).
        truth: ``(X, Y, Z)`` reference labels on the same grid, when asked for.
    """

    labels: np.ndarray
    affine: np.ndarray
    truth: Optional[np.ndarray] = None

    @property
    def spacing(self) -> Tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def segment_entry(model: nn.Module, entry: Dict[str, Any], roi_size: Sequence[int], align: bool,
                  overlap: float = 0.25, sw_batch_size: int = 1, device: str = "cpu", precision: str = "fp32",
                  with_label: bool = True) -> SegmentedCase:
    """Segment one datalist entry with :func:`SymmetryAwareCore.inference.engine.run_paired_inference`
    (mirror-paired sliding window) and the BraTS card's region postprocessing; see
    :class:`SegmentedCase` for the grid. Used by validation and by ``evaluate --model``."""
    from types import SimpleNamespace

    from SymmetryAwareCore.inference.engine import InferenceSettings, run_paired_inference
    from SymmetryAwareCore.inference.model_source import brats_card_fields
    from SymmetryAwareCore.inference.postprocess import labels_from_logits
    from SymmetryAwareCore.io.readers import read_labelmap

    from .data import load_case, normalise

    case = load_case(entry, with_label=with_label, align=align)
    settings = InferenceSettings(roi_size=tuple(int(r) for r in roi_size), overlap=overlap,
                                 sw_batch_size=sw_batch_size, device=str(device), amp=_AMP[precision],
                                 cpu_fallback=False)  # never move a model that is being trained
    result, _ = run_paired_inference(normalise(case.volume), model, settings)
    logits = result.logits.float()
    truth, affine = case.label, case.affine
    if case.frame is not None:
        probability = case.frame.to_native(torch.sigmoid(logits).numpy(), "linear")
        logits = torch.logit(torch.from_numpy(np.asarray(probability, np.float32)), eps=1e-6)
        affine = case.frame.native_affine
        truth = read_labelmap(entry["label"]).array if with_label else None
    # The deployed postprocessing (the BraTS card's nested regions), not a private threshold.
    card = SimpleNamespace(postprocessing=brats_card_fields()["postprocessing"], labels=[])
    return SegmentedCase(labels_from_logits(logits.numpy(), card), np.asarray(affine, np.float64), truth)


def predict_case(model: nn.Module, entry: Dict[str, Any], roi_size: Sequence[int], align: bool,
                 overlap: float = 0.25, sw_batch_size: int = 1, device: str = "cpu",
                 precision: str = "fp32") -> Tuple[np.ndarray, np.ndarray, Tuple[float, ...]]:
    """``(predicted regions, true regions, spacing)`` of one case: ``(3, X, Y, Z)`` bool TC,
    WT, ET on the grid of :func:`segment_entry`, ``spacing`` in mm along those axes."""
    case = segment_entry(model, entry, roi_size, align, overlap, sw_batch_size, device, precision)
    pred = labels_to_regions(case.labels.astype(np.int64), 4)
    return pred, labels_to_regions(np.asarray(case.truth).astype(np.int64)), case.spacing


def validate_segmentation(model: nn.Module, entries: Sequence[Dict[str, Any]], config, env: DistEnv) -> ValidationResult:
    """Score ``model`` on ``entries`` (the held-out fold), shared out over the processes.

    ``model`` is the bare network (not the DDP wrapper): each rank runs its own cases, with no
    collective call inside a forward. Call on every rank; every rank gets the same result.
    """
    from .datalist import case_id

    t0 = time.perf_counter()
    v = config.validation
    chosen = list(entries)[: v.max_cases] if v.max_cases else list(entries)
    mine: Dict[str, Dict[str, Dict[str, float]]] = {}
    for entry in chosen[env.rank :: env.world_size]:
        pred, truth, spacing = predict_case(model, entry, config.data.roi_size, config.data.align, v.overlap,
                                            v.sw_batch_size, str(env.device), config.train.precision)
        mine[case_id(entry)] = case_metrics(pred, truth, spacing)
    per_case: Dict[str, Dict[str, Dict[str, float]]] = {}
    for part in gather_objects(mine, env):
        per_case.update(part)
    # Cases in the fold's order, whatever rank scored them.
    ordered = {case_id(e): per_case[case_id(e)] for e in chosen if case_id(e) in per_case}
    return ValidationResult(flat_summary(ordered), ordered, time.perf_counter() - t0)


class BestTracker:
    """Which validation was best by ``metric``, and whether to stop early.

    Dice-like metrics are better higher, HD95 lower. A value counts as an improvement when it
    beats the best by more than ``min_delta``; ``patience`` validations in a row without one
    stop the run (0: never). NaN never improves.
    """

    def __init__(self, metric: str, patience: int = 0, min_delta: float = 0.0):
        self.metric, self.patience, self.min_delta = metric, int(patience), float(min_delta)
        self.higher = "hd95" not in metric
        self.best_value: Optional[float] = None
        self.best_step: Optional[int] = None
        self.since_best = 0
        self.history: List[Tuple[int, float]] = []

    def update(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step``; True when it is the new best."""
        value = float(value)
        self.history.append((int(step), value))
        better = math.isfinite(value) and (
            self.best_value is None
            or (value > self.best_value + self.min_delta if self.higher else value < self.best_value - self.min_delta))
        if better:
            self.best_value, self.best_step, self.since_best = value, int(step), 0
        else:
            self.since_best += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def describe(self, every: int, fold: int, cases: int) -> str:
        direction = "highest" if self.higher else "lowest"
        return (f"{direction} {self.metric} ({self.best_value:.4g}) on held-out fold {fold} ({cases} case(s)) over "
                f"{len(self.history)} validation(s), one every {every} steps")

    def state_dict(self) -> Dict[str, Any]:
        return {"metric": self.metric, "best_value": self.best_value, "best_step": self.best_step,
                "since_best": self.since_best, "history": [[s, v] for s, v in self.history]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("metric") != self.metric:  # another metric: its history says nothing
            return
        self.best_value, self.best_step = state.get("best_value"), state.get("best_step")
        self.since_best = int(state.get("since_best", 0))
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]
