"""Maps that say how a region relates to its mirror: hemispheric attention and asymmetry.

Both work on volumes aligned to the mid-sagittal plane (RAS, axis 0 = left-right, the
plane at the centre of axis 0), as the sliding-window engine produces them.

Hemispheric attention (:func:`mirror_token_focus`, the token-level definition of the
"mirror focus" that :mod:`.attention_maps` turns into voxel maps). SACA lets each token of
a window at a SACA stage (query) attend to the tokens of the window's counterpart (keys). The counterpart
is the mirrored crop, flipped, so the key token at grid position ``(i, j, k)`` covers the
mirror of the region of the query token at the same position ``(i, j, k)``. The focus of
a query is the attention mass, averaged over heads, on the keys within ``radius`` tokens
(Chebyshev distance) of that mirror position. It lies in ``[0, 1]``: 1 means the region
looks only at its own mirror neighbourhood, 0 only elsewhere, ``n_neighbours / Nk`` is what
uniform attention gives.

Signed asymmetry (:func:`signed_asymmetry`): ``p(x) - p(mirror(x))`` for the foreground
probability ``p``; positive where a voxel is more likely lesion than its mirror voxel
(the lesion side), negative on the healthy mirror of a lesion, 0 where both sides agree.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..geometry.mirror import flip_lr

__all__ = ["token_grid", "mirror_token_focus", "foreground_probability", "signed_asymmetry"]

BOTTLENECK_STRIDE = 32
"""Downsampling of the bottleneck tokens relative to the input (patch 2 then 4 mergings)."""


def token_grid(roi_size: Sequence[int], stride: int = BOTTLENECK_STRIDE) -> tuple:
    """The token grid ``(gx, gy, gz) = roi // stride`` of a window (stride 32: the bottleneck,
    ``2**(s+1)`` at SACA stage ``s``)."""
    grid = tuple(int(r) // stride for r in roi_size)
    if min(grid) < 1:
        raise ValueError(f"roi_size {tuple(roi_size)} is smaller than the token stride {stride}")
    return grid


def _mirror_neighbourhood(grid: Sequence[int], radius: int, device) -> torch.Tensor:
    """``(N, N)`` boolean: key within ``radius`` of the query's own (= mirror) position."""
    coords = torch.stack(
        torch.meshgrid(*[torch.arange(g, device=device) for g in grid], indexing="ij"), dim=-1
    ).reshape(-1, 3)  # row-major over (x, y, z), the token order of the model contract
    distance = (coords[:, None, :] - coords[None, :, :]).abs().amax(dim=-1)
    return distance <= radius


def mirror_token_focus(attention: torch.Tensor, grid: Sequence[int], radius: int = 0) -> torch.Tensor:
    """Attention mass each query token puts on its mirror-position key tokens.

    Args:
        attention: ``(B, heads, Nq, Nk)`` softmax weights of window tokens (queries) over
            counterpart tokens (keys), ``Nq == Nk == gx * gy * gz``, row-major over (x, y, z).
        grid: the token grid ``(gx, gy, gz)``; gx runs along the left-right axis.
        radius: neighbourhood (in tokens) around the mirror position that counts as "mirror".

    Returns:
        ``(B, gx, gy, gz)`` float32 focus in ``[0, 1]``, averaged over heads.
    """
    if attention.ndim != 4:
        raise ValueError(f"attention must be (B, heads, Nq, Nk), got shape {tuple(attention.shape)}")
    n = int(np.prod(grid))
    if attention.shape[-1] != n or attention.shape[-2] != n:
        raise ValueError(
            f"attention over {tuple(attention.shape[-2:])} tokens does not match the token grid {tuple(grid)} "
            f"({n} tokens)"
        )
    mask = _mirror_neighbourhood(grid, radius, attention.device).to(torch.float32)
    focus = (attention.float() * mask).sum(dim=-1).mean(dim=1)
    return focus.reshape(attention.shape[0], *grid)


def foreground_probability(logits, activation: str = "softmax"):
    """Probability that a voxel is any foreground label.

    Args:
        logits: ``(out, X, Y, Z)`` (numpy or torch); channel 0 is background for softmax.
        activation: ``"softmax"`` (mutually exclusive labels: ``1 - p(background)``) or
            ``"sigmoid"`` (overlapping regions such as BraTS TC/WT/ET: max over channels).

    Returns:
        ``(X, Y, Z)`` float32 numpy array in ``[0, 1]``.
    """
    t = torch.as_tensor(logits).float()
    if t.ndim != 4:
        raise ValueError(f"logits must be (out, X, Y, Z), got shape {tuple(t.shape)}")
    if activation == "softmax":
        if t.shape[0] < 2:
            raise ValueError("softmax needs a background channel and at least one label")
        p = 1.0 - torch.softmax(t, dim=0)[0]
    elif activation == "sigmoid":
        p = torch.sigmoid(t).amax(dim=0)
    else:
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    return p.cpu().numpy().astype(np.float32)


def signed_asymmetry(probability) -> np.ndarray:
    """``p(x) - p(mirror(x))`` of an aligned ``(X, Y, Z)`` map, in ``[-1, 1]``.

    Axis 0 is the left-right axis and the mid-sagittal plane is its centre, so the mirror
    of voxel ``x`` is ``X - 1 - x``. The map is antisymmetric: its value at the mirror
    voxel is the negative of its value here.
    """
    p = np.asarray(probability, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"probability must be (X, Y, Z), got shape {p.shape}")
    return p - flip_lr(p)
