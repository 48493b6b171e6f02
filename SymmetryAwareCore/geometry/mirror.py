"""The mirror relation of SA-Swin, in one place.

In a volume aligned to its mid-sagittal plane (RAS, the plane at the centre of axis 0),
the mirror image of voxel ``x`` along the left-right axis is voxel ``W - 1 - x``, where
``W`` is the size of axis 0. For a box covering ``x`` in ``[a, b)`` the counterpart is the
left-right flip of ``volume[W - b : W - a]``: voxel ``i`` of the counterpart is then the
mirror of voxel ``i`` of the box. Only the left-right axis is ever flipped (the authors'
code flipped the anterior-posterior axis in places).

Functions take numpy arrays or torch tensors and a ``spatial_start`` telling where the
three spatial axes begin: 0 for ``(X, Y, Z)``, 1 for ``(C, X, Y, Z)``, 2 for
``(B, C, X, Y, Z)``. The left-right axis is the first spatial one.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["LR_AXIS", "flip_lr", "counterpart_start", "counterpart_box", "extract_counterpart", "mirror_points_ras"]

LR_AXIS = 0
"""Index of the left-right axis among the three spatial axes of an aligned RAS array."""


def flip_lr(x, spatial_start: int = 0):
    """Flip ``x`` along its left-right axis (numpy array or torch tensor)."""
    axis = spatial_start + LR_AXIS
    if isinstance(x, np.ndarray):
        return np.flip(x, axis=axis)
    return x.flip(axis)


def counterpart_start(start: int, size: int, width: int) -> int:
    """Start along the left-right axis of the mirror box of ``[start, start + size)``.

    ``width`` is the size of the whole volume's left-right axis.
    """
    if size <= 0 or start < 0 or start + size > width:
        raise ValueError(f"box [{start}, {start + size}) does not fit in width {width}")
    return width - (start + size)


def counterpart_box(start: Sequence[int], size: Sequence[int], shape: Sequence[int]) -> Tuple[int, int, int]:
    """Start corner of the counterpart of a 3D box ``start``..``start + size`` in ``shape``.

    Only the left-right coordinate changes; the others are shared.
    """
    out = list(int(s) for s in start)
    out[LR_AXIS] = counterpart_start(int(start[LR_AXIS]), int(size[LR_AXIS]), int(shape[LR_AXIS]))
    for s, n, w in zip(start, size, shape):
        if s < 0 or s + n > w:
            raise ValueError(f"box start {tuple(start)} size {tuple(size)} does not fit in {tuple(shape)}")
    return tuple(out)


def extract_counterpart(volume, start: Sequence[int], size: Sequence[int], spatial_start: int = 0):
    """The counterpart of the box ``start``..``start + size`` of ``volume``, flipped.

    Voxel ``i`` of the result is the mirror of voxel ``i`` of ``volume[box]``. Works on
    numpy arrays and torch tensors; ``spatial_start`` as in the module docstring.
    """
    shape = tuple(volume.shape[spatial_start : spatial_start + 3])
    mirror_start = counterpart_box(start, size, shape)
    index = [slice(None)] * spatial_start + [slice(a, a + n) for a, n in zip(mirror_start, size)]
    return flip_lr(volume[tuple(index)], spatial_start)


def mirror_points_ras(points: np.ndarray, plane_normal: np.ndarray, plane_point: np.ndarray) -> np.ndarray:
    """Reflect ``(N, 3)`` RAS points across the plane through ``plane_point`` with ``plane_normal``."""
    n = np.asarray(plane_normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    d = (p - np.asarray(plane_point, dtype=np.float64)) @ n
    return p - 2.0 * d[:, None] * n[None, :]
