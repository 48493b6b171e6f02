"""SACA block: the attention formula, shapes, widths, position encodings, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

from SymmetryAwareCore.models.saca import SACABlock, flatten_tokens, sinusoidal_position_encoding, unflatten_tokens


def test_attention_is_softmax_of_patch_queries_against_counterpart_keys():
    torch.manual_seed(0)
    block = SACABlock(hidden_size=24, num_heads=3).eval()
    x = torch.randn(2, 24, 2, 3, 2)
    xc = torch.randn(2, 24, 2, 3, 2)
    out, attn = block(x, xc, return_attention=True)
    assert out.shape == x.shape
    assert attn.shape == (2, 3, 12, 12)
    # Recompute Softmax(Q K~^T / sqrt(d)) with Q from the patch and K~ from the counterpart.
    w_q, w_k, _ = block.attn.in_proj_weight.chunk(3)
    b_q, b_k, _ = block.attn.in_proj_bias.chunk(3)
    q = block.norm_query(flatten_tokens(x)) @ w_q.t() + b_q
    k = block.norm_context(flatten_tokens(xc)) @ w_k.t() + b_k
    q = q.view(2, 12, 3, 8).transpose(1, 2)
    k = k.view(2, 12, 3, 8).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(attn, expected, atol=1e-5, rtol=1e-4)
    # The fused path (no weights requested) gives the same output.
    torch.testing.assert_close(block(x, xc), out, atol=1e-5, rtol=1e-4)


def test_output_depends_on_counterpart_and_keeps_residual():
    torch.manual_seed(1)
    block = SACABlock(hidden_size=12, num_heads=3).eval()
    x = torch.randn(1, 12, 2, 2, 2)
    a = block(x, torch.randn_like(x))
    b = block(x, torch.randn_like(x))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("width,heads", [(12, 3), (24, 6), (192, 24), (768, 24)])
def test_width_follows_the_encoder(width, heads):
    block = SACABlock(hidden_size=width, num_heads=heads)
    x = torch.randn(1, width, 2, 2, 2)
    out, attn = block(x, x, return_attention=True)
    assert out.shape == x.shape and attn.shape == (1, heads, 8, 8)
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, heads, 8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoding", ["sinusoidal", "learned"])
def test_position_encoding_changes_attention_and_trains(encoding):
    torch.manual_seed(2)
    plain = SACABlock(hidden_size=24, num_heads=2)
    coded = SACABlock(hidden_size=24, num_heads=2, position_encoding=encoding)
    coded.load_state_dict({**coded.state_dict(), **plain.state_dict()})  # same weights, plus pos_proj
    x, xc = torch.randn(1, 24, 3, 2, 2), torch.randn(1, 24, 3, 2, 2)
    _, a = plain(x, xc, return_attention=True)
    out, b = coded(x, xc, return_attention=True)
    assert not torch.allclose(a, b)
    out.sum().backward()
    assert all(p.grad is not None for p in coded.parameters())


def test_sinusoidal_code_is_per_token_and_tokens_round_trip():
    code = sinusoidal_position_encoding((2, 3, 4), 12)
    assert code.shape == (24, 12)
    assert torch.unique(code, dim=0).shape[0] == 24  # every grid position has its own code
    x = torch.randn(2, 5, 2, 3, 4)
    tokens = flatten_tokens(x)
    # Row-major over (x, y, z): token (x*Y + y)*Z + z.
    torch.testing.assert_close(tokens[:, (1 * 3 + 2) * 4 + 3], x[:, :, 1, 2, 3])
    torch.testing.assert_close(unflatten_tokens(tokens, (2, 3, 4)), x)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(hidden_size=24, num_heads=5),
        dict(hidden_size=0, num_heads=1),
        dict(hidden_size=24, num_heads=3, dropout_rate=1.5),
        dict(hidden_size=24, num_heads=3, position_encoding="rope"),
        dict(hidden_size=16, num_heads=2, position_encoding="sinusoidal"),
        dict(hidden_size=24, num_heads=3, mlp_ratio=0),
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        SACABlock(**kwargs)


def test_mismatched_inputs_raise_value_error():
    block = SACABlock(hidden_size=12, num_heads=3)
    with pytest.raises(ValueError, match="equal"):
        block(torch.randn(1, 12, 2, 2, 2), torch.randn(1, 12, 2, 2, 4))
    with pytest.raises(ValueError, match="channels"):
        block(torch.randn(1, 24, 2, 2, 2), torch.randn(1, 24, 2, 2, 2))
