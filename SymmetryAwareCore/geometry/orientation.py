"""Reorientation to RAS and back, voxel for voxel.

Processing happens on RAS arrays (axis 0 runs from the patient's left to right, axis 1
posterior to anterior, axis 2 inferior to superior). Getting there from any stored
orientation (LPS, PSR, ...) is a permutation and flips of the voxel axes, so it loses
nothing, and :func:`from_ras` undoes it exactly. An oblique image keeps its rotation in
the affine: axis 0 is then the stored axis *closest* to left-right; aligning the head to
its own mid-sagittal plane is the job of :mod:`SymmetryAwareCore.geometry.msp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np

from ..io.image import Image

__all__ = ["RASReorientation", "to_ras", "from_ras", "orientation_codes"]

_RAS = nio.axcodes2ornt(("R", "A", "S"))


def orientation_codes(affine: np.ndarray) -> str:
    """The three-letter code of an affine's voxel axes, e.g. ``"RAS"``, ``"LPS"``, ``"PSR"``."""
    return "".join(nio.aff2axcodes(affine))


@dataclass(frozen=True)
class RASReorientation:
    """How a native image was turned into RAS, so that results can be turned back.

    Attributes:
        ornt: nibabel orientation transform from native to RAS voxel axes.
        native_shape: spatial shape ``(X, Y, Z)`` of the native array.
        native_affine: the native voxel-to-RAS affine.
    """

    ornt: np.ndarray
    native_shape: tuple
    native_affine: np.ndarray

    @property
    def inverse_ornt(self) -> np.ndarray:
        """Orientation transform from the RAS voxel axes back to the native ones."""
        native = nio.io_orientation(self.native_affine)
        return nio.ornt_transform(_RAS, native)


def _apply(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    # nibabel applies the transform to the leading axes; channels go last for it.
    if array.ndim == 4:
        moved = np.moveaxis(array, 0, -1)
        return np.ascontiguousarray(np.moveaxis(nio.apply_orientation(moved, ornt), -1, 0))
    return np.ascontiguousarray(nio.apply_orientation(array, ornt))


def to_ras(image: Image) -> tuple[Image, RASReorientation]:
    """Permute and flip the voxel axes of ``image`` to the closest RAS orientation.

    Returns:
        the reoriented image (same voxels, same world positions, new affine) and the record
        needed by :func:`from_ras`.
    """
    native = nio.io_orientation(image.affine)
    ornt = nio.ornt_transform(native, _RAS)
    spatial = image.spatial_shape
    array = _apply(image.array, ornt)
    affine = image.affine @ nio.inv_ornt_aff(ornt, spatial)
    record = RASReorientation(ornt=ornt, native_shape=spatial, native_affine=image.affine.copy())
    return Image(array, affine, image.channel_names, image.source), record


def from_ras(array: np.ndarray, record: RASReorientation) -> np.ndarray:
    """Put an array computed on the RAS grid back onto the native grid, voxel for voxel.

    Args:
        array: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` on the RAS grid made by :func:`to_ras`.
    Returns:
        the same values on the native grid: spatial shape ``record.native_shape``, whose
        affine is ``record.native_affine``.
    """
    out = _apply(array, record.inverse_ornt)
    if tuple(out.shape[-3:]) != tuple(record.native_shape):
        raise ValueError(f"array of shape {array.shape} does not come from this RAS grid")
    return out
