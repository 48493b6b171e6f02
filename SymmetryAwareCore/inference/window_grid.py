"""Window grids for mirror-paired sliding-window inference.

A window covering ``x`` in ``[a, a + r)`` of an aligned volume of width ``W`` (axis 0, the
left-right axis) has its counterpart at ``[W - r - a, W - a)``
(:func:`SymmetryAwareCore.geometry.mirror.counterpart_start`). When the set of window
starts along x is closed under ``a -> W - r - a``, every counterpart box is itself a
window box, so the crops a whole run needs are just "each window" and "each window's
counterpart" and none is encoded twice, with or without left-right test-time
augmentation. The grid here is such a set: starts are spread evenly and mirrored about
the centre. Axes 1 and 2 need no mirror closure and use the same even spread without the
one extra window that closure can cost (an odd count with an odd span), so the grid has
as many windows as monai's for the same overlap whenever the x axis allows it.

Volumes smaller than the window are padded; along x the padding is the same on both
sides so that voxel ``x`` and its mirror ``W - 1 - x`` stay mirrors after padding.
"""

from __future__ import annotations

import itertools
from typing import List, Sequence, Tuple

from ..geometry.mirror import LR_AXIS, counterpart_start

__all__ = ["axis_starts", "window_starts", "mirror_pairs", "padding_for_roi", "pad_for_roi", "scan_step"]


def scan_step(roi: int, overlap: float) -> int:
    """Distance between neighbouring window starts: ``int(roi * (1 - overlap))``, at least 1."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return max(1, int(roi * (1.0 - overlap)))


def axis_starts(size: int, roi: int, step: int, mirror_closed: bool = True) -> List[int]:
    """Window starts along one axis of length ``size`` for windows of length ``roi``.

    The starts cover ``[0, size)`` with gaps of at most ``step``, evenly spread from 0 to
    ``size - roi``; with ``mirror_closed`` they are also closed under
    ``a -> size - roi - a``. ``size >= roi`` is required (pad first).
    """
    if roi < 1 or step < 1:
        raise ValueError(f"roi and step must be positive, got roi={roi}, step={step}")
    if size < roi:
        raise ValueError(f"axis of length {size} is smaller than the window {roi}; pad it first")
    span = size - roi
    if span == 0:
        return [0]
    count = -(-span // step) + 1
    if not mirror_closed:
        # Rounding up keeps every gap <= ceil(span / (count - 1)) <= step.
        return sorted({-(-i * span // (count - 1)) for i in range(count)})
    if count % 2 == 1 and span % 2 == 1:
        # An odd count puts a window exactly at the centre, which needs an even span.
        count += 1
    # Rounding the left half up keeps every gap <= step; mirroring it builds the right half.
    left = [-(-i * span // (count - 1)) for i in range(count // 2)]
    starts = set(left) | {span - a for a in left}
    if count % 2 == 1:
        starts.add(span // 2)
    return sorted(starts)


def window_starts(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> List[Tuple[int, int, int]]:
    """All window start corners ``(x, y, z)`` for a 3D ``shape`` (already padded to the ROI).

    Closed under the mirror along x (axis 0) only.
    """
    per_axis = [
        axis_starts(int(s), int(r), scan_step(int(r), overlap), mirror_closed=(axis == LR_AXIS))
        for axis, (s, r) in enumerate(zip(shape, roi_size))
    ]
    return [tuple(p) for p in itertools.product(*per_axis)]


def mirror_pairs(
    starts: Sequence[Tuple[int, int, int]], roi_size: Sequence[int], shape: Sequence[int]
) -> List[Tuple[Tuple[int, int, int], Tuple[int, int, int]]]:
    """Group window starts with their mirror windows, each pair once.

    Returns ``(start, mirror_start)`` with ``start[0] <= mirror_start[0]``; a window that
    straddles the mid-sagittal plane symmetrically is paired with itself.

    Raises:
        ValueError: some window's mirror is not in ``starts`` (grid not mirror-closed).
    """
    present = set(map(tuple, starts))
    width, roi_x = int(shape[LR_AXIS]), int(roi_size[LR_AXIS])
    pairs = []
    for start in starts:
        start = tuple(int(v) for v in start)
        mirror = list(start)
        mirror[LR_AXIS] = counterpart_start(start[LR_AXIS], roi_x, width)
        mirror = tuple(mirror)
        if mirror not in present:
            raise ValueError(f"the mirror {mirror} of window {start} is not a window: grid is not mirror-closed")
        if start[LR_AXIS] <= mirror[LR_AXIS]:
            pairs.append((start, mirror))
    return pairs


def padding_for_roi(shape: Sequence[int], roi_size: Sequence[int]) -> List[Tuple[int, int]]:
    """``(before, after)`` padding per spatial axis so that each axis is at least the ROI.

    Along x (axis 0) the two sides are always equal, so the mirror relation
    ``x <-> W - 1 - x`` survives: when ``roi - W`` is odd the axis is padded to ``roi + 1``.
    """
    pads = []
    for axis, (size, roi) in enumerate(zip(shape, roi_size)):
        total = max(0, int(roi) - int(size))
        if axis == LR_AXIS and total % 2 == 1:
            total += 1
        pads.append((total // 2, total - total // 2))
    return pads


def pad_for_roi(array, roi_size: Sequence[int]):
    """``array`` ``(..., X, Y, Z)`` zero-padded by :func:`padding_for_roi` of its last three axes
    (the interactive session's volume and prior, and the click refiner's training cases)."""
    import numpy as np

    pads = padding_for_roi(array.shape[-3:], roi_size)
    return np.pad(array, [(0, 0)] * (array.ndim - 3) + [tuple(p) for p in pads])
