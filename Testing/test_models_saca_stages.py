"""SACA at finer stages as a model setting: card round trip, old checkpoints, fused attention.

Small configurations (feature size 12, one block per stage, 64^3 at most) on the CPU.
"""

from __future__ import annotations

import json

import torch

from SymmetryAwareCore.inference.engine import fused_window_attention
from SymmetryAwareCore.inference.model_source import find_model_card
from SymmetryAwareCore.models import SASwinUNETR
from SymmetryAwareCore.models.model_card import ModelCard, load_model, read_card, save_model
from SymmetryAwareCore.models.model_card import InputChannel

SMALL = dict(feature_size=12, depths=(1, 1, 1, 1))


def test_finer_stage_round_trips_through_the_model_card(tmp_path):
    torch.manual_seed(0)
    net = SASwinUNETR(1, 2, saca_stages=(2, 4), **SMALL).eval()
    assert set(net.saca.keys()) == {"stage2", "stage4"} and net.attention_stage == 2
    card = ModelCard(channels=[InputChannel("t1")], modality="MRI")
    card_path = save_model(net, tmp_path / "m.safetensors", card)
    assert json.loads(card_path.read_text())["kwargs"]["saca_stages"] == [2, 4]
    loaded, read = load_model(card_path)
    assert read.kwargs["saca_stages"] == [2, 4] and loaded.saca_stages == (2, 4)
    assert list(loaded.state_dict()) == list(net.state_dict())
    x, c = torch.randn(1, 1, 64, 64, 64), torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, c), net(x, c), rtol=0, atol=0)


def test_cards_without_the_setting_mean_the_bottleneck_and_the_bundled_model_loads_key_for_key():
    card_path = find_model_card("default")  # the bundled segmentation model
    card = read_card(card_path)
    # Cards written before the setting existed keep working: without the key the default is the bottleneck.
    kwargs = {k: v for k, v in card.kwargs.items() if k not in ("saca_stages", "saca_position_encoding")}
    assert SASwinUNETR(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}).saca_stages == (4,)
    net, _ = load_model(card_path)  # strict: missing or unexpected keys raise
    # The bundled model (0.4.0) has SACA at stage 2 too, for attention maps with anatomy.
    assert net.saca_stages == (2, 4) and net.attention_stage == 2 and net.attention_token_stride == 8


def test_finer_stage_feeds_the_decoder_through_its_skip():
    """SACA at stage 2 changes the output through the counterpart; with SACA off the stage-2
    block is absent and the network is MONAI's (tested in test_models_sa_swin_unetr)."""
    torch.manual_seed(0)
    net = SASwinUNETR(1, 2, saca_stages=(2,), **SMALL).eval()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        f = net.forward_features(x)
        a = net.forward_head(f, net.forward_features(torch.randn_like(x)))
        b = net.forward_head(f, net.forward_features(torch.randn_like(x)))
        # Only h2 changed: the deeper hidden states the decoder reads are the encoder's own.
        fc = net.forward_features(torch.randn_like(x))
        from SymmetryAwareCore.models.encoder import apply_saca

        out, _ = apply_saca(net.saca, f, fc, None)
    assert (a - b).abs().max() > 1e-5
    assert not torch.equal(out[3], f[3])
    assert all(torch.equal(out[i], f[i]) for i in (0, 1, 2, 4, 5))


def test_fused_window_attention_agrees_with_explicit_path_with_a_finer_saca_stage():
    torch.manual_seed(0)
    net = SASwinUNETR(2, 3, saca_stages=(2, 4), **SMALL).eval()
    x, c = torch.randn(1, 2, 64, 64, 64), torch.randn(1, 2, 64, 64, 64)
    with torch.no_grad():
        explicit, att_explicit = net(x, c, return_attention=True)
        with fused_window_attention(net):
            fused, att_fused = net(x, c, return_attention=True)
    assert att_fused.shape == (1, 6, 512, 512)  # stage 2 of 64^3: 8^3 tokens, num_heads[1] heads
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(att_fused, att_explicit, rtol=1e-4, atol=1e-5)


def test_mirror_prior_makes_each_token_attend_most_to_its_mirror_token():
    import pytest

    from SymmetryAwareCore.models.saca import SACABlock

    torch.manual_seed(0)
    block = SACABlock(48, 6, position_encoding="learned").set_mirror_prior(sharpness=10.0, content=0.0).eval()
    x, xc = torch.randn(1, 48, 8, 8, 8), torch.randn(1, 48, 8, 8, 8)
    _, attention = block(x, xc, return_attention=True)
    assert torch.equal(attention.mean(1)[0].argmax(-1), torch.arange(512))
    with pytest.raises(ValueError, match="learned"):
        SACABlock(48, 6).set_mirror_prior()
