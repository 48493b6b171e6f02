"""Validation during training: whole held-out cases through the deployed inference path.

The engine calls one function, :func:`validate_segmentation`, every ``validation.every``
steps. Each process takes its share of the evaluation fold (case ``i`` goes to rank
``i % world_size``), segments each whole case exactly as deployment does
(the core's prepare -> predict -> back-to-the-input-grid path with the run's preprocessing,
:func:`segment_entry`), scores it against its label on the file's own grid, and the per-case scores of all processes are
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

__all__ = ["ValidationResult", "SegmentedCase", "BestTracker", "run_model", "segment_entry", "predict_case", "validate_segmentation",
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
        affine: voxel -> RAS of the grid of ``labels``: the first channel file's own grid
            (probabilities resampled linearly from the frame, then thresholded there).
        truth: ``(X, Y, Z)`` reference labels on the same grid, when asked for.
    """

    labels: np.ndarray
    affine: np.ndarray
    truth: Optional[np.ndarray] = None

    @property
    def spacing(self) -> Tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def run_model(model: nn.Module, spec, channel_names: Sequence[str], name: str = "training run"):
    """The network being trained, with the card it will be published with (BraTS regions,
    the run's preprocessing), as the core's inference path takes it."""
    from SymmetryAwareCore.inference.model_source import LoadedModel, brats_card_fields
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard

    fields = brats_card_fields()
    card = ModelCard(channels=[InputChannel(str(n)) for n in channel_names], modality="MRI", labels=fields["labels"],
                     preprocessing=spec.to_card(), postprocessing=fields["postprocessing"], name=name)
    return LoadedModel(model, card, name)


def segment_entry(model: nn.Module, entry: Dict[str, Any], spec, channel_names: Sequence[str],
                  overlap: float = 0.25, sw_batch_size: int = 1, device: str = "cpu", precision: str = "fp32",
                  with_label: bool = True) -> SegmentedCase:
    """Segment one datalist entry exactly as ``symmetryaware segment`` does: the core's
    :func:`~SymmetryAwareCore.inference.pipeline.prepare_for_model` with the run's
    preprocessing ``spec``, :func:`~SymmetryAwareCore.inference.pipeline.predict_case`
    (mirror-paired sliding window; the model is never moved) and
    :func:`~SymmetryAwareCore.inference.pipeline.outputs_on_native` (probabilities back to
    the first channel file's own grid, thresholded there)."""
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, outputs_on_native, predict_case as core_predict
    from SymmetryAwareCore.inference.pipeline import prepare_for_model
    from SymmetryAwareCore.io.readers import read_labelmap

    from .data import entry_paths

    loaded = run_model(model, spec, channel_names)
    options = SegmentOptions(device=str(device), overlap=overlap, sw_batch_size=sw_batch_size, amp=_AMP[precision],
                             overview=False)
    paths, label_path = entry_paths(entry)
    prepared = prepare_for_model(paths, loaded, options)
    outputs = outputs_on_native(prepared, core_predict(prepared, loaded, options, cpu_fallback=False), loaded, options)
    truth = read_labelmap(label_path).array if with_label else None
    return SegmentedCase(outputs.labels, np.asarray(prepared.native.affine, np.float64), truth)


def predict_case(model: nn.Module, entry: Dict[str, Any], spec, channel_names: Sequence[str],
                 overlap: float = 0.25, sw_batch_size: int = 1, device: str = "cpu",
                 precision: str = "fp32") -> Tuple[np.ndarray, np.ndarray, Tuple[float, ...]]:
    """``(predicted regions, true regions, spacing)`` of one case: ``(3, X, Y, Z)`` bool TC,
    WT, ET on the grid of :func:`segment_entry`, ``spacing`` in mm along those axes."""
    case = segment_entry(model, entry, spec, channel_names, overlap, sw_batch_size, device, precision)
    pred = labels_to_regions(case.labels.astype(np.int64), 4)
    return pred, labels_to_regions(np.asarray(case.truth).astype(np.int64)), case.spacing


def validate_segmentation(model: nn.Module, entries: Sequence[Dict[str, Any]], config, env: DistEnv) -> ValidationResult:
    """Score ``model`` on ``entries`` (the held-out fold), shared out over the processes.

    ``model`` is the bare network (not the DDP wrapper): each rank runs its own cases, with no
    collective call inside a forward. Call on every rank; every rank gets the same result.
    """
    from .datalist import case_id
    from .tasks import _channel_names, run_preprocessing

    t0 = time.perf_counter()
    spec, channels = run_preprocessing(config), _channel_names(config)
    v = config.validation
    chosen = list(entries)[: v.max_cases] if v.max_cases else list(entries)
    mine: Dict[str, Dict[str, Dict[str, float]]] = {}
    for entry in chosen[env.rank :: env.world_size]:
        pred, truth, spacing = predict_case(model, entry, spec, channels, v.overlap,
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
