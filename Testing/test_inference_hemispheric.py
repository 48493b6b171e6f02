"""Hemispheric maps: mirror-token attention focus, foreground probability, signed asymmetry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SymmetryAwareCore.geometry.mirror import flip_lr
from SymmetryAwareCore.inference.hemispheric import (
    foreground_probability,
    mirror_token_focus,
    signed_asymmetry,
    token_grid,
)
from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window


def test_token_grid():
    assert token_grid((96, 64, 128)) == (3, 2, 4)
    with pytest.raises(ValueError, match="smaller than the token stride"):
        token_grid((16, 64, 64))


def test_mirror_focus_counts_the_neighbourhood():
    grid = (3, 3, 3)
    uniform = torch.full((2, 4, 27, 27), 1.0 / 27)
    focus = mirror_token_focus(uniform, grid, radius=1)
    assert focus.shape == (2, 3, 3, 3)
    assert focus[0, 1, 1, 1] == pytest.approx(1.0)  # the centre's neighbourhood is everything
    assert focus[0, 0, 0, 0] == pytest.approx(8 / 27)  # a corner has 2x2x2 neighbours
    assert focus[1, 0, 1, 2] == pytest.approx(12 / 27)
    identity = torch.eye(27).expand(1, 2, 27, 27)
    assert torch.allclose(mirror_token_focus(identity, grid, radius=0), torch.ones(1, 3, 3, 3))
    # Heads are averaged: one head on the mirror token, one elsewhere.
    mixed = torch.stack([torch.eye(27), torch.eye(27).roll(1, dims=1)])[None]
    assert torch.allclose(mirror_token_focus(mixed, grid), torch.full((1, 3, 3, 3), 0.5))
    with pytest.raises(ValueError, match="token grid"):
        mirror_token_focus(uniform, (2, 2, 2))


def test_foreground_probability():
    logits = np.zeros((3, 2, 1, 1), np.float32)
    logits[0, 0] = 10.0  # background wins at voxel 0
    logits[2, 1] = 10.0  # label 2 wins at voxel 1
    p = foreground_probability(logits)
    assert p.shape == (2, 1, 1) and p[0, 0, 0] < 0.01 and p[1, 0, 0] > 0.99
    s = foreground_probability(np.full((2, 2, 1, 1), -10.0, np.float32), activation="sigmoid")
    assert s.max() < 0.01
    with pytest.raises(ValueError, match="activation"):
        foreground_probability(logits, activation="relu")


def test_signed_asymmetry_marks_the_lesion_side():
    p = np.zeros((10, 4, 4), np.float32)
    p[2, 1, 1] = 0.9  # left of the centre plane (x = 4.5)
    p[7, 1, 1] = 0.2  # the mirror voxel of the lesion (10 - 1 - 2)
    a = signed_asymmetry(p)
    assert a[2, 1, 1] == pytest.approx(0.7) and a[7, 1, 1] == pytest.approx(-0.7)
    np.testing.assert_allclose(a, -flip_lr(a))
    assert np.count_nonzero(a) == 2


def test_pairing_on_a_real_aligned_brain_sees_only_the_lesion(mni_t1):
    """A head that subtracts the counterpart from the window returns V - mirror(V) exactly.

    The MNI 2009a symmetric template is aligned (its plane x = 0 is the centre of axis 0),
    so with a lesion added on one side, the asymmetry lives at the lesion and its mirror.
    """

    class DifferenceModel(torch.nn.Module):
        def forward_features(self, x):
            return [x]

        def forward_head(self, features, features_counterpart, return_attention=False):
            return features[0] - features_counterpart[0]

    # 197 -> 50 columns: original voxels 0, 4, ..., 196, still centred on x = 0 (voxel 98).
    volume = mni_t1.array[::4, ::4, ::4].copy()
    volume[10:16, 30:36, 25:30] += 40.0  # on the left (RAS: small x)
    result = mirror_paired_sliding_window(volume[None], DifferenceModel(), (32, 32, 32), 0.25, 3)
    expected = torch.from_numpy(volume - volume[::-1])
    torch.testing.assert_close(result.logits[0], expected, atol=1e-3, rtol=1e-5)
    asym = result.logits[0].numpy()
    assert asym[10:16, 30:36, 25:30].mean() > 30.0
    assert asym[-16:-10, 30:36, 25:30].mean() < -30.0
