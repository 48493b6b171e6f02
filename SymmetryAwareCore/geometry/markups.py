"""The mid-sagittal plane as a 3D Slicer markups plane file (``.mrk.json``) and back.

The file follows the markups schema v1.0.3: one ``"Plane"`` markup of plane type
``"pointNormal"`` with one control point (the plane's point), an absolute size, and the
plane frame written the way Slicer itself writes it:

- ``baseToNode`` (4x4, row-major): columns are the plane's x, y and z axes and its origin
  in the node coordinate system; the z axis is the plane normal. Slicer reads the plane's
  pose from this matrix and the control point.
- ``objectToBase``: identity (in RAS); ``center``, ``normal`` and ``orientation``
  (3x3 row-major, columns = x, y, z axes) are written for other readers.

Coordinates: ``coordinateSystem`` ``"LPS"`` (Slicer's default for files) or ``"RAS"``.
In LPS the x and y components of points and vectors are negated, and so are the first
two rows (the first 8 numbers) of both 4x4 matrices, exactly as Slicer's JSON writer does
(``RAS = diag(-1, -1, 1) * LPS``). Our planes are RAS internally; the conversion happens
only here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path
from .msp import MidSagittalPlane

__all__ = ["write_plane_markups", "read_plane_markups", "plane_markups_dict", "MARKUPS_SCHEMA"]

MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)

_FLIP = np.array([-1.0, -1.0, 1.0])


def _plane_axes(normal: np.ndarray) -> np.ndarray:
    """``(3, 3)`` columns x, y, z of the plane frame in RAS: z = normal, y = anterior in-plane."""
    z = normal / np.linalg.norm(normal)
    anterior = np.array([0.0, 1.0, 0.0])
    y = anterior - (anterior @ z) * z
    if np.linalg.norm(y) < 1e-6:  # a plane facing anterior: use superior instead
        y = np.array([0.0, 0.0, 1.0]) - z[2] * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def plane_markups_dict(
    plane: MidSagittalPlane,
    *,
    size_mm: Sequence[float] = (200.0, 200.0),
    name: str = "MidSagittalPlane",
    coordinate_system: str = "LPS",
) -> dict:
    """The markups document for ``plane`` (see the module docstring for the conventions)."""
    if coordinate_system not in ("LPS", "RAS"):
        raise ValueError(f"coordinate_system must be 'LPS' or 'RAS', got {coordinate_system!r}")
    flip = _FLIP if coordinate_system == "LPS" else np.ones(3)
    axes = _plane_axes(plane.normal)
    base_to_node = np.eye(4)
    base_to_node[:3, :3] = axes
    base_to_node[:3, 3] = plane.point
    object_to_base = np.eye(4)
    # Slicer converts 4x4 matrices by negating their first two rows (node side only).
    rows = np.array([*flip, 1.0])[:, None]
    w, h = (float(v) for v in size_mm)
    markup = {
        "type": "Plane",
        "name": name,
        "coordinateSystem": coordinate_system,
        "coordinateUnits": "mm",
        "locked": True,
        "fixedNumberOfControlPoints": True,
        "labelFormat": "%N-%d",
        "planeType": "pointNormal",
        "sizeMode": "absolute",
        "autoScalingFactor": 1.0,
        "center": (flip * plane.point).tolist(),
        "normal": (flip * plane.normal).tolist(),
        "objectToBase": (rows * object_to_base).ravel().tolist(),
        "baseToNode": (rows * base_to_node).ravel().tolist(),
        "orientation": (flip[:, None] * axes).ravel().tolist(),
        "size": [w, h, 0.0],
        "planeBounds": [-w / 2, w / 2, -h / 2, h / 2],
        "controlPoints": [
            {
                "id": "1",
                "label": f"{name}-1",
                "position": (flip * plane.point).tolist(),
                "orientation": (flip[:, None] * np.eye(3)).ravel().tolist(),
                "selected": True,
                "locked": True,
                "visibility": True,
                "positionStatus": "defined",
            }
        ],
        "measurements": [],
    }
    return {"@schema": MARKUPS_SCHEMA, "markups": [markup]}


def write_plane_markups(
    plane: MidSagittalPlane,
    path: Union[str, Path],
    *,
    size_mm: Sequence[float] = (200.0, 200.0),
    name: str = "MidSagittalPlane",
    coordinate_system: str = "LPS",
) -> Path:
    """Write ``plane`` as a Slicer markups plane file (atomically). Returns the path."""
    path = Path(path)
    document = plane_markups_dict(plane, size_mm=size_mm, name=name, coordinate_system=coordinate_system)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2))
    return path


def read_plane_markups(path: Union[str, Path]) -> MidSagittalPlane:
    """Read the first ``"Plane"`` markup of a ``.mrk.json`` file as a RAS plane.

    Uses ``baseToNode`` (times ``objectToBase``) and the first control point when present,
    as Slicer does, else ``center`` and ``normal``. The result has ``method="markups"``, no
    score, and ``confident=True`` (a plane a person placed or checked).
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        markup = next(m for m in document["markups"] if m.get("type") == "Plane")
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except (ValueError, KeyError, TypeError, StopIteration):
        raise InputError("not a markups file holding a Plane", path) from None
    system = markup.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise InputError(f"unknown coordinateSystem {system!r}", path)
    flip = _FLIP if system == "LPS" else np.ones(3)
    rows = np.array([*flip, 1.0])[:, None]
    try:
        if "baseToNode" in markup:
            base_to_node = rows * np.asarray(markup["baseToNode"], np.float64).reshape(4, 4)
            object_to_base = rows * np.asarray(markup.get("objectToBase", np.diag([*flip, 1.0]).ravel()), np.float64).reshape(4, 4)
            object_to_node = base_to_node @ object_to_base
            normal = object_to_node[:3, 2]
            points = markup.get("controlPoints") or []
            if points and "position" in points[0]:
                point = flip * np.asarray(points[0]["position"], np.float64)
            else:
                point = object_to_node[:3, 3]
        else:
            normal = flip * np.asarray(markup["normal"], np.float64)
            point = flip * np.asarray(markup["center"], np.float64)
        plane = MidSagittalPlane(normal, point, float("nan"), True, "markups", point)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"the Plane markup is malformed ({error})", path) from None
    return plane
