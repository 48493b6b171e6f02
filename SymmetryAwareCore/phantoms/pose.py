"""Random head pose and the scanner grid that holds the posed head.

The pose is a rigid world transform ``P`` (4x4, RAS mm): anatomy at head-space point
``h`` lies at ``P @ h`` in the output image's world. The head is then resampled onto an
axis-aligned scanner grid, so the volume itself is tilted, as in a real scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..geometry.rigid import rigid_matrix

__all__ = ["HEAD_CENTRE_MM", "Pose", "random_pose", "scanner_grid"]

# Rotations turn about a point near the middle of the MNI brain, on its mid-sagittal plane.
HEAD_CENTRE_MM = np.array([0.0, -18.0, 12.0])


@dataclass(frozen=True)
class Pose:
    """A head pose: angles (degrees about x, y, z, applied x first), shift (mm), matrix."""

    angles_deg: np.ndarray
    shift_mm: np.ndarray
    matrix: np.ndarray

    def plane(self) -> Tuple[np.ndarray, np.ndarray]:
        """True mid-sagittal plane in the output world: (unit normal, a point on it).

        Head space's plane is x = 0 with normal (1, 0, 0); a rigid pose rotates the
        normal and moves the point.
        """
        normal = self.matrix[:3, :3] @ np.array([1.0, 0.0, 0.0])
        point = self.matrix[:3, :3] @ HEAD_CENTRE_MM + self.matrix[:3, 3]
        return normal / np.linalg.norm(normal), point


def random_pose(rng: np.random.Generator, max_rotation_deg: float = 15.0, max_shift_mm: float = 15.0) -> Pose:
    """Angles uniform in +-``max_rotation_deg`` about each axis, shift uniform in +-``max_shift_mm``."""
    angles = rng.uniform(-max_rotation_deg, max_rotation_deg, size=3)
    shift = rng.uniform(-max_shift_mm, max_shift_mm, size=3)
    return Pose(angles, shift, rigid_matrix(angles, shift, HEAD_CENTRE_MM))


def scanner_grid(extent_head_mm: np.ndarray, pose: Pose, spacing: float, margin_mm: float = 6.0) -> Tuple[np.ndarray, tuple]:
    """RAS-aligned grid (affine, shape ``(X, Y, Z)``) holding the posed box ``extent_head_mm``.

    ``extent_head_mm`` is ``(2, 3)`` min / max in head space; its 8 corners are posed and
    bounded. The origin snaps to a multiple of ``spacing`` so grids of one dataset line up.
    """
    lo, hi = np.asarray(extent_head_mm, dtype=np.float64)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    moved = corners @ pose.matrix[:3, :3].T + pose.matrix[:3, 3]
    start = np.floor((moved.min(0) - margin_mm) / spacing) * spacing
    stop = moved.max(0) + margin_mm
    shape = tuple(int(n) for n in np.ceil((stop - start) / spacing).astype(int) + 1)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = start
    return affine, shape
