"""Guidance channels of the promptable SA-Swin, rasterised from clicks and a box (numpy).

One definition for training, the interactive session and the benchmark. Points and boxes
are in voxel coordinates of the array the guidance is drawn on (a training crop, or the
symmetric frame), continuous (a click need not sit on a voxel centre). Channel order is
:data:`SymmetryAwareCore.models.promptable.GUIDANCE_NAMES`: positive, negative, box.

A click is a Gaussian blob ``exp(-d^2 / (2 sigma^2))`` (``d`` in voxels), cut below 1e-3 so
that a click costs a local ``(6 sigma + 1)^3`` update, not a pass over the volume; blobs of
one kind are combined by maximum (two clicks do not add up to a stronger click).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["DEFAULT_SIGMA", "Guidance", "draw_click", "draw_box", "guidance_volume"]

DEFAULT_SIGMA = 2.0
"""Click blob width in frame voxels (6 mm at the 3 mm frame)."""

Point = Sequence[float]


def draw_click(channel: np.ndarray, point: Point, sigma: float = DEFAULT_SIGMA) -> None:
    """Max-combine the blob of ``point`` (voxel coordinates) into ``channel`` ``(X, Y, Z)`` in place.

    A point outside the array still marks the voxels within reach of its blob.
    """
    radius = int(np.ceil(3.0 * sigma))
    centre = np.asarray(point, np.float64)
    lo = np.maximum(np.floor(centre).astype(int) - radius, 0)
    hi = np.minimum(np.floor(centre).astype(int) + radius + 2, channel.shape)
    if np.any(hi <= lo):
        return
    grids = np.meshgrid(*[np.arange(a, b, dtype=np.float64) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
    blob = np.exp(-sum(g * g for g in grids) / (2.0 * sigma * sigma)).astype(channel.dtype)
    blob[blob < 1e-3] = 0
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    np.maximum(channel[region], blob, out=channel[region])


def draw_box(channel: np.ndarray, box_min: Point, box_max: Point) -> None:
    """Set the voxels of ``channel`` whose centres lie in ``[box_min, box_max]`` (voxel coordinates) to 1."""
    lo = np.maximum(np.ceil(np.asarray(box_min, np.float64) - 1e-6).astype(int), 0)
    hi = np.minimum(np.floor(np.asarray(box_max, np.float64) + 1e-6).astype(int) + 1, channel.shape)
    if np.all(hi > lo):
        channel[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1


class Guidance:
    """Clicks and an optional box, in voxel coordinates of one array.

    Attributes:
        positive, negative: lists of ``(x, y, z)`` points.
        box: ``(box_min, box_max)`` or None.
    """

    def __init__(self, positive=(), negative=(), box: Optional[Tuple[Point, Point]] = None):
        self.positive = [tuple(map(float, p)) for p in positive]
        self.negative = [tuple(map(float, p)) for p in negative]
        self.box = None if box is None else (tuple(map(float, box[0])), tuple(map(float, box[1])))

    def copy(self) -> "Guidance":
        return Guidance(self.positive, self.negative, self.box)

    @property
    def empty(self) -> bool:
        return not self.positive and not self.negative and self.box is None

    def add(self, point: Point, positive: bool) -> None:
        (self.positive if positive else self.negative).append(tuple(map(float, point)))

    def shifted(self, offset: Sequence[float]) -> "Guidance":
        """The same guidance in the coordinates of a sub-array starting at ``offset``."""
        o = np.asarray(offset, np.float64)
        box = None if self.box is None else (tuple(np.subtract(self.box[0], o)), tuple(np.subtract(self.box[1], o)))
        return Guidance([tuple(np.subtract(p, o)) for p in self.positive],
                        [tuple(np.subtract(p, o)) for p in self.negative], box)


def guidance_volume(shape: Sequence[int], guidance: Guidance, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """``(3, X, Y, Z)`` float32 guidance channels (positive, negative, box) for an array of ``shape``."""
    out = np.zeros((3,) + tuple(int(s) for s in shape), np.float32)
    for p in guidance.positive:
        draw_click(out[0], p, sigma)
    for p in guidance.negative:
        draw_click(out[1], p, sigma)
    if guidance.box is not None:
        draw_box(out[2], *guidance.box)
    return out
