"""The simulated user: where a careful annotator would click next (numpy, scipy).

The one clicker of the project: training (:mod:`SymmetryAwareTraining.tasks`, the
``finetune-interactive`` task), the tests and ``Benchmarks/interactive_benchmark.py`` all
call :func:`next_click`. The protocol is the standard one of interactive-segmentation
benchmarks (Xu et al. 2016; Sofiiuk et al. 2022; nnInteractive's evaluation):

- the first click (nothing predicted yet) is positive, at the object's deepest interior
  point: the maximum of the Euclidean distance transform of the object;
- every later click goes to the largest error component (6-connected) of the current
  prediction, at its deepest point (the maximum of the distance transform of that
  component), positive when the component is missed object (false negative), negative
  when it is a false positive.

Distances are in voxels, with the given voxel spacing (anisotropic grids), and the array
border counts as background, so a component touching the border is not "deep" there.
Ties go to the first voxel in C order, so the clicker is deterministic.

MONAI's DeepEdit transforms (``AddInitialSeedPointMissingLabelsd``,
``AddGuidanceFromDiscrepancyd``-style ``FindDiscrepancyRegionsDeepEditd`` /
``AddRandomGuidanceDeepEditd``) were considered: they draw clicks at random, weighted by
the distance transform, from the whole discrepancy map rather than at the centre of the
largest error component, and work on dictionaries of named labels; the deterministic rule
above is what the NoC figures of the field use, so it is written here with
``scipy.ndimage`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import scipy.ndimage as ndi

__all__ = ["Click", "deepest_point", "next_click", "dice"]


@dataclass(frozen=True)
class Click:
    """A simulated click: voxel ``(i, j, k)`` of the array it was computed on, positive or not."""

    voxel: Tuple[int, int, int]
    positive: bool


def deepest_point(region: np.ndarray, spacing: Optional[Sequence[float]] = None) -> Tuple[int, int, int]:
    """The voxel of boolean ``region`` farthest from its boundary (and from the array border)."""
    padded = np.pad(np.asarray(region, bool), 1)
    distance = ndi.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(distance)), distance.shape))


def next_click(prediction: Optional[np.ndarray], truth: np.ndarray,
               spacing: Optional[Sequence[float]] = None) -> Optional[Click]:
    """The next simulated click for ``prediction`` against ``truth`` (both ``(X, Y, Z)``, nonzero = object).

    ``prediction`` None (or empty) with a non-empty ``truth``: the first click, inside the
    object. Returns None when there is nothing to correct (prediction equals truth).
    """
    truth = np.asarray(truth) > 0
    pred = np.zeros_like(truth) if prediction is None else np.asarray(prediction) > 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    missed, extra = truth & ~pred, pred & ~truth
    best = None  # (size, positive, component mask)
    for error, positive in ((missed, True), (extra, False)):
        if not error.any():
            continue
        components, count = ndi.label(error)
        sizes = np.bincount(components.ravel())[1:]
        k = int(np.argmax(sizes))
        # Misses first on a tie: a user fixes a missed lesion before trimming a false positive.
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), positive, components == k + 1)
    if best is None:
        return None
    return Click(deepest_point(best[2], spacing), best[1])


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    a, b = np.asarray(prediction) > 0, np.asarray(truth) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
