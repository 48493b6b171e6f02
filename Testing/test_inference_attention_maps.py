"""Attention maps from collected SACA attention: point attention mass, token layout, blending.

Built on hand-made attention (no network), so the expected maps are known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SymmetryAwareCore.inference.attention_maps import (
    AttentionWindows,
    WindowAttention,
    chance_focus,
    flip_token_layout,
    head_mask,
    mirror_focus_map,
    point_attention_map,
)
from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window


def _random_rows(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3.0 * torch.randn(n, n, generator=g), dim=-1)


def _windows(shape, roi, stride, starts, weights, padding=((0, 0),) * 3) -> AttentionWindows:
    padded = tuple(n + b + a for n, (b, a) in zip(shape, padding))
    return AttentionWindows(
        tuple(roi), stride, None, padded, [tuple(p) for p in padding],
        [WindowAttention(tuple(s), w) for s, w in zip(starts, weights)],
    )  # fmt: skip


def test_point_attention_integrates_to_one_over_the_counterpart():
    # 96 wide, 64^3 windows at x = 0 and 32 (mirror-closed), y = 0 and 16: 2x2x2 tokens of 32.
    shape, roi = (96, 80, 64), (64, 64, 64)
    starts = [(x, y, 0) for x in (0, 32) for y in (0, 16)]
    att = _windows(shape, roi, 32, starts, [_random_rows(8, i) for i in range(4)])
    for voxel in [(5, 40, 10), (50, 70, 63), (95, 0, 0)]:
        point = point_attention_map(att, voxel)
        assert point.mass.shape == shape and point.mass.min() >= 0
        assert point.mass.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
        assert point.share_outside == pytest.approx(0.0, abs=1e-5)
        assert point.mirror_voxel == (95 - voxel[0], voxel[1], voxel[2])
    # Only the windows that hold the voxel count: (5, 40, 10) is in x-window 0 only, whose
    # counterpart (the mirror box) is x in [32, 96).
    assert point_attention_map(att, (5, 40, 10)).mass[:32].sum() == 0
    with pytest.raises(ValueError, match="outside"):
        point_attention_map(att, (96, 0, 0))


def test_point_attention_of_identity_attention_lands_on_the_mirror_token():
    shape, roi = (96, 64, 64), (64, 64, 64)
    att = _windows(shape, roi, 32, [(0, 0, 0), (32, 0, 0)], [torch.eye(8), torch.eye(8)])
    point = point_attention_map(att, (5, 40, 10))
    # Query token (0, 1, 0) of window x=0 looks at its own mirror token: the mirror box's
    # x [64, 96) (the flip of counterpart token 0), y [32, 64), z [0, 32), evenly.
    block = point.mass[64:96, 32:64, 0:32]
    assert block.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(block, 1.0 / 32**3, rtol=1e-5)
    assert point.mass[point.mirror_voxel] > 0


def test_point_attention_on_padding_is_reported():
    # A 48-wide volume padded by 8 on each side to one 64^3 window.
    att = _windows((48, 64, 64), (64, 64, 64), 32, [(0, 0, 0)], [_random_rows(8, 3)], padding=((8, 8), (0, 0), (0, 0)))
    point = point_attention_map(att, (3, 3, 3))
    assert point.share_outside > 0.01
    assert point.mass.sum(dtype=np.float64) + point.share_outside == pytest.approx(1.0, abs=1e-5)


def test_flip_token_layout_flips_queries_and_keys_along_x():
    grid = (2, 3, 2)
    a = _random_rows(12, 5)
    flipped = flip_token_layout(a, grid)
    index = lambda i, j, k: (i * 3 + j) * 2 + k
    assert flipped[index(0, 2, 1), index(1, 0, 0)] == a[index(1, 2, 1), index(0, 0, 0)]
    torch.testing.assert_close(flip_token_layout(flipped, grid), a)
    torch.testing.assert_close(flip_token_layout(torch.eye(12), grid), torch.eye(12))


def test_mirror_focus_is_masked_and_chance_level_is_stated():
    att = _windows((64, 64, 64), (64, 64, 64), 16, [(0, 0, 0)], [torch.full((64, 64), 1.0 / 64)])
    assert chance_focus((4, 4, 4), 1) == pytest.approx(27 / 64)
    volume = np.zeros((2, 64, 64, 64), np.float32)
    volume[1, 10:50, 10:50, 10:50] = 1.0
    mask = head_mask(volume)
    focus = mirror_focus_map(att, radius=1, mask=mask)
    assert np.all(focus[~mask] == 0)
    # Uniform attention: 27/64 inside, less where the block is cut by the window's edge.
    assert focus[32, 32, 32] == pytest.approx(27 / 64, rel=1e-5)
    assert focus[mask].min() >= 8 / 64 - 1e-6 and focus.max() <= 27 / 64 + 1e-6
    with pytest.raises(ValueError, match="mask shape"):
        mirror_focus_map(att, mask=mask[:10])


class WindowContentModel(torch.nn.Module):
    """A head whose attention is the identity in bright windows and uniform elsewhere, so
    each window's mirror focus is one constant (1 or 1/8): only blending can hide seams."""

    def forward_features(self, x):
        return [x]

    def forward_head(self, features, features_counterpart, return_attention=False):
        x = features[0]
        logits = torch.zeros((x.shape[0], 2) + tuple(x.shape[2:]))
        bright = x.mean(dim=(1, 2, 3, 4)) > 0.5
        eye, flat = torch.eye(8), torch.full((8, 8), 1.0 / 8)
        attention = torch.stack([eye if b else flat for b in bright])[:, None]
        return (logits, attention) if return_attention else logits


def test_window_seams_are_blended_away():
    # Windows along y start at 0 and 32 (96 long): the upper one is bright, the lower dark.
    volume = np.zeros((1, 64, 96, 64), np.float32)
    volume[:, :, 60:] = 2.0
    result = mirror_paired_sliding_window(
        volume, WindowContentModel(), (64, 64, 64), overlap=0.5, return_attention=True, attention_radius=0
    )
    profile = result.attention[32, :, 32].numpy()
    assert profile[:10].max() == pytest.approx(1 / 8, abs=1e-3) and profile[-10:].min() == pytest.approx(1.0, abs=1e-3)
    # A hard seam would jump by 7/8 at one voxel; the Gaussian blend spreads it over ~20 voxels.
    steps = np.abs(np.diff(profile))
    assert steps.max() < 0.15 and (steps > 0.01).sum() >= 10
    windows = result.attention_windows
    assert len(windows.windows) == result.n_windows and windows.stride == 32 and windows.grid == (2, 2, 2)


def test_overview_gets_a_row_per_map(subject_t1, tmp_path):
    from PIL import Image as PILImage

    from SymmetryAwareCore.inference.overview import write_overview_png

    labels = np.zeros(subject_t1.spatial_shape, np.uint8)
    labels[3:7, 18:24, 16:20] = 1
    focus = np.random.default_rng(0).random(subject_t1.spatial_shape).astype(np.float32)
    plain = write_overview_png(subject_t1, labels, tmp_path / "plain.png", dpi=30)
    with_maps = write_overview_png(subject_t1, labels, tmp_path / "maps.png", dpi=30, maps={"mirror focus": focus})
    assert PILImage.open(with_maps).size[1] == 2 * PILImage.open(plain).size[1]
