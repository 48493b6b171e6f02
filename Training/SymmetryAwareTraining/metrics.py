"""Evaluation metrics: BraTS regions (Dice, HD95), lesion-wise Dice/HD95, per-finding AUC.

BraTS label maps use 1 necrotic core, 2 oedema and 4 enhancing tumour (BraTS 2021) or 3
(BraTS 2023). They are scored as nested regions: TC = 1 + ET, WT = 1 + 2 + ET, ET.

Empty masks follow the BraTS conventions, defined once here:

- region-wise (:func:`segmentation_metrics`): prediction and truth both empty -> Dice 1,
  HD95 0; exactly one empty -> Dice 0, HD95 :data:`HD95_EMPTY` (373.13 mm, the diagonal of
  BraTS's 240 x 240 x 155 1 mm grid: the largest distance a case can have);
- lesion-wise (:func:`lesion_wise_metrics`, BraTS 2023 ranking): every missed true lesion
  and every false-positive predicted lesion scores Dice 0 and HD95
  :data:`LESION_HD95_MISS` (374 mm, the BraTS 2023 value); a case with no lesion in either
  scores Dice 1, HD95 0.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

__all__ = [
    "REGIONS",
    "labels_to_regions",
    "dice_score",
    "false_positive_ml",
    "segmentation_metrics",
    "lesion_wise_metrics",
    "case_metrics",
    "hd95",
    "HD95_EMPTY",
    "LESION_HD95_MISS",
    "auc_per_finding",
    "summarise",
    "write_report",
]

REGIONS = ("TC", "WT", "ET")

HD95_EMPTY = 373.13
"""HD95 (mm) when exactly one of prediction and truth is empty (BraTS: 240x240x155 diagonal)."""

LESION_HD95_MISS = 374.0
"""HD95 (mm) of a missed or false-positive lesion in the lesion-wise metrics (BraTS 2023)."""


def labels_to_regions(labels, enhancing_label: Optional[int] = None):
    """``(X, Y, Z)`` integer BraTS labels -> ``(3, X, Y, Z)`` bool regions TC, WT, ET.

    ``enhancing_label`` is 4 (BraTS 2021) or 3 (BraTS 2023); ``None`` accepts either, which is
    unambiguous because 3 and 4 never occur together in one BraTS release.
    Works on numpy arrays and torch tensors.
    """
    is_torch = isinstance(labels, torch.Tensor)
    values = set(torch.unique(labels).tolist() if is_torch else np.unique(labels).tolist())
    if enhancing_label is None:
        if {3, 4} <= values:
            raise InputError("label map holds both 3 and 4: cannot tell which is enhancing tumour")
        enhancing_label = 3 if 3 in values else 4
    unexpected = values - {0, 1, 2, enhancing_label}
    if unexpected:
        raise InputError(f"unexpected labels {sorted(unexpected)} (BraTS uses 0, 1, 2, {enhancing_label})")
    et = labels == enhancing_label
    tc = (labels == 1) | et
    wt = tc | (labels == 2)
    stack = torch.stack if is_torch else np.stack
    return stack([tc, wt, et])


def hd95(pred, truth, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th-percentile symmetric surface distance (mm) of two ``(X, Y, Z)`` binary masks.

    Empty masks follow the region-wise BraTS conventions (module docstring).
    """
    from monai.metrics import compute_hausdorff_distance

    p_any, t_any = bool(np.any(pred)), bool(np.any(truth))
    if not p_any and not t_any:
        return 0.0
    if p_any != t_any:
        return HD95_EMPTY
    p = torch.as_tensor(np.asarray(pred, dtype=np.float32))[None, None]
    t = torch.as_tensor(np.asarray(truth, dtype=np.float32))[None, None]
    with warnings.catch_warnings():
        # monai 1.6 warns about an argument it passes to itself (get_mask_edges).
        warnings.simplefilter("ignore", FutureWarning)
        return float(compute_hausdorff_distance(p, t, include_background=True, percentile=95,
                                                spacing=[list(map(float, spacing))])[0, 0])


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; both empty is 1 (a correct "no tumour", BraTS)."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def false_positive_ml(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume in mL that ``pred`` marks outside ``truth`` (binary masks on one grid of voxel
    size ``spacing`` mm): the healthy tissue a segmentation claims, which Dice alone hides
    when the true lesion is large."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    return float(np.logical_and(pred, np.logical_not(truth)).sum()) * voxel_ml


def paired_bootstrap(diff: np.ndarray, resamples: int = 10000, seed: int = 0):
    """Mean of per-case differences and its 95 % percentile interval, resampling cases.

    ``diff`` holds one paired difference per case (model B minus model A on the same case);
    returns ``(mean, low, high)``. Seeded, so a report is reproducible.
    """
    diff = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def segmentation_metrics(pred_regions, true_regions, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                         names: Sequence[str] = REGIONS) -> Dict[str, Dict[str, float]]:
    """Dice and HD95 (mm) per region for one case.

    Args:
        pred_regions, true_regions: ``(R, X, Y, Z)`` binary arrays (numpy or torch).
        spacing: voxel size in mm along X, Y, Z (for HD95).
    Returns ``{region: {"dice": d, "hd95": h}}``. Both empty: Dice 1 and HD95 0 (a correct
    "no tumour"); exactly one empty: Dice 0 and HD95 :data:`HD95_EMPTY` (BraTS).
    """
    pred = np.asarray(pred_regions).astype(bool)
    true = np.asarray(true_regions).astype(bool)
    if pred.shape != true.shape:
        raise InputError(f"prediction shape {tuple(pred.shape[1:])} differs from reference {tuple(true.shape[1:])}")
    return {name: {"dice": dice_score(pred[r], true[r]), "hd95": hd95(pred[r], true[r], spacing)}
            for r, name in enumerate(names)}


def lesion_wise_metrics(pred, truth, spacing: Sequence[float] = (1.0, 1.0, 1.0), dilation_mm: float = 3.0,
                        min_lesion_mm3: float = 50.0) -> Dict[str, float]:
    """Lesion-wise Dice and HD95 of one region, BraTS 2023 style.

    Lesions are 26-connected components. Each true lesion is dilated by ``dilation_mm``
    (18-connected steps of the smallest voxel size; BraTS: 3 voxels of 1 mm) and matched with
    every predicted component touching the dilated lesion; it scores the Dice and HD95 of itself
    against the union of its matches, or Dice 0 / HD95 :data:`LESION_HD95_MISS` when none
    touches it. Predicted components touching no dilated true lesion are false positives, each
    Dice 0 / HD95 :data:`LESION_HD95_MISS`. True lesions under ``min_lesion_mm3`` (BraTS: 50
    voxels of 1 mm) are ignored, and so are the predicted components that touch only them.
    The case score is the mean over true lesions and false positives; with neither, Dice 1
    and HD95 0.

    Args:
        pred, truth: ``(X, Y, Z)`` binary masks on one grid.
        spacing: voxel size in mm along X, Y, Z.
    Returns ``{"lesion_dice", "lesion_hd95", "lesions", "detected", "false_positives"}``.
    """
    from scipy import ndimage

    pred = np.asarray(pred).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference {truth.shape}")
    connect26 = np.ones((3, 3, 3), bool)
    true_cc, n_true = ndimage.label(truth, structure=connect26)
    pred_cc, n_pred = ndimage.label(pred, structure=connect26)
    voxel_mm3 = float(np.prod(spacing))
    steps = max(1, int(round(dilation_mm / float(min(spacing)))))
    grow = ndimage.generate_binary_structure(3, 2)
    dice_scores: List[float] = []
    distances: List[float] = []
    touched = np.zeros(n_pred + 1, bool)
    detected = 0
    boxes = ndimage.find_objects(true_cc)
    for index, box in enumerate(boxes, start=1):
        # Work in the lesion's box grown by the dilation, not on the whole grid.
        window = tuple(slice(max(0, s.start - steps - 1), min(n, s.stop + steps + 1)) for s, n in zip(box, truth.shape))
        lesion = true_cc[window] == index
        grown = ndimage.binary_dilation(lesion, structure=grow, iterations=steps)
        matches = np.unique(pred_cc[window][grown])
        matches = matches[matches > 0]
        touched[matches] = True
        if lesion.sum() * voxel_mm3 < min_lesion_mm3:
            continue  # too small to count; its matches are not false positives either
        if matches.size == 0:
            dice_scores.append(0.0)
            distances.append(LESION_HD95_MISS)
            continue
        detected += 1
        matched = np.isin(pred_cc, matches)
        whole = true_cc == index
        dice_scores.append(dice_score(matched, whole))
        distances.append(hd95(matched, whole, spacing))
    false_positives = int((~touched[1:]).sum())
    dice_scores += [0.0] * false_positives
    distances += [LESION_HD95_MISS] * false_positives
    if not dice_scores:
        return {"lesion_dice": 1.0, "lesion_hd95": 0.0, "lesions": 0, "detected": 0, "false_positives": 0}
    return {"lesion_dice": float(np.mean(dice_scores)), "lesion_hd95": float(np.mean(distances)),
            "lesions": len(dice_scores) - false_positives, "detected": detected, "false_positives": false_positives}


def case_metrics(pred_regions, true_regions, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 names: Sequence[str] = REGIONS) -> Dict[str, Dict[str, float]]:
    """Region-wise and lesion-wise metrics of one case: ``{region: {"dice", "hd95",
    "lesion_dice", "lesion_hd95", "lesions", "detected", "false_positives"}}``."""
    out = segmentation_metrics(pred_regions, true_regions, spacing, names)
    pred, true = np.asarray(pred_regions).astype(bool), np.asarray(true_regions).astype(bool)
    for r, name in enumerate(names):
        out[name].update(lesion_wise_metrics(pred[r], true[r], spacing))
    return out


def rank_auc(positive, negative) -> float:
    """Mann-Whitney AUC: the chance that a positive's score exceeds a negative's, ties counting
    half (average ranks); NaN when either group is empty. The one rank AUC of the benchmarks
    and scripts (scan scores, voxel maps, probes)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, np.float64).ravel()
    negative = np.asarray(negative, np.float64).ravel()
    n1, n0 = len(positive), len(negative)
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([positive, negative]))
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_per_finding(scores: np.ndarray, targets: np.ndarray, findings: Sequence[str]) -> Dict[str, float]:
    """ROC AUC per finding. ``scores``/``targets``: ``(N, F)``; NaN where a finding has one class only."""
    from monai.metrics import compute_roc_auc

    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    out = {}
    for f, name in enumerate(findings):
        t = targets[:, f]
        if len(np.unique(t)) < 2:
            out[name] = float("nan")
            continue
        out[name] = float(compute_roc_auc(torch.as_tensor(scores[:, f]), torch.as_tensor(t)))
    return out


def summarise(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Mean, median and count of each region's metric over cases, ignoring NaN."""
    summary: Dict[str, Dict[str, float]] = {}
    names: Dict[str, List[str]] = {}
    for case in per_case.values():
        for region, metrics in case.items():
            summary.setdefault(region, {})
            names.setdefault(region, [])
            names[region] += [m for m in metrics if m not in names[region]]
    for region in summary:
        for metric in names[region]:
            values = np.array([c[region][metric] for c in per_case.values() if region in c], dtype=np.float64)
            finite = values[np.isfinite(values)]
            summary[region][f"{metric}_mean"] = float(finite.mean()) if finite.size else float("nan")
            summary[region][f"{metric}_median"] = float(np.median(finite)) if finite.size else float("nan")
            summary[region][f"{metric}_n"] = int(finite.size)
    return summary


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(output_dir: Union[str, Path], rows: List[Dict[str, object]], summary: Dict[str, object],
                 stem: str = "metrics") -> Dict[str, Path]:
    """Write per-case ``rows`` as CSV and ``{"cases": rows, "summary": summary}`` as JSON (NaN -> null)."""
    output_dir = Path(output_dir)
    paths = {"csv": output_dir / f"{stem}.csv", "json": output_dir / f"{stem}.json"}
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with atomic_path(paths["csv"]) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(_json_safe({"cases": rows, "summary": summary}), indent=2))
    return paths
