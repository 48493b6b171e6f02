"""Benchmarks/heldout_glioma.py: per-case scores read from files on the truth's own grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import import_benchmark


@pytest.fixture(scope="module")
def bench():
    return import_benchmark("heldout_glioma")


def _write(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(path))
    return path


def test_scores_count_false_positives_in_ml_on_an_oblique_grid(bench, tmp_path):
    # 2 x 1.5 x 1 mm voxels, rotated 30 degrees about z and shifted: spacing comes from the affine's columns.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([2.0, 1.5, 1.0])
    affine[:3, 3] = (-12.0, 7.0, 3.0)
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[5:9, 5:9, 5:9] = 2          # oedema: WT only, 64 voxels
    pred = truth.copy()
    pred[15:17, 15:17, 15:17] = 2     # 8 voxels of healthy tissue marked as oedema
    m = bench._scores(_write(tmp_path / "pred.nii.gz", pred, affine), _write(tmp_path / "truth.nii.gz", truth, affine))
    assert m["WT"]["dice"] == pytest.approx(2 * 64 / (72 + 64))
    assert m["WT"]["false_positive_ml"] == pytest.approx(8 * 3.0 / 1000)


def test_scores_refuse_a_prediction_off_the_truth_grid(bench, tmp_path):
    labels = np.zeros((8, 8, 8), np.uint8)
    truth = _write(tmp_path / "truth.nii.gz", labels, np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    with pytest.raises(SystemExit, match="not on the grid"):
        bench._scores(_write(tmp_path / "pred.nii.gz", labels, shifted), truth)
