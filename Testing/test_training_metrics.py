"""Lesion-wise Dice/HD95 (BraTS 2023 style) and the BraTS conventions for empty masks."""

from __future__ import annotations

import numpy as np
import pytest

from SymmetryAwareTraining.metrics import (HD95_EMPTY, LESION_HD95_MISS, case_metrics, false_positive_ml, hd95,
                                           lesion_wise_metrics, summarise)

SHAPE = (40, 40, 20)


def _cube(mask, corner, size):
    x, y, z = corner
    mask[x : x + size, y : y + size, z : z + size] = True
    return mask


def test_hd95_conventions_for_empty_masks():
    empty = np.zeros(SHAPE, bool)
    lesion = _cube(np.zeros(SHAPE, bool), (5, 5, 5), 4)
    assert hd95(empty, empty) == 0.0
    assert hd95(empty, lesion) == HD95_EMPTY == 373.13
    assert hd95(lesion, empty) == HD95_EMPTY
    shifted = _cube(np.zeros(SHAPE, bool), (7, 5, 5), 4)
    assert hd95(shifted, lesion, spacing=(3.0, 1.0, 1.0)) == pytest.approx(6.0)  # 2 voxels along x at 3 mm


def test_false_positive_ml_counts_only_voxels_outside_the_truth():
    truth = _cube(np.zeros(SHAPE, bool), (5, 5, 5), 4)            # 64 voxels
    pred = _cube(truth.copy(), (20, 20, 5), 2)                       # truth + 8 voxels elsewhere
    assert false_positive_ml(pred, truth, (1.0, 1.0, 1.0)) == pytest.approx(8 / 1000)
    assert false_positive_ml(pred, truth, (2.0, 1.5, 1.0)) == pytest.approx(8 * 3.0 / 1000)
    assert false_positive_ml(truth, truth, (1.0, 1.0, 1.0)) == 0.0  # a perfect mask claims no healthy tissue
    assert false_positive_ml(np.zeros(SHAPE, bool), truth, (1.0, 1.0, 1.0)) == 0.0  # misses are not false positives


def test_lesion_wise_counts_misses_and_false_positives():
    truth = _cube(np.zeros(SHAPE, bool), (2, 2, 2), 5)     # lesion A (125 voxels)
    _cube(truth, (25, 25, 10), 5)                             # lesion B
    pred = _cube(np.zeros(SHAPE, bool), (2, 2, 2), 5)       # A found exactly
    _cube(pred, (30, 2, 2), 4)                                # a false positive far from both
    m = lesion_wise_metrics(pred, truth)
    # A: Dice 1 / HD95 0; B missed: 0 / 374; false positive: 0 / 374 -> means over 3.
    assert m["lesions"] == 2 and m["detected"] == 1 and m["false_positives"] == 1
    assert m["lesion_dice"] == pytest.approx(1 / 3)
    assert m["lesion_hd95"] == pytest.approx(2 * LESION_HD95_MISS / 3)
    # Region-wise Dice of the same masks is much kinder: lesion-wise scores each lesion.
    whole = case_metrics(pred[None], truth[None], names=("ET",))["ET"]
    assert whole["dice"] == pytest.approx(2 * 125 / (250 + 125 + 64))
    assert whole["lesion_dice"] == pytest.approx(m["lesion_dice"])


def test_lesion_wise_matches_through_the_dilation_and_ignores_tiny_lesions():
    truth = _cube(np.zeros(SHAPE, bool), (10, 10, 5), 5)
    # A prediction split in two parts, one touching the lesion, one 2 voxels away from it:
    # both are matched to the lesion (3 mm dilation at 1 mm), none is a false positive.
    pred = _cube(np.zeros(SHAPE, bool), (10, 10, 5), 3)
    _cube(pred, (17, 10, 5), 2)
    m = lesion_wise_metrics(pred, truth)
    assert m["false_positives"] == 0 and m["detected"] == 1
    assert m["lesion_dice"] == pytest.approx(2 * 27 / (125 + 27 + 8))
    # At 3 mm the same gap is 6 mm: beyond the dilation, so the far part is a false positive.
    coarse = lesion_wise_metrics(pred, truth, spacing=(3.0, 3.0, 3.0))
    assert coarse["false_positives"] == 1
    # A true lesion under 50 mm^3 does not count, nor does a prediction of it.
    tiny = _cube(np.zeros(SHAPE, bool), (30, 30, 10), 3)  # 27 voxels
    assert lesion_wise_metrics(np.zeros(SHAPE, bool), tiny) == {
        "lesion_dice": 1.0, "lesion_hd95": 0.0, "lesions": 0, "detected": 0, "false_positives": 0}
    assert lesion_wise_metrics(tiny, tiny)["false_positives"] == 0


def test_lesion_wise_empty_conventions():
    empty = np.zeros(SHAPE, bool)
    lesion = _cube(np.zeros(SHAPE, bool), (5, 5, 5), 5)
    assert lesion_wise_metrics(empty, empty)["lesion_dice"] == 1.0
    missed = lesion_wise_metrics(empty, lesion)
    assert (missed["lesion_dice"], missed["lesion_hd95"]) == (0.0, LESION_HD95_MISS)
    spurious = lesion_wise_metrics(lesion, empty)
    assert (spurious["lesion_dice"], spurious["lesion_hd95"], spurious["false_positives"]) == (0.0, LESION_HD95_MISS, 1)


def test_summary_covers_lesion_metrics():
    lesion = _cube(np.zeros(SHAPE, bool), (5, 5, 5), 5)
    per_case = {"a": case_metrics(lesion[None], lesion[None], names=("WT",)),
                "b": case_metrics(np.zeros((1, *SHAPE), bool), lesion[None], names=("WT",))}
    s = summarise(per_case)["WT"]
    assert s["dice_mean"] == pytest.approx(0.5) and s["lesion_dice_mean"] == pytest.approx(0.5)
    assert s["hd95_mean"] == pytest.approx(HD95_EMPTY / 2) and s["dice_n"] == 2
