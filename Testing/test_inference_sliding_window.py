"""Mirror-paired sliding window: pairing, encoding each crop once, blending, padding, TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from SymmetryAwareCore.geometry.mirror import extract_counterpart, flip_lr
from SymmetryAwareCore.inference.hemispheric import token_grid
from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window
from SymmetryAwareCore.inference.window_grid import axis_starts, mirror_pairs, padding_for_roi, window_starts


class PairModel(nn.Module):
    """Test double of the SASwinUNETR contract.

    The encoder is one 3x3x3 convolution; the hidden states are ``[input, conv(input)]``,
    so the head can record exactly which voxels it was given as the window and as the
    counterpart. The head concatenates window and counterpart features (the pairing under
    test) and mixes them with a 1x1x1 convolution. With ``lr_symmetric`` the convolution
    kernels are made mirror-symmetric along x, so the whole model is left-right
    equivariant. Attention: token features are the 32^3 means of the conv features.
    """

    def __init__(self, in_channels=1, out_channels=3, features=4, heads=2, lr_symmetric=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Conv3d(in_channels, features, 3, padding=1)
        self.head = nn.Conv3d(2 * features, out_channels, 1)
        if lr_symmetric:
            with torch.no_grad():
                self.encoder.weight.copy_((self.encoder.weight + self.encoder.weight.flip(2)) / 2)
        self.heads = heads
        self.encoded = []  # every crop given to forward_features
        self.paired = []  # (window crop, counterpart crop) of every head sample

    def forward_features(self, x):
        self.encoded.extend(x[i].clone() for i in range(x.shape[0]))
        return [x, self.encoder(x)]

    def forward_head(self, features, features_counterpart, return_attention=False):
        for i in range(features[0].shape[0]):
            self.paired.append((features[0][i].clone(), features_counterpart[0][i].clone()))
        logits = self.head(torch.cat([features[1], features_counterpart[1]], dim=1))
        if not return_attention:
            return logits
        q = F.avg_pool3d(features[1], 32).flatten(2).transpose(1, 2)  # (B, N, F), row-major x, y, z
        k = F.avg_pool3d(features_counterpart[1], 32).flatten(2).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(1, 2), dim=-1)
        return logits, att[:, None].expand(-1, self.heads, -1, -1)


class ConstantModel(nn.Module):
    """Logits ``[0, 1, 2...]`` everywhere; attention chosen by ``attention``."""

    def __init__(self, out_channels=2, attention="identity"):
        super().__init__()
        self.out_channels = out_channels
        self.attention = attention
        self.calls = 0

    def forward_features(self, x):
        self.calls += x.shape[0]
        return [x]

    def forward_head(self, features, features_counterpart, return_attention=False):
        x = features[0]
        values = torch.arange(self.out_channels, dtype=x.dtype).view(1, -1, 1, 1, 1)
        logits = values.expand(x.shape[0], -1, *x.shape[2:]).clone()
        if not return_attention:
            return logits
        n = int(np.prod(token_grid(x.shape[2:])))
        if self.attention == "identity":
            att = torch.eye(n)
        elif self.attention == "uniform":
            att = torch.full((n, n), 1.0 / n)
        else:  # each query looks at the key one step further right along x, or itself at the edge
            grid = token_grid(x.shape[2:])
            idx = torch.arange(n).view(grid)
            target = torch.cat([idx[1:], idx[-1:]], dim=0).flatten()
            att = F.one_hot(target, n).float()
        return logits, att.expand(x.shape[0], 2, n, n)


def _asymmetric_volume(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("size,roi,step", [(45, 16, 8), (64, 16, 12), (33, 32, 16), (32, 32, 16), (200, 96, 48), (17, 4, 1), (155, 96, 48)])
@pytest.mark.parametrize("closed", [True, False])
def test_axis_starts_cover_and_are_mirror_closed_on_request(size, roi, step, closed):
    starts = axis_starts(size, roi, step, mirror_closed=closed)
    if closed:
        assert set(starts) == {size - roi - a for a in starts}
    assert starts[0] == 0 and starts[-1] == size - roi
    assert max(np.diff(starts), default=0) <= step
    covered = np.zeros(size, bool)
    for a in starts:
        covered[a : a + roi] = True
    assert covered.all()


def test_grid_matches_monai_count_off_the_lr_axis():
    from monai.data.utils import dense_patch_slices

    shape, roi = (240, 240, 155), (96, 96, 96)
    # monai's scan interval is int(roi * (1 - overlap)), as scan_step here.
    monai = dense_patch_slices(shape, roi, (48, 48, 48))
    assert len(window_starts(shape, roi, 0.5)) == len(monai)
    assert len(axis_starts(155, 96, 48, mirror_closed=True)) == 4  # closure costs a window here
    assert len(axis_starts(155, 96, 48, mirror_closed=False)) == 3


def test_padding_keeps_lr_sides_equal():
    pads = padding_for_roi((27, 20, 40), (32, 32, 32))
    assert pads[0][0] == pads[0][1] and sum(pads[0]) >= 5  # odd 5 -> 6 so both sides match
    assert sum(pads[1]) == 12 and pads[2] == (0, 0)


def test_mirror_pairs_rejects_open_grid():
    with pytest.raises(ValueError, match="not mirror-closed"):
        mirror_pairs([(0, 0, 0)], (16, 16, 16), (40, 16, 16))


@pytest.mark.parametrize("tta", [False, True])
def test_every_window_meets_its_own_counterpart(tta):
    volume = _asymmetric_volume((1, 45, 36, 36))
    roi = (16, 16, 16)
    model = PairModel()
    result = mirror_paired_sliding_window(volume, model, roi, overlap=0.5, sw_batch_size=5, tta_flip=tta)
    vol = torch.from_numpy(volume)
    flipped = flip_lr(vol, 1)
    by_data = {}
    for view in (vol, flipped):
        for s in result.windows:
            crop = view[(slice(None),) + tuple(slice(a, a + r) for a, r in zip(s, roi))]
            by_data[crop.numpy().tobytes()] = (view, s)
    assert len(model.paired) == len(result.windows) * (2 if tta else 1)
    seen = set()
    for patch, counterpart in model.paired:
        view, start = by_data[patch.numpy().tobytes()]
        assert view is vol or tta  # the flipped volume only appears with TTA
        expected = extract_counterpart(view, start, roi, spatial_start=1)
        assert torch.equal(counterpart, expected)
        assert not torch.equal(counterpart, flip_lr(patch, 1))
        seen.add((view is vol, start))
    assert len(seen) == len(model.paired)  # each window (and view) headed exactly once


@pytest.mark.parametrize("tta", [False, True])
def test_each_distinct_crop_encoded_once(tta):
    volume = _asymmetric_volume((1, 45, 30, 20))
    model = PairModel()
    result = mirror_paired_sliding_window(volume, model, (16, 16, 16), overlap=0.25, sw_batch_size=3, tta_flip=tta)
    # Each window and each window's (flipped) counterpart, nothing else: TTA adds no encoding.
    assert len(model.encoded) == result.n_encoded == 2 * result.n_windows
    assert len({c.numpy().tobytes() for c in model.encoded}) == len(model.encoded)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_constant_model_gives_constant_output(mode):
    model = ConstantModel(out_channels=3)
    result = mirror_paired_sliding_window(np.zeros((2, 50, 41, 37), np.float32), model, (16, 16, 16), 0.5, 4, mode=mode)
    assert result.logits.shape == (3, 50, 41, 37) and result.logits.dtype == torch.float32
    for c in range(3):
        torch.testing.assert_close(result.logits[c], torch.full((50, 41, 37), float(c)))


def test_small_volume_is_padded_symmetrically_and_cropped_back():
    volume = _asymmetric_volume((1, 27, 20, 35))
    model = PairModel()
    result = mirror_paired_sliding_window(volume, model, (32, 32, 32), overlap=0.5, sw_batch_size=2)
    assert result.logits.shape == (3, 27, 20, 35)
    assert result.padding[0] == (3, 3)
    # The padded volume's mirror is the input's mirror: the window's counterpart is the
    # flipped padded volume, whose centre crop is flip(input).
    patch, counterpart = model.paired[0]
    px = result.padding[0][0]
    body = counterpart[:, px : px + 27, result.padding[1][0] : result.padding[1][0] + 20]
    start_z = result.windows[0][2]
    expected = flip_lr(torch.from_numpy(volume), 1)[..., start_z : start_z + 32]
    torch.testing.assert_close(body, expected)


def test_tta_is_exact_for_an_lr_equivariant_model_and_changes_others():
    volume = _asymmetric_volume((1, 46, 24, 20), seed=3)
    kwargs = dict(roi_size=(16, 16, 16), overlap=0.5, sw_batch_size=4)
    sym = PairModel(lr_symmetric=True)
    plain = mirror_paired_sliding_window(volume, sym, **kwargs).logits
    tta = mirror_paired_sliding_window(volume, sym, tta_flip=True, **kwargs).logits
    torch.testing.assert_close(tta, plain, atol=1e-5, rtol=1e-5)
    asym = PairModel(lr_symmetric=False)
    plain = mirror_paired_sliding_window(volume, asym, **kwargs).logits
    tta = mirror_paired_sliding_window(volume, asym, tta_flip=True, **kwargs).logits
    assert (tta - plain).abs().max() > 1e-3
    # TTA of the flipped volume is the flip of TTA of the volume.
    tta_of_flip = mirror_paired_sliding_window(np.ascontiguousarray(volume[:, ::-1]), asym, tta_flip=True, **kwargs)
    torch.testing.assert_close(flip_lr(tta_of_flip.logits, 1), tta, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention,expected", [("identity", 1.0), ("uniform", 1.0 / 8)])
def test_hemispheric_attention_levels(attention, expected):
    model = ConstantModel(attention=attention)
    result = mirror_paired_sliding_window(
        np.zeros((1, 80, 64, 64), np.float32), model, (64, 64, 64), 0.5, 2, return_attention=True, tta_flip=True,
        attention_radius=0,  # the mirror token only: 2x2x2 tokens, radius 1 would hold them all
    )
    assert result.attention.shape == (80, 64, 64)
    torch.testing.assert_close(result.attention, torch.full((80, 64, 64), expected))


def test_hemispheric_attention_is_located_and_flipped_back_with_tta():
    # Queries in the right half of the token grid (x index 1) attend to themselves, the
    # left half (x index 0) looks elsewhere: focus 1 on the right half of each window, 0
    # on the left. With one window covering the volume, TTA averages that with its mirror.
    model = ConstantModel(attention="shifted")
    volume = np.zeros((1, 64, 64, 64), np.float32)
    plain = mirror_paired_sliding_window(volume, model, (64, 64, 64), 0.5, 1, return_attention=True, attention_radius=0).attention
    assert plain[:8].max() < 0.01 and plain[-8:].min() > 0.99
    both = mirror_paired_sliding_window(
        volume, model, (64, 64, 64), 0.5, 1, return_attention=True, tta_flip=True, attention_radius=0
    )
    torch.testing.assert_close(both.attention, torch.full((64, 64, 64), 0.5))


def test_progress_and_real_attention_shapes():
    calls = []
    model = PairModel()
    result = mirror_paired_sliding_window(
        _asymmetric_volume((1, 70, 64, 64)), model, (64, 64, 64), 0.5, 2, return_attention=True,
        progress=lambda done, total: calls.append((done, total)),
    )
    total = result.n_windows
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert result.attention.min() >= 0 and result.attention.max() <= 1


def test_bad_arguments():
    model = ConstantModel()
    with pytest.raises(ValueError, match="left-right"):
        mirror_paired_sliding_window(np.zeros((8, 8, 8)), model, (4, 4, 4))
    with pytest.raises(ValueError, match="overlap"):
        mirror_paired_sliding_window(np.zeros((1, 8, 8, 8)), model, (4, 4, 4), overlap=1.0)
    with pytest.raises(ValueError, match="sw_batch_size"):
        mirror_paired_sliding_window(np.zeros((1, 8, 8, 8)), model, (4, 4, 4), sw_batch_size=0)


class NoAttentionModel(ConstantModel):
    """A head that answers ``(logits, None)`` even when attention is asked for."""

    def forward_head(self, features, features_counterpart, return_attention=False):
        return super().forward_head(features, features_counterpart), None


def test_missing_attention_is_an_error():
    with pytest.raises(ValueError, match="returned no attention"):
        mirror_paired_sliding_window(np.zeros((1, 64, 64, 64), np.float32), NoAttentionModel(), (64, 64, 64), return_attention=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_float16():
    volume = _asymmetric_volume((1, 45, 36, 36))
    cpu = mirror_paired_sliding_window(volume, PairModel(), (16, 16, 16), 0.5, 4).logits
    gpu = mirror_paired_sliding_window(
        volume, PairModel().cuda(), (16, 16, 16), 0.5, 4, device="cuda", amp_dtype=torch.float16
    ).logits
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("pairing", ["input", "mirror-pair"])
def test_the_blend_stays_on_the_device_one_copy_to_the_host(monkeypatch, pairing):
    # On a GPU every host copy is a synchronisation: the windows' logits are blended where the
    # model ran and the result crosses to the host once (as MONAI's sliding_window_inference).
    volume = _asymmetric_volume((1, 45, 36, 36))
    expected = mirror_paired_sliding_window(volume, PairModel(), (16, 16, 16), 0.5, 4, pairing=pairing)
    calls = []
    real = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    result = mirror_paired_sliding_window(volume, PairModel(), (16, 16, 16), 0.5, 4, pairing=pairing)
    assert expected.n_windows > 8 and calls == [tuple(result.logits.shape)]
    torch.testing.assert_close(result.logits, expected.logits, rtol=0, atol=0)


def test_cpu_bfloat16_autocast_returns_float32_close_to_full_precision():
    volume = _asymmetric_volume((1, 40, 20, 16))
    full = mirror_paired_sliding_window(volume, PairModel(), (16, 16, 16), 0.5, 4).logits
    half = mirror_paired_sliding_window(volume, PairModel(), (16, 16, 16), 0.5, 4, amp_dtype=torch.bfloat16).logits
    assert half.dtype == torch.float32 and not torch.equal(half, full)  # autocast really ran
    torch.testing.assert_close(half, full, atol=0.1, rtol=0.05)


class TrimmedPairModel(PairModel):
    """Says its head reads only hidden state 1 of the counterpart (as SASwinUNETR does)."""

    counterpart_feature_indices = (1,)

    def forward_head(self, features, features_counterpart, return_attention=False):
        self.saw_trimmed = features_counterpart[0] is None
        logits = self.head(torch.cat([features[1], features_counterpart[1]], dim=1))
        return logits


@pytest.mark.parametrize("tta", [False, True])
def test_counterpart_only_crops_keep_only_what_the_head_reads(tta):
    volume = _asymmetric_volume((1, 40, 20, 16))
    reference = mirror_paired_sliding_window(volume, PairModel(), (16, 16, 16), 0.5, 3, tta_flip=tta).logits
    trimmed = TrimmedPairModel()
    logits = mirror_paired_sliding_window(volume, trimmed, (16, 16, 16), 0.5, 3, tta_flip=tta).logits
    torch.testing.assert_close(logits, reference)
    assert trimmed.saw_trimmed == (not tta)  # with TTA counterpart crops also serve as windows
