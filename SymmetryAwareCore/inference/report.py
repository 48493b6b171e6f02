"""Lesion volumes per label, split by hemisphere, as a JSON-able dictionary.

Volumes come from the voxel size of the grid the labelmap lives on (the native grid or
the aligned one: any affine, oblique included, since a voxel's volume is
``|det(affine[:3, :3])|``). The hemisphere of a voxel is the side of the mid-sagittal
plane its centre lies on, in RAS millimetres: with the plane's normal turned to point to
the patient's Right (+x in RAS), a positive signed distance is the right hemisphere and
a negative one the left. Voxel centres within ``midline_tolerance_mm`` of the plane are
counted as midline, in neither hemisphere.

The asymmetry index of a label is ``(L - R) / (L + R)``: +1 all left, -1 all right,
None when the label has no voxel off the midline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.image import Image

__all__ = ["plane_of_aligned_grid", "oriented_plane", "signed_distance_mm", "lesion_report", "write_report_json"]

ML_PER_MM3 = 1e-3


def plane_of_aligned_grid(image: Image) -> Tuple[np.ndarray, np.ndarray]:
    """``(normal, point)`` in RAS of the central plane of axis 0 of an aligned image.

    For a volume aligned to its mid-sagittal plane that plane is the MSP; the normal is
    the direction of voxel axis 0, turned to point to the patient's right.
    """
    affine = image.affine
    centre = (np.asarray(image.spatial_shape, dtype=np.float64) - 1.0) / 2.0
    point = affine[:3, :3] @ centre + affine[:3, 3]
    return oriented_plane(affine[:3, 0], point)


def oriented_plane(normal: Sequence[float], point: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Unit ``normal`` turned to point to the patient's right (+x in RAS), and ``point``.

    Raises:
        InputError: the normal is zero or closer to anterior-posterior / superior-inferior
            than to left-right (not a mid-sagittal plane).
    """
    from ..geometry.msp import not_sagittal

    problem = not_sagittal(normal)
    if problem is not None:
        raise InputError(problem)
    n = np.asarray(normal, dtype=np.float64).reshape(3)
    n = n / np.linalg.norm(n)
    if n[0] < 0:
        n = -n
    return n, np.asarray(point, dtype=np.float64).reshape(3)


def signed_distance_mm(image: Image, normal: Sequence[float], point: Sequence[float]) -> np.ndarray:
    """``(X, Y, Z)`` signed distance in mm of each voxel centre to the plane; > 0 on the right."""
    n, p = oriented_plane(normal, point)
    shape = image.spatial_shape
    # Distance is affine in the voxel indices, so it separates into one term per axis.
    coefficients = image.affine[:3, :3].T @ n
    offset = float((image.affine[:3, 3] - p) @ n)
    i, j, k = (np.arange(s, dtype=np.float64) for s in shape)
    return (
        coefficients[0] * i[:, None, None] + coefficients[1] * j[None, :, None] + coefficients[2] * k[None, None, :] + offset
    )


def _labelmap_array(image: Image, labelmap: Union[np.ndarray, Image]) -> np.ndarray:
    if isinstance(labelmap, Image):
        if not image.same_grid(labelmap):
            raise InputError("the labelmap is not on the image's grid (shape or affine differ)", labelmap.source)
        array = labelmap.array
    else:
        array = np.asarray(labelmap)
    if array.shape != image.spatial_shape:
        raise InputError(f"labelmap shape {array.shape} differs from the image's {image.spatial_shape}", image.source)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError("labelmap holds non-integer values: give labels, not probabilities", image.source)
        array = array.astype(np.int64)
    if array.min(initial=0) < 0:
        raise InputError("labelmap holds negative labels", image.source)
    return array


def lesion_report(
    image: Image,
    labelmap: Union[np.ndarray, Image],
    plane_normal: Optional[Sequence[float]] = None,
    plane_point: Optional[Sequence[float]] = None,
    label_names: Optional[Mapping[int, str]] = None,
    midline_tolerance_mm: float = 1e-6,
) -> Dict:
    """Volume of each label, in mL, in total and per hemisphere.

    Args:
        image: gives the grid (shape and affine) the labelmap lives on.
        labelmap: ``(X, Y, Z)`` integer labels on ``image``'s grid (array or Image);
            0 is background.
        plane_normal, plane_point: the mid-sagittal plane in RAS mm; both None means the
            central plane of axis 0 (:func:`plane_of_aligned_grid`, for aligned images).
        label_names: name of each label for the report (``{1: "necrosis", ...}``).
        midline_tolerance_mm: voxel centres this close to the plane count as midline.

    Returns:
        A JSON-able dict: ``voxel_volume_ml``, ``plane`` (normal pointing right, point),
        ``labels`` (one entry per label present or named: ``label``, ``name``,
        ``voxels``, ``volume_ml``, ``left_ml``, ``right_ml``, ``midline_ml``,
        ``asymmetry_index``) and ``total`` (all foreground labels together).
    """
    labels = _labelmap_array(image, labelmap)
    if (plane_normal is None) != (plane_point is None):
        raise InputError("give both the plane normal and a point on the plane, or neither")
    if plane_normal is None:
        normal, point = plane_of_aligned_grid(image)
    else:
        normal, point = oriented_plane(plane_normal, plane_point)
    voxel_ml = float(abs(np.linalg.det(image.affine[:3, :3]))) * ML_PER_MM3

    foreground = labels > 0
    distance = signed_distance_mm(image, normal, point)
    side = np.zeros(labels.shape, dtype=np.int8)
    side[distance > midline_tolerance_mm] = 1
    side[distance < -midline_tolerance_mm] = -1

    names = dict(label_names or {})
    present = set(int(v) for v in np.unique(labels[foreground]))
    entries = [_entry(labels == value, side, voxel_ml, value, names.get(value)) for value in sorted(present | set(names) - {0})]
    total = _entry(foreground, side, voxel_ml, None, "all labels")
    return {
        "source": image.source,
        "voxel_volume_ml": voxel_ml,
        "plane": {"normal_ras": [float(v) for v in normal], "point_ras_mm": [float(v) for v in point]},
        "convention": "left = negative signed distance along the plane normal pointing to the patient's right",
        "labels": entries,
        "total": total,
    }


def _entry(mask: np.ndarray, side: np.ndarray, voxel_ml: float, value: Optional[int], name: Optional[str]) -> Dict:
    left = int(np.count_nonzero(mask & (side < 0)))
    right = int(np.count_nonzero(mask & (side > 0)))
    voxels = int(np.count_nonzero(mask))
    entry = {
        "voxels": voxels,
        "volume_ml": voxels * voxel_ml,
        "left_ml": left * voxel_ml,
        "right_ml": right * voxel_ml,
        "midline_ml": (voxels - left - right) * voxel_ml,
        "asymmetry_index": (left - right) / (left + right) if left + right else None,
    }
    if value is not None:
        entry = {"label": value, "name": name if name is not None else f"label {value}", **entry}
    else:
        entry = {"name": name, **entry}
    return entry


def write_report_json(report: Mapping, path: Union[str, Path]) -> Path:
    """Write ``report`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
