"""The symmetric frame: a scan resampled so that its mid-sagittal plane is the array's centre.

:func:`align_to_msp` builds a grid whose axis 0 is the plane normal (left -> right), axis 1
the anterior direction projected onto the plane, axis 2 their cross product (superior),
with the plane passing exactly through the voxel centres ``i = (W - 1) / 2`` of axis 0.
On that grid :mod:`SymmetryAwareCore.geometry.mirror` is the true anatomical mirror:
voxel ``i`` and voxel ``W - 1 - i`` are mirror images across the MSP. The aligned affine
is in general oblique with respect to world RAS; it is kept exactly, never snapped.

Results computed in the frame go back to the scan's own grid with
:meth:`SymmetricFrame.to_native`. What is guaranteed, exactly:

1. ``to_native(labels, order="nearest")`` gives every native voxel the label of the
   aligned voxel whose cell (``[i - 1/2, i + 1/2)`` along each axis) contains that native
   voxel's centre, and 0 when the centre lies outside the aligned grid. This is exact
   sampling of the aligned labelmap seen as piecewise constant, with no rounding drift.
2. A labelmap defined on the native grid survives native -> frame -> native unchanged
   (both ways nearest) whenever ``norm(aligned spacing) < min(native spacing)`` and the
   frame covers the native field of view (the default shape does), whatever the rotation.
   Symmetrically, one defined on the frame survives frame -> native -> frame whenever
   ``norm(native spacing) < min(aligned spacing)`` and the native grid covers it.
3. When the aligned grid coincides with the native one up to a permutation and flips of
   axes (an untilted head and matching spacing), both trips are the identity for labels
   and for images alike, nearest or linear.

Otherwise nearest-neighbour resampling between two grids can lose a one-voxel structure;
no resampling scheme can avoid that, so the coarser grid decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import scipy.ndimage as ndi

from ..errors import InputError
from ..io.image import Image
from .msp import MidSagittalPlane
from .orientation import to_ras

__all__ = ["SymmetricFrame", "align_to_msp", "resample_to_grid", "frame_affine", "regrid_isotropic", "tilted_scan"]

_ORDERS = {"nearest": 0, "linear": 1}


def _order(order) -> int:
    if order in _ORDERS:
        return _ORDERS[order]
    if order in (0, 1):
        return int(order)
    raise ValueError(f"order must be 'nearest' or 'linear', got {order!r}")


def resample_to_grid(
    array: np.ndarray,
    source_affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: Sequence[int],
    order="linear",
    fill: float = 0.0,
) -> np.ndarray:
    """Resample ``array`` (on ``source_affine``) at the voxel centres of another grid.

    Args:
        array: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` on the source grid.
        source_affine, target_affine: ``(4, 4)`` voxel -> RAS mm of both grids.
        target_shape: spatial shape ``(X, Y, Z)`` of the target grid.
        order: ``"nearest"`` (labels: the value of the source cell containing the target
            voxel centre, ``fill`` outside the source cells) or ``"linear"`` (trilinear;
            ``fill`` outside the source cells, edge values held within the outer half voxel).
        fill: the value of target voxels outside the source field of view: 0 for labels
            and skull-stripped MRI (their background), air (-1024 HU) for CT, where 0 HU
            would read as brain.
    Returns:
        ``(X, Y, Z)`` or ``(C, X, Y, Z)`` on the target grid, dtype of ``array`` for
        nearest, float32 (or float64 for float64 input) for linear.
    """
    k = _order(order)
    array = np.asarray(array)
    if array.ndim == 4:
        return np.stack([resample_to_grid(a, source_affine, target_affine, target_shape, order, fill) for a in array])
    if array.ndim != 3:
        raise ValueError(f"array must be (X, Y, Z) or (C, X, Y, Z), got shape {array.shape}")
    shape = tuple(int(s) for s in target_shape)
    # target voxel -> source voxel, as scipy wants (matrix, offset).
    m = np.linalg.inv(np.asarray(source_affine, np.float64)) @ np.asarray(target_affine, np.float64)
    matrix, offset = m[:3, :3], m[:3, 3]
    if k == 0:
        # grid-constant gives cell semantics: a coordinate in [-0.5, n - 0.5) rounds into
        # the grid, anything beyond is outside (0). Plain "constant" would drop the outer
        # half cells.
        return ndi.affine_transform(array, matrix, offset, output_shape=shape, order=0, mode="grid-constant", cval=fill)
    dtype = np.float64 if array.dtype == np.float64 else np.float32
    values = ndi.affine_transform(array.astype(dtype, copy=False), matrix, offset, output_shape=shape, order=1, mode="nearest")
    inside = ndi.affine_transform(np.ones(array.shape, np.uint8), matrix, offset, output_shape=shape, order=0, mode="grid-constant", cval=0)
    values[inside == 0] = fill
    return values


def frame_affine(
    plane: MidSagittalPlane,
    spacing: Sequence[float],
    shape: Sequence[int],
    center: np.ndarray,
    anterior: np.ndarray = np.array([0.0, 1.0, 0.0]),
) -> np.ndarray:
    """``(4, 4)`` voxel -> RAS affine of a symmetric grid.

    Axis 0 runs along ``plane.normal`` (left -> right) with the plane through index
    ``(shape[0] - 1) / 2``; axis 1 along ``anterior`` projected onto the plane; axis 2 their
    cross product (superior for a head in RAS). The array centre sits at the projection of
    ``center`` (RAS mm) onto the plane.
    """
    e0 = plane.normal
    e1 = np.asarray(anterior, np.float64) - (np.asarray(anterior, np.float64) @ e0) * e0
    if np.linalg.norm(e1) < 1e-6:
        raise ValueError("the anterior direction is parallel to the plane normal")
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e0, e1)
    rotation = np.stack([e0, e1, e2], axis=1)
    centre = np.asarray(center, np.float64)
    centre = centre - plane.signed_distance(centre)[0] * e0
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing, np.float64)[None, :]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape, np.float64) - 1.0) / 2.0)
    return affine


@dataclass(frozen=True)
class SymmetricFrame:
    """How a scan was put into its symmetric frame, so results can go back exactly.

    Attributes:
        affine: ``(4, 4)`` voxel -> RAS of the aligned grid (oblique in general).
        shape: spatial shape ``(W, H, D)`` of the aligned grid; axis 0 is left -> right.
        native_affine: ``(4, 4)`` voxel -> RAS of the input image, as given.
        native_shape: spatial shape of the input image.
        plane: the mid-sagittal plane used; it is the plane ``i = (W - 1) / 2``.
    """

    affine: np.ndarray
    shape: Tuple[int, int, int]
    native_affine: np.ndarray
    native_shape: Tuple[int, int, int]
    plane: MidSagittalPlane

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size of the aligned grid in mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def native_to_frame(self) -> np.ndarray:
        """``(4, 4)``: native voxel index -> aligned voxel index (continuous)."""
        return np.linalg.inv(self.affine) @ self.native_affine

    def to_native(self, array: np.ndarray, order="nearest", fill: float = 0.0) -> np.ndarray:
        """Map an ``(W, H, D)`` or ``(C, W, H, D)`` array of the frame onto the input's grid.

        ``order="nearest"`` for labelmaps (guarantee 1 of the module docstring),
        ``"linear"`` for maps (probabilities, intensities). The result has the input's
        spatial shape and belongs with its affine; native voxels outside the frame get ``fill``.
        """
        self._check(array, self.shape, "frame")
        return resample_to_grid(array, self.affine, self.native_affine, self.native_shape, order, fill)

    def to_frame(self, array: np.ndarray, order="nearest", fill: float = 0.0) -> np.ndarray:
        """Map an array on the input's grid (a labelmap, another channel) into the frame;
        frame voxels outside the input's field of view get ``fill``."""
        self._check(array, self.native_shape, "input")
        return resample_to_grid(array, self.native_affine, self.affine, self.shape, order, fill)

    def image_to_native(self, image: Image, order="nearest") -> Image:
        """An aligned-frame :class:`Image` put back on the input's grid, with the input's affine."""
        if image.spatial_shape != tuple(self.shape) or not np.allclose(image.affine, self.affine, atol=1e-6):
            raise InputError("this image is not on the symmetric frame's grid", image.source)
        return Image(self.to_native(image.array, order), self.native_affine.copy(), image.channel_names, image.source)

    @staticmethod
    def _check(array: np.ndarray, shape, name: str) -> None:
        if tuple(np.shape(array)[-3:]) != tuple(shape) or np.ndim(array) not in (3, 4):
            raise InputError(f"array of shape {np.shape(array)} is not on the {name} grid {tuple(shape)}")

    def to_dict(self) -> dict:
        """JSON-ready record of the frame (matrices as nested lists, RAS mm)."""
        return {
            "affine": self.affine.tolist(),
            "shape": list(self.shape),
            "native_affine": self.native_affine.tolist(),
            "native_shape": list(self.native_shape),
            "midplane_index_axis0": (self.shape[0] - 1) / 2.0,
            "coordinate_system": "RAS",
        }


def _native_ras_spacing(image: Image) -> np.ndarray:
    ras, _ = to_ras(Image(np.zeros((1, 1, 1), np.uint8), image.affine))
    return np.linalg.norm(ras.affine[:3, :3], axis=0)


def align_to_msp(
    image: Image,
    plane: MidSagittalPlane,
    spacing: Optional[Sequence[float]] = (1.0, 1.0, 1.0),
    shape: Optional[Sequence[int]] = None,
    *,
    center: Optional[Sequence[float]] = None,
    order="linear",
    fill: float = 0.0,
) -> Tuple[Image, SymmetricFrame]:
    """Resample ``image`` into its symmetric frame.

    Args:
        image: ``(X, Y, Z)`` or ``(C, X, Y, Z)``, any orientation.
        plane: its mid-sagittal plane (from :func:`~SymmetryAwareCore.geometry.msp.estimate_msp`).
        spacing: aligned voxel size in mm ``(LR, AP, IS)``; ``None`` keeps the input's
            spacing along its axes closest to RAS.
        shape: aligned spatial shape ``(W, H, D)``; ``None`` covers the whole input field of
            view, with ``W`` even so the plane falls between the two central columns.
        center: RAS point whose projection onto the plane becomes the array centre; default:
            the input's field-of-view centre when ``shape`` is ``None``, the head centre
            (``plane.point``) when a shape (a crop) is asked for.
        order: ``"linear"`` for images, ``"nearest"`` for labelmaps.
        fill: value of frame voxels outside the input's field of view (air for CT).

    Returns:
        the aligned image (axis 0 left -> right, the MSP exactly at ``i = (W - 1) / 2``) and
        the :class:`SymmetricFrame` that maps results back.
    """
    if not isinstance(plane, MidSagittalPlane):
        raise TypeError(f"plane must be a MidSagittalPlane, got {type(plane).__name__}")
    spacing = _native_ras_spacing(image) if spacing is None else np.asarray(spacing, np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise InputError(f"spacing must be three positive numbers, got {spacing.tolist()}")
    # Corners of the native cells, to cover the whole field of view.
    sx, sy, sz = image.spatial_shape
    corners = np.array([[i, j, k] for i in (-0.5, sx - 0.5) for j in (-0.5, sy - 0.5) for k in (-0.5, sz - 0.5)])
    corners = image.voxel_to_world(corners)
    rotation = frame_affine(plane, (1, 1, 1), (1, 1, 1), plane.point)[:3, :3]
    local = (corners - plane.point) @ rotation  # coordinates along the frame axes
    if shape is None:
        half = np.abs(local[:, 0]).max()
        width = 2 * int(np.ceil(half / spacing[0] - 1e-9))
        lo, hi = local[:, 1:].min(0), local[:, 1:].max(0)
        rest = np.ceil((hi - lo) / spacing[1:] - 1e-9).astype(int)
        shape = (width, int(rest[0]), int(rest[1]))
        mid = (lo + hi) / 2.0
        default_center = plane.point + rotation[:, 1] * mid[0] + rotation[:, 2] * mid[1]
    else:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"shape must be three positive integers, got {shape}")
        default_center = plane.point
    center = default_center if center is None else np.asarray(center, np.float64)
    affine = frame_affine(plane, spacing, shape, center)
    frame = SymmetricFrame(affine, tuple(shape), image.affine.copy(), image.spatial_shape, plane)
    array = frame.to_frame(image.array, order, fill)
    return Image(array, affine, image.channel_names, image.source), frame


def regrid_isotropic(image: Image, mm: float) -> Image:
    """``image`` resampled (linear) onto an axis-aligned RAS grid of ``mm`` voxels covering the
    same field of view, centred where the input's grid is centred."""
    extent = np.array(image.spatial_shape) * image.spacing
    shape = np.floor(extent / mm).astype(int)
    centre = image.voxel_to_world((np.array(image.spatial_shape) - 1) / 2.0)[0]
    affine = np.diag([mm, mm, mm, 1.0])
    affine[:3, 3] = centre - mm * (shape - 1) / 2.0
    return Image(resample_to_grid(image.array, image.affine, affine, shape), affine)


def tilted_scan(image: Image, angles_deg: Sequence[float], shift_mm: Sequence[float]) -> Tuple[Image, np.ndarray]:
    """What a scanner would record of a head moved by a known rigid transform.

    The head is rotated about its grid centre by ``angles_deg`` (x, y, z) and shifted by
    ``shift_mm``, then resampled onto an axis-aligned grid of the same shape and spacing centred
    on the moved field of view, so the volume itself is tilted. Returns ``(image, world)`` with
    ``world`` the ``(4, 4)`` RAS transform applied (the ground truth of geometry tests).
    """
    from .rigid import move_image, rigid_matrix

    shape = np.array(image.spatial_shape)
    centre = image.voxel_to_world((shape - 1) / 2.0)[0]
    world = rigid_matrix(angles_deg, shift_mm, centre)
    moved = move_image(image, world)
    spacing = image.spacing
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = moved.voxel_to_world((shape - 1) / 2.0)[0] - spacing * (shape - 1) / 2.0
    return Image(resample_to_grid(moved.array, moved.affine, affine, shape), affine), world
