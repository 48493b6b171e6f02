"""SACA: symmetry-aware cross-attention between a patch and its mirrored counterpart.

Ma et al., "Symmetry Awareness Encoded Deep Learning Framework for Brain Imaging
Analysis", MICCAI 2024. Every token ``f`` of a patch attends to the tokens ``f~`` of the
patch's left-right counterpart::

    SACA(f, f~) = Softmax(Q K~^T / sqrt(D)) V~,   Q = f W_Q,  K~ = f~ W_K,  V~ = f~ W_V

with several heads, a residual connection, LayerNorm and an MLP (a pre-norm transformer
block whose attention is cross-attention). The width is whatever the encoder stage gives
(``feature_size * 2**stage``); nothing is tied to the paper's 768 channels.

Token layout. A ``(B, D, X, Y, Z)`` feature map becomes ``X * Y * Z`` tokens in row-major
order over ``(x, y, z)``: token ``n = (x * Y + y) * Z + z``. Axis ``x`` is the left-right
axis. Because the counterpart is the mirrored crop already flipped (see
:mod:`SymmetryAwareCore.geometry.mirror`), counterpart token ``n`` covers the mirror image
of the region of patch token ``n``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
from monai.networks.blocks import MLPBlock

__all__ = ["POSITION_ENCODINGS", "SACABlock", "sinusoidal_position_encoding", "flatten_tokens", "unflatten_tokens"]

POSITION_ENCODINGS = (None, "sinusoidal", "learned")


def flatten_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """``(B, D, X, Y, Z)`` -> ``(B, X*Y*Z, D)``, row-major over ``(x, y, z)``."""
    return feature_map.flatten(2).transpose(1, 2)


def unflatten_tokens(tokens: torch.Tensor, grid: Tuple[int, int, int]) -> torch.Tensor:
    """``(B, X*Y*Z, D)`` -> ``(B, D, X, Y, Z)``; the inverse of :func:`flatten_tokens`."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def sinusoidal_position_encoding(grid: Tuple[int, int, int], dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 3D sine-cosine encoding of a token grid, ``(X*Y*Z, dim)``.

    A third of the channels encodes each axis (``dim`` must be divisible by 6). The
    encoding depends only on the token index, so patch token ``n`` and counterpart token
    ``n`` (mirror positions of each other) get the same code: the encoding tells SACA
    "this key is my own mirror image", which is the relation the method relies on.
    """
    if dim % 6 != 0:
        raise ValueError(f"sinusoidal position encoding needs dim divisible by 6, got {dim}")
    per_axis = dim // 3
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(0, per_axis, 2, device=device, dtype=torch.float32) / per_axis
    )
    coords = torch.meshgrid(*[torch.arange(g, device=device, dtype=torch.float32) for g in grid], indexing="ij")
    parts = []
    for c in coords:
        angle = c.reshape(-1, 1) * freqs.reshape(1, -1)
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).to(dtype or torch.float32)


class SACABlock(nn.Module):
    """Symmetry-aware cross-attention block (queries: patch, keys/values: counterpart).

    Args:
        hidden_size: token width ``D`` (the encoder stage's channels).
        num_heads: attention heads; ``hidden_size`` must be divisible by it.
        mlp_ratio: MLP hidden width as a multiple of ``hidden_size``.
        dropout_rate: dropout on attention weights, attention output and MLP.
        position_encoding: ``None`` (default, as in the paper), ``"sinusoidal"`` (fixed 3D
            sine-cosine) or ``"learned"`` (a learned linear map of the sine-cosine code, so
            any token grid size works without an image size fixed at construction). The
            code is added to queries and keys only.
        qkv_bias: bias on the query, key and value projections.

    Input ``(B, D, X, Y, Z)`` feature maps of the patch and of its counterpart, with the
    same shape; output the updated patch map, same shape. ``x`` (first spatial axis) is
    left-right.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout_rate: float = 0.0,
        position_encoding: Optional[str] = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if hidden_size <= 0 or num_heads <= 0:
            raise ValueError(f"hidden_size and num_heads must be positive, got {hidden_size}, {num_heads}")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"position_encoding must be one of {POSITION_ENCODINGS}, got {position_encoding!r}")
        if position_encoding is not None and hidden_size % 6 != 0:
            raise ValueError(f"position encoding needs hidden_size divisible by 6, got {hidden_size}")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.position_encoding = position_encoding
        self.norm_query = nn.LayerNorm(hidden_size)
        # The counterpart gets its own norm: its tokens are keys/values, not the residual stream.
        self.norm_context = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(
            hidden_size, num_heads, dropout=dropout_rate, bias=qkv_bias, batch_first=True
        )
        self.drop = nn.Dropout(dropout_rate)
        self.norm_mlp = nn.LayerNorm(hidden_size)
        self.mlp = MLPBlock(hidden_size, int(hidden_size * mlp_ratio), dropout_rate)
        self.pos_proj = nn.Linear(hidden_size, hidden_size) if position_encoding == "learned" else None

    @torch.no_grad()
    def set_mirror_prior(self, sharpness: float = 10.0, content: float = 0.2) -> "SACABlock":
        """Set the weights so that each token attends most to its own mirror token.

        For tests and demonstrations of the attention maps: a network whose answer is known.
        Needs ``position_encoding="learned"``. In every head, six channels carry the same
        slice of the sine-cosine code (sine and cosine of its second-lowest frequency along
        each axis, 0.32 rad per token, so their dot product ``sum_a cos(0.32 * d_a)`` falls
        monotonically with the token distance ``d`` up to 9 tokens) and the remaining
        channels carry the LayerNorm'd features times ``content`` (0: attention by position
        only). Queries and keys are ``sharpness`` times that. Values, output and MLP are
        left as they were.
        """
        if self.position_encoding != "learned":
            raise ValueError("set_mirror_prior needs position_encoding='learned'")
        d, heads = self.hidden_size, self.num_heads
        per_axis, head_dim = d // 3, d // heads
        # Indices of sin and cos of frequency 1 for axes x, y, z in the sinusoidal code.
        picks = [a * per_axis + part * (per_axis // 2) + 1 for a in range(3) for part in (0, 1)]
        if head_dim <= len(picks):
            raise ValueError(f"set_mirror_prior needs more than {len(picks)} channels per head, got {head_dim}")
        proj = torch.zeros(d, d)
        gain = torch.full((d,), float(content))
        for h in range(heads):
            for row, col in enumerate(picks):
                proj[h * head_dim + row, col] = 1.0
            gain[h * head_dim : h * head_dim + len(picks)] = 0.0  # position channels: no content
        self.pos_proj.weight.copy_(proj)
        self.pos_proj.bias.zero_()
        self.attn.in_proj_weight[: 2 * d] = sharpness * torch.eye(d).repeat(2, 1)
        self.attn.in_proj_bias[: 2 * d] = 0.0
        for norm in (self.norm_query, self.norm_context):
            norm.weight.copy_(gain)
            norm.bias.zero_()
        return self

    def _position_code(self, grid, like: torch.Tensor) -> Optional[torch.Tensor]:
        if self.position_encoding is None:
            return None
        code = sinusoidal_position_encoding(grid, self.hidden_size, device=like.device)
        if self.pos_proj is not None:
            code = self.pos_proj(code)
        return code.to(like.dtype).unsqueeze(0)

    def forward(
        self, x: torch.Tensor, x_counterpart: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | Tuple[torch.Tensor, torch.Tensor]:
        """Update the patch features ``x`` with what they find in ``x_counterpart``.

        Args:
            x: ``(B, D, X, Y, Z)`` patch features (queries and residual stream).
            x_counterpart: ``(B, D, X, Y, Z)`` features of the flipped mirror crop.
            return_attention: also return the softmax weights.

        Returns:
            ``(B, D, X, Y, Z)``, and with ``return_attention`` the weights
            ``(B, heads, N, N)``, ``N = X*Y*Z``, rows = patch tokens (queries), columns =
            counterpart tokens (keys), both row-major over ``(x, y, z)``.
        """
        if x.ndim != 5 or x.shape != x_counterpart.shape:
            raise ValueError(
                f"SACA needs patch and counterpart maps of equal (B, D, X, Y, Z) shape, "
                f"got {tuple(x.shape)} and {tuple(x_counterpart.shape)}"
            )
        if x.shape[1] != self.hidden_size:
            raise ValueError(f"SACA expects {self.hidden_size} channels, got {x.shape[1]}")
        grid = tuple(x.shape[2:])
        tokens = flatten_tokens(x)
        q = self.norm_query(tokens)
        kv = self.norm_context(flatten_tokens(x_counterpart))
        k = kv
        code = self._position_code(grid, q)
        if code is not None:
            q = q + code
            k = kv + code
        # need_weights=False lets PyTorch use its fused attention kernel.
        attended, weights = self.attn(
            q, k, kv, need_weights=return_attention, average_attn_weights=False
        )
        tokens = tokens + self.drop(attended)
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        out = unflatten_tokens(tokens, grid)
        if return_attention:
            return out, weights
        return out
