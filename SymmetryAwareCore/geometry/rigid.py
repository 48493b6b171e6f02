"""Rigid transforms in RAS millimetres, and stored-orientation changes for tests and phantoms.

Angles are in degrees about the RAS axes x (left-right), y (posterior-anterior) and
z (inferior-superior), applied in that order (``R = Rz @ Ry @ Rx``).
"""

from __future__ import annotations

from typing import Sequence

import nibabel.orientations as nio
import numpy as np

from ..io.image import Image

__all__ = ["rotation_matrix", "rigid_matrix", "move_image", "reorient_to", "rotation_angle_deg"]


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """``(3, 3)`` rotation ``Rz @ Ry @ Rx`` for angles in degrees about x, y, z."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid_matrix(angles_deg: Sequence[float], shift_mm: Sequence[float], center_mm: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """``(4, 4)`` world transform: rotate about ``center_mm``, then shift by ``shift_mm``."""
    r = rotation_matrix(angles_deg)
    c = np.asarray(center_mm, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(shift_mm, dtype=np.float64)
    return m


def rotation_angle_deg(r: np.ndarray) -> float:
    """Angle in degrees of the rotation part of a ``(3, 3)`` or ``(4, 4)`` matrix."""
    r = np.asarray(r)[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def move_image(image: Image, world: np.ndarray) -> Image:
    """The same voxels placed elsewhere in the world: new affine ``world @ affine``.

    Anatomy that sat at RAS point ``p`` now sits at ``world @ p``; no resampling happens,
    so the moved image is exact, which makes it the ground truth of geometry tests.
    """
    return Image(image.array, np.asarray(world) @ image.affine, image.channel_names, image.source)


def reorient_to(image: Image, codes: str) -> Image:
    """Store ``image`` with voxel axes in another orientation (``"LPS"``, ``"PSR"``...).

    Voxel data are permuted and flipped; every voxel keeps its world position.
    """
    current = nio.io_orientation(image.affine)
    target = nio.axcodes2ornt(tuple(codes))
    ornt = nio.ornt_transform(current, target)
    spatial = image.spatial_shape
    if image.array.ndim == 4:
        array = np.moveaxis(nio.apply_orientation(np.moveaxis(image.array, 0, -1), ornt), -1, 0)
    else:
        array = nio.apply_orientation(image.array, ornt)
    affine = image.affine @ nio.inv_ornt_aff(ornt, spatial)
    return Image(np.ascontiguousarray(array), affine, image.channel_names, image.source)
