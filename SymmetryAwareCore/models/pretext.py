"""Views for symmetry-aware pretraining: rotation about the left-right axis and masking.

All helpers take a patch and its counterpart ``(B, C, X, Y, Z)`` (axis 2 = left-right,
the counterpart already mirrored) and change both ALIKE, so counterpart voxel ``i`` stays
the mirror of patch voxel ``i``:

- a rotation about the left-right axis turns the ``(Y, Z)`` plane and leaves ``X`` alone,
  so it commutes with the left-right flip;
- the same mask (and the same fill values) corrupts mirror voxels of both, so a symmetric
  scan stays symmetric and the symmetry loss is not fooled by the corruption.

The training package calls :func:`make_pretext_view` twice per batch (two views for the
contrastive task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["ROTATION_CLASSES", "PretextView", "rotate_about_lr", "random_rotation", "random_block_mask", "make_pretext_view"]

ROTATION_CLASSES = 4
"""Rotation labels 0..3 mean 0, 90, 180, 270 degrees about the left-right axis."""

_PLANE = (3, 4)  # the two non-left-right spatial axes of (B, C, X, Y, Z)


def _check_pair(x: torch.Tensor, x_counterpart: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape != x_counterpart.shape:
        raise ValueError(
            f"patch and counterpart must be (B, C, X, Y, Z) of equal shape, got {tuple(x.shape)}, {tuple(x_counterpart.shape)}"
        )


def rotate_about_lr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate ``(B, C, X, Y, Z)`` by ``k * 90`` degrees about the left-right axis (axis 2).

    Odd ``k`` swaps Y and Z, so it needs ``Y == Z``.
    """
    if x.ndim != 5:
        raise ValueError(f"x must be (B, C, X, Y, Z), got {tuple(x.shape)}")
    if k % 2 and x.shape[3] != x.shape[4]:
        raise ValueError(f"a 90-degree rotation needs equal Y and Z sizes, got {tuple(x.shape[2:])}")
    return torch.rot90(x, int(k) % 4, dims=_PLANE)


def random_rotation(
    x: torch.Tensor, x_counterpart: torch.Tensor, generator: Optional[torch.Generator] = None
):
    """Rotate each sample and its counterpart by the same random multiple of 90 degrees.

    Returns ``(x_rotated, counterpart_rotated, labels)``; labels ``(B,)`` int64 in 0..3.
    """
    _check_pair(x, x_counterpart)
    labels = torch.randint(0, ROTATION_CLASSES, (x.shape[0],), generator=generator)
    xs, cs = [], []
    for b, k in enumerate(labels.tolist()):
        xs.append(rotate_about_lr(x[b : b + 1], k))
        cs.append(rotate_about_lr(x_counterpart[b : b + 1], k))
    return torch.cat(xs), torch.cat(cs), labels.to(x.device)


def random_block_mask(
    shape, mask_ratio: float = 0.3, block_size: int = 16, generator: Optional[torch.Generator] = None, device=None
) -> torch.Tensor:
    """Boolean mask ``(B, 1, X, Y, Z)`` of cubes of ``block_size`` voxels, each masked
    with probability ``mask_ratio`` (at least one per sample)."""
    if len(shape) != 5:
        raise ValueError(f"shape must be (B, C, X, Y, Z), got {tuple(shape)}")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if block_size <= 0 or any(s % block_size for s in shape[2:]):
        raise ValueError(f"block_size {block_size} must divide the spatial shape {tuple(shape[2:])}")
    b = shape[0]
    grid = [s // block_size for s in shape[2:]]
    coarse = torch.rand((b, 1, *grid), generator=generator) < mask_ratio
    flat = coarse.view(b, -1)
    empty = ~flat.any(dim=1)
    if empty.any():
        pick = torch.randint(0, flat.shape[1], (b,), generator=generator)
        flat[empty, pick[empty]] = True
    mask = coarse.repeat_interleave(block_size, 2).repeat_interleave(block_size, 3).repeat_interleave(block_size, 4)
    return mask.to(device) if device is not None else mask


@dataclass
class PretextView:
    """One augmented view of a batch for the pretraining tasks.

    Attributes:
        image: ``(B, C, X, Y, Z)`` rotated and corrupted patch (network input).
        counterpart: ``(B, C, X, Y, Z)`` its counterpart, rotated and corrupted alike.
        target: ``(B, C, X, Y, Z)`` rotated clean patch (inpainting target).
        mask: ``(B, 1, X, Y, Z)`` bool, True where corrupted.
        rotation: ``(B,)`` int64 rotation labels (0..3).
    """

    image: torch.Tensor
    counterpart: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    rotation: torch.Tensor


def make_pretext_view(
    x: torch.Tensor,
    x_counterpart: torch.Tensor,
    mask_ratio: float = 0.3,
    block_size: int = 16,
    noise_std: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> PretextView:
    """Rotate patch and counterpart alike, then replace the same blocks of both by the
    same Gaussian noise (``noise_std``; 0 fills with zeros)."""
    xr, cr, labels = random_rotation(x, x_counterpart, generator)
    mask = random_block_mask(xr.shape, mask_ratio, block_size, generator, device=x.device)
    noise = torch.randn(xr.shape, generator=generator).to(device=x.device, dtype=x.dtype) * noise_std
    image = torch.where(mask, noise, xr)
    counterpart = torch.where(mask, noise, cr)
    return PretextView(image=image, counterpart=counterpart, target=xr, mask=mask, rotation=labels)
