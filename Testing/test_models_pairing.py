"""Pairing of SA-Swin (docs/pairing.md): the ``mirror-pair`` forward, its training task and
its sliding window, against straightforward references; ``input`` stays as it was.

Small networks (feature size 12, one block per stage) on 64^3 crops keep the file within
seconds on 2 shared cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from monai.data.utils import compute_importance_map

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry.mirror import extract_counterpart, flip_lr
from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window
from SymmetryAwareCore.inference.window_grid import counterpart_start, window_starts
from SymmetryAwareCore.models import PAIRINGS, SASwinUNETR

SMALL = dict(feature_size=12, depths=(1, 1, 1, 1))


def _net(pairing="input", seed=0, **kwargs):
    torch.manual_seed(seed)
    return SASwinUNETR(2, 3, pairing=pairing, **SMALL, **kwargs)


class CountingEncoder:
    """Counts the calls of a network's Swin encoder and the crops it was given."""

    def __init__(self, net):
        self.calls, self.crops = 0, 0
        net.swinViT.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        self.crops += args[0].shape[0]


# --- the network -------------------------------------------------------------------------

def test_pairing_defaults_to_input_and_is_checked():
    assert PAIRINGS == ("input", "mirror-pair")
    assert SASwinUNETR(1, 2, feature_size=12).pairing == "input"
    assert SASwinUNETR(1, 2, feature_size=12, pairing="mirror-pair").init_kwargs["pairing"] == "mirror-pair"
    with pytest.raises(ValueError, match="pairing must be one of"):
        SASwinUNETR(1, 2, feature_size=12, pairing="mirror")


def test_mirror_pair_forward_is_both_input_forwards_with_one_encoder_call():
    net = _net().eval()
    g = torch.Generator().manual_seed(1)
    x, xc = torch.randn(1, 2, 64, 32, 32, generator=g), torch.randn(1, 2, 64, 32, 32, generator=g)
    counter = CountingEncoder(net)
    with torch.no_grad():
        both = net(x, xc, mirror_pair=True)
        assert (counter.calls, counter.crops) == (1, 2)  # [P; C] once, in one call
        patch, counterpart = net(x, xc), net(xc, x)  # the paper's forward, each way round
    assert counter.calls == 5  # the input forward encodes patch and counterpart apart
    assert both.shape == (2, 3, 64, 32, 32)
    torch.testing.assert_close(both[:1], patch, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[1:], counterpart, atol=1e-5, rtol=1e-4)
    # SACA really reads the other half: a different counterpart changes the patch's logits.
    with torch.no_grad():
        other = net(x, torch.randn(1, 2, 64, 32, 32, generator=g), mirror_pair=True)
    assert (other[:1] - both[:1]).abs().max() > 1e-4


def test_mirror_pair_gradients_reach_every_parameter_and_bad_input():
    net = _net(pairing="mirror-pair", saca_stages=(3, 4))
    x, xc = torch.randn(1, 2, 64, 32, 32), torch.randn(1, 2, 64, 32, 32)
    target = torch.randint(0, 3, (2, 64, 32, 32))
    torch.nn.functional.cross_entropy(net(x, xc, mirror_pair=True), target).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead
    with pytest.raises(ValueError, match="mirror_pair needs x_counterpart"):
        net(x, mirror_pair=True)
    # Without SACA a mirror pair is a batch of 2B crops.
    plain = _net(use_saca=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x, xc, mirror_pair=True), plain(torch.cat([x, xc])))


def test_pairing_travels_in_the_model_card_and_old_cards_stay_input(tmp_path):
    from pathlib import Path

    import SymmetryAwareCore
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, load_model, read_card, save_model

    card = ModelCard(channels=[InputChannel("a"), InputChannel("b")], modality="mri")
    path = save_model(_net(pairing="mirror-pair"), tmp_path / "m.safetensors", card)
    model, card = load_model(path)
    assert model.pairing == card.kwargs["pairing"] == "mirror-pair"
    bundled = Path(SymmetryAwareCore.__file__).parent / "data/models/glioma_phantom_saswin_f12.json"
    assert "pairing" not in read_card(bundled).kwargs  # written before the setting existed
    assert load_model(bundled)[0].pairing == "input"
    raw = path.read_text().replace('"mirror-pair"', '"sideways"')
    path.write_text(raw)
    with pytest.raises(InputError, match="pairing must be one of"):
        load_model(path)


# --- the sliding window --------------------------------------------------------------------

class DoubleModel(nn.Module):
    """A cheap, left-right ASYMMETRIC stand-in of the model contract.

    Encoder: one 3x3x3 convolution (hidden states ``[x, conv(x)]``); head: a 1x1x1
    convolution of window and counterpart features. ``identity`` makes the head return the
    window's own first channel (so the blended output must be the input volume).
    """

    def __init__(self, pairing="mirror-pair", identity=False):
        super().__init__()
        torch.manual_seed(3)
        self.pairing, self.identity = pairing, identity
        self.encoder = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Conv3d(8, 2, 1)
        self.encoded = 0

    def forward_features(self, x):
        self.encoded += x.shape[0]
        return [x, self.encoder(x)]

    def forward_head(self, features, features_counterpart, return_attention=False):
        if self.identity:
            return features[0][:, :1].repeat(1, 2, 1, 1, 1)
        return self.head(torch.cat([features[1], features_counterpart[1]], dim=1))

    def forward(self, x, x_counterpart):
        return self.forward_head(self.forward_features(x), self.forward_features(x_counterpart))


def _reference(volume, model, roi, overlap):
    """Mirror-pair inference written out with one ``model(x, x_counterpart)`` call per view:
    window ``a`` (the one of its pair nearer x = 0, or on the plane) from its own crop with
    its counterpart crop as context; its mirror window ``a'`` from that counterpart crop with
    ``a`` as context, flipped back; Gaussian blending."""
    vol = torch.from_numpy(volume)
    shape = tuple(vol.shape[1:])
    importance = compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=0.125, device="cpu").float()
    out = torch.zeros((2,) + shape)
    weight = torch.zeros(shape)
    for s in window_starts(shape, roi, overlap):
        m = (counterpart_start(s[0], roi[0], shape[0]),) + tuple(s[1:])
        box = (slice(None),) + tuple(slice(a, a + r) for a, r in zip(s, roi))
        views = []
        with torch.no_grad():
            if s[0] <= m[0]:
                views.append(model(vol[box][None], extract_counterpart(vol, s, roi, 1)[None])[0])
            else:
                mbox = (slice(None),) + tuple(slice(a, a + r) for a, r in zip(m, roi))
                views.append(flip_lr(model(extract_counterpart(vol, m, roi, 1)[None], vol[mbox][None])[0], 1))
        out[box] += importance * views[0]
        weight[box[1:]] += importance
    return out / weight


def test_mirror_pair_sliding_window_is_the_reference_at_one_encoder_pass_per_window():
    net = _net(pairing="mirror-pair").eval()
    net.out = nn.Sequential(net.out, nn.Conv3d(3, 2, 1))  # two output channels like the reference
    # Windows at x = 0, 32, 64: a mirror pair and a window on the plane.
    volume = np.random.default_rng(0).standard_normal((2, 128, 32, 32)).astype(np.float32)
    roi = (64, 32, 32)
    reference = _reference(volume, net, roi, 0.5)
    counter = CountingEncoder(net)
    with torch.no_grad():
        result = mirror_paired_sliding_window(volume, net, roi, overlap=0.5, sw_batch_size=2)
    assert result.pairing == "mirror-pair" and result.n_windows == 3
    # One pass per window; the window on the plane is its own mirror and needs its flip too
    # (as context: one head per window).
    assert result.n_encoded == counter.crops == result.n_windows + 1
    torch.testing.assert_close(result.logits, reference, atol=1e-4, rtol=1e-4)
    # The same model with input pairing: two passes per window, and another result.
    counter.crops = 0
    with torch.no_grad():
        paper = mirror_paired_sliding_window(volume, net, roi, overlap=0.5, sw_batch_size=2, pairing="input")
    assert paper.n_encoded == counter.crops == 2 * paper.n_windows
    assert (paper.logits - result.logits).abs().max() > 1e-4


@pytest.mark.parametrize("shape,on_plane", [((1, 45, 36, 20), False), ((1, 46, 30, 20), True)])
def test_mirror_pair_double_matches_reference_and_left_stays_left(shape, on_plane):
    volume = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    roi = (16, 16, 16)
    model = DoubleModel()
    result = mirror_paired_sliding_window(volume, model, roi, overlap=0.5, sw_batch_size=3)
    starts = window_starts(shape[1:], roi, 0.5)
    planes = sum(1 for s in starts if counterpart_start(s[0], roi[0], shape[1]) == s[0])
    assert (planes > 0) == on_plane
    assert result.n_encoded == model.encoded == result.n_windows + planes
    torch.testing.assert_close(result.logits, _reference(volume, model, roi, 0.5), atol=1e-5, rtol=1e-5)
    # Left stays left: a head that returns its own crop gives back the volume itself, so every
    # flipped view was flipped back onto the right window.
    ident = mirror_paired_sliding_window(volume, DoubleModel(identity=True), roi, overlap=0.5, sw_batch_size=3)
    torch.testing.assert_close(ident.logits[0], torch.from_numpy(volume[0]), atol=1e-5, rtol=1e-5)
    # Each pair's two crops serve both of its windows, so without a window on the plane,
    # flipping the volume flips the result exactly, for this asymmetric model; input pairing
    # does not have that property.
    flipped = mirror_paired_sliding_window(np.ascontiguousarray(volume[:, ::-1]), model, roi, 0.5, 3)
    difference = (flip_lr(flipped.logits, 1) - result.logits).abs().max()
    assert difference < 1e-5 if planes == 0 else difference > 1e-3
    paper = mirror_paired_sliding_window(volume, model, roi, 0.5, 3, pairing="input")
    paper_flipped = mirror_paired_sliding_window(np.ascontiguousarray(volume[:, ::-1]), model, roi, 0.5, 3, pairing="input")
    assert (flip_lr(paper_flipped.logits, 1) - paper.logits).abs().max() > 1e-3


def test_mirror_pair_with_tta_is_the_input_path_with_tta_and_model_pairing_is_read():
    volume = np.random.default_rng(2).standard_normal((1, 45, 30, 20)).astype(np.float32)
    kwargs = dict(roi_size=(16, 16, 16), overlap=0.5, sw_batch_size=4, tta_flip=True)
    pair = mirror_paired_sliding_window(volume, DoubleModel("mirror-pair"), **kwargs)
    paper = mirror_paired_sliding_window(volume, DoubleModel("input"), **kwargs)
    assert (pair.pairing, paper.pairing) == ("mirror-pair", "input")
    assert pair.n_encoded == paper.n_encoded == 2 * pair.n_windows
    torch.testing.assert_close(pair.logits, paper.logits)
    with pytest.raises(ValueError, match="pairing must be one of"):
        mirror_paired_sliding_window(volume, DoubleModel(), (16, 16, 16), pairing="both")


class _HidesContextNeeds(nn.Module):
    """The network without ``counterpart_feature_indices``: the engine encodes every counterpart."""

    def __init__(self, net):
        super().__init__()
        self.net, self.pairing = net, net.pairing

    def forward_features(self, x):
        return self.net.forward_features(x)

    def forward_head(self, own, mirror, return_attention=False):
        return self.net.forward_head(own, mirror, return_attention)


@pytest.mark.parametrize("tta", [False, True])
def test_a_network_without_saca_has_no_counterpart_encoded(tta):
    # A plain Swin UNETR card (SACA off) reads nothing from the counterpart: one encoder pass
    # per window, and the same logits as when every counterpart crop was encoded and dropped.
    net = _net(use_saca=False).eval()
    volume = np.random.default_rng(3).standard_normal((2, 96, 32, 32)).astype(np.float32)
    roi = (64, 32, 32)
    counter = CountingEncoder(net)
    with torch.no_grad():
        lean = mirror_paired_sliding_window(volume, net, roi, overlap=0.5, sw_batch_size=2, tta_flip=tta)
        crops, counter.crops = counter.crops, 0
        full = mirror_paired_sliding_window(volume, _HidesContextNeeds(net), roi, overlap=0.5, sw_batch_size=2,
                                            tta_flip=tta)
    # With TTA the flipped view's own crop is the mirror window's counterpart: still encoded.
    assert lean.n_encoded == crops == lean.n_windows * (2 if tta else 1)
    assert full.n_encoded == counter.crops == 2 * full.n_windows
    torch.testing.assert_close(lean.logits, full.logits, atol=1e-5, rtol=1e-5)
