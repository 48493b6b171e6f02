"""Volumes per segment and hemisphere, regions of interest, laterality: numpy plus a table node.

Geometry: label arrays are VTK-ordered ``[k, j, i]``; ``ijk_to_ras`` maps ``(i, j, k, 1)`` to
RAS millimetres. Left-right is RAS axis 0 (R positive); a hemisphere is the side of the
mid-sagittal plane a voxel centre lies on, with the plane normal turned to point right.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import vtk

from .nodes import LABEL_VALUE_TAG, segment_tag

__all__ = [
    "voxel_centres_ras",
    "roi_mask",
    "roi_geometry",
    "hemisphere_volumes_ml",
    "laterality_of",
    "plane_of",
    "TablesMixin",
]

LATERALITY_DOMINANCE = 0.9
"""Share of a segment's volume on one side for it to be called left or right (else bilateral)."""


def voxel_centres_ras(shape_kji: Sequence[int], ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS coordinates ``(K, J, I, 3)`` of the voxel centres of a VTK-ordered array."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape_kji), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1)
    return ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]


def roi_mask(
    shape_kji: Sequence[int],
    ijk_to_ras: np.ndarray,
    center: Sequence[float],
    size: Sequence[float],
    roi_to_ras: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Voxels (``[k, j, i]``) whose centre lies in a box of ``size`` mm around ``center``.

    ``roi_to_ras`` is the box's 3x3 orientation (columns: its axes in RAS); identity for
    an axis-aligned box. A voxel on the boundary counts as inside.
    """
    axes = np.eye(3) if roi_to_ras is None else np.asarray(roi_to_ras, dtype=np.float64)[:3, :3]
    offset = voxel_centres_ras(shape_kji, ijk_to_ras) - np.asarray(center, dtype=np.float64)
    local = offset @ axes  # coordinates along each box axis (axes are orthonormal)
    half = np.asarray(size, dtype=np.float64) / 2.0 + 1e-6
    return np.all(np.abs(local) <= half, axis=-1)


def roi_geometry(roi_node) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(center_ras, size_mm, axes 3x3)`` of a markups ROI node, in world coordinates."""
    center = [0.0, 0.0, 0.0]
    roi_node.GetCenterWorld(center)
    size = [0.0, 0.0, 0.0]
    roi_node.GetSizeWorld(size)
    matrix = roi_node.GetObjectToWorldMatrix()
    axes = np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])
    axes = axes / np.linalg.norm(axes, axis=0, keepdims=True)
    return np.asarray(center), np.asarray(size), axes


def hemisphere_volumes_ml(
    labels_kji: np.ndarray,
    ijk_to_ras: np.ndarray,
    values: Sequence[int],
    plane_origin: Optional[Sequence[float]] = None,
    plane_normal: Optional[Sequence[float]] = None,
) -> Dict[int, Tuple[float, float, float]]:
    """``{value: (left_ml, right_ml, total_ml)}`` of each label.

    The hemisphere is the side of the mid-sagittal plane (through ``plane_origin`` with
    ``plane_normal``; default the plane x = 0) a voxel centre lies on; the normal is turned
    to point right (+R) so that the sign means the same whatever the file stated.
    Voxels exactly on the plane count half to each side.
    """
    voxel_ml = abs(np.linalg.det(ijk_to_ras[:3, :3])) / 1000.0
    normal = np.array([1.0, 0.0, 0.0]) if plane_normal is None else np.asarray(plane_normal, dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    if normal[0] < 0:
        normal = -normal
    origin = np.zeros(3) if plane_origin is None else np.asarray(plane_origin, dtype=np.float64)
    side = (voxel_centres_ras(labels_kji.shape, ijk_to_ras) - origin) @ normal
    out = {}
    for value in values:
        mask = labels_kji == value
        left = np.count_nonzero(mask & (side < 0)) + 0.5 * np.count_nonzero(mask & (side == 0))
        total = np.count_nonzero(mask)
        out[int(value)] = (left * voxel_ml, (total - left) * voxel_ml, total * voxel_ml)
    return out


def laterality_of(left_ml: float, right_ml: float, dominance: float = LATERALITY_DOMINANCE) -> Optional[str]:
    """``"left"``, ``"right"``, ``"bilateral"``, or None for an empty segment."""
    total = left_ml + right_ml
    if total <= 0:
        return None
    if left_ml / total >= dominance:
        return "left"
    if right_ml / total >= dominance:
        return "right"
    return "bilateral"


def plane_of(plane_node) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """``(origin, normal)`` of a markups plane in world RAS; ``(None, None)`` without one."""
    if plane_node is None:
        return None, None
    origin, normal = [0.0] * 3, [0.0] * 3
    plane_node.GetOriginWorld(origin)
    plane_node.GetNormalWorld(normal)
    return np.asarray(origin), np.asarray(normal)


class TablesMixin:
    """The volume table of a segmentation (needs ``self.scene`` and ``labels_on_reference``)."""

    def segment_volumes(self, segmentation_node, reference_volume, plane_node=None):
        """``[(segment name, label value, (left_ml, right_ml, total_ml))]`` in segment order."""
        labels, ijk_to_ras = self.labels_on_reference(segmentation_node, reference_volume)
        origin, normal = plane_of(plane_node)
        segmentation = segmentation_node.GetSegmentation()
        rows = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            tag = segment_tag(segment, LABEL_VALUE_TAG)
            rows.append((segment.GetName(), int(tag) if tag else index + 1))
        volumes = hemisphere_volumes_ml(labels, ijk_to_ras, [v for _, v in rows], origin, normal)
        return [(name, value, volumes[value]) for name, value in rows]

    def volume_table(self, segmentation_node, reference_volume, plane_node=None, name: str = "volumes", table_node=None, volumes=None):
        """A table node: one row per segment, volume (mL) left, right and total.

        Hemispheres are split by ``plane_node`` (the mid-sagittal plane), else by x = 0.
        ``volumes``: :meth:`segment_volumes` when already computed.
        """
        rows = volumes if volumes is not None else self.segment_volumes(segmentation_node, reference_volume, plane_node)
        if table_node is None:
            table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        table = table_node.GetTable()
        table.Initialize()
        columns = [vtk.vtkStringArray(), vtk.vtkIntArray()] + [vtk.vtkDoubleArray() for _ in range(3)] + [vtk.vtkStringArray()]
        titles = ("Segment", "Label", "Left (mL)", "Right (mL)", "Total (mL)", "Side")
        for array, title in zip(columns, titles):
            array.SetName(title)
            table.AddColumn(array)
        table.SetNumberOfRows(len(rows))
        for row, (segment_name, value, (left, right, total)) in enumerate(rows):
            table.SetValue(row, 0, vtk.vtkVariant(segment_name))
            table.SetValue(row, 1, vtk.vtkVariant(value))
            table.SetValue(row, 2, vtk.vtkVariant(round(left, 4)))
            table.SetValue(row, 3, vtk.vtkVariant(round(right, 4)))
            table.SetValue(row, 4, vtk.vtkVariant(round(total, 4)))
            table.SetValue(row, 5, vtk.vtkVariant(laterality_of(left, right) or ""))
        table_node.Modified()
        return table_node
