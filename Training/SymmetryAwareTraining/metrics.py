"""Evaluation metrics: BraTS regions (Dice, HD95) and per-finding AUC, via monai.metrics.

BraTS label maps use 1 necrotic core, 2 oedema and 4 enhancing tumour (BraTS 2021) or 3
(BraTS 2023). They are scored as nested regions: TC = 1 + ET, WT = 1 + 2 + ET, ET.
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
    "segmentation_metrics",
    "auc_per_finding",
    "summarise",
    "write_report",
]

REGIONS = ("TC", "WT", "ET")


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


def segmentation_metrics(pred_regions, true_regions, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                         names: Sequence[str] = REGIONS) -> Dict[str, Dict[str, float]]:
    """Dice and HD95 (mm) per region for one case.

    Args:
        pred_regions, true_regions: ``(R, X, Y, Z)`` binary arrays (numpy or torch).
        spacing: voxel size in mm along X, Y, Z (for HD95).
    Returns ``{region: {"dice": d, "hd95": h}}``. Both empty: Dice 1 and HD95 0 (a correct
    "no tumour"); exactly one empty: Dice 0 and HD95 NaN (undefined distance).
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred = torch.as_tensor(np.asarray(pred_regions, dtype=np.float32))[None]
    true = torch.as_tensor(np.asarray(true_regions, dtype=np.float32))[None]
    if pred.shape != true.shape:
        raise InputError(f"prediction shape {tuple(pred.shape[1:])} differs from reference {tuple(true.shape[1:])}")
    dice = compute_dice(pred, true, include_background=True, ignore_empty=False)[0]
    out = {}
    for r, name in enumerate(names):
        p_any, t_any = bool(pred[0, r].any()), bool(true[0, r].any())
        if not p_any and not t_any:
            hd = 0.0
        elif p_any != t_any:
            hd = float("nan")
        else:
            with warnings.catch_warnings():
                # monai 1.6 warns about an argument it passes to itself (get_mask_edges).
                warnings.simplefilter("ignore", FutureWarning)
                hd = float(compute_hausdorff_distance(pred[:, r : r + 1], true[:, r : r + 1], include_background=True,
                                                      percentile=95, spacing=[list(map(float, spacing))])[0, 0])
        out[name] = {"dice": float(dice[r]), "hd95": hd}
    return out


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
    for case in per_case.values():
        for region, metrics in case.items():
            for metric in metrics:
                summary.setdefault(region, {})
    for region in summary:
        for metric in ("dice", "hd95"):
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
