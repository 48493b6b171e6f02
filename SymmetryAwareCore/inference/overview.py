"""A one-glance PNG of a result: axial, coronal and sagittal slices with the labels on top.

Slices pass through the labelled voxel nearest the centroid of all labelled voxels (the
grid centre when there are none), so each view shows some lesion. Images are first put in RAS voxel order (:func:`~SymmetryAwareCore.geometry.orientation.to_ras`,
a lossless permutation), so every panel is oriented the same whatever the stored
orientation. Conventions, written in the figure too:

* radiological (default): the patient's right on the viewer's left in axial and coronal
  views, as on a radiology workstation; neurological: the patient's right on the right.
* axial: anterior at the top; coronal and sagittal: superior at the top; sagittal:
  anterior on the left.

The mid-sagittal plane is drawn where it cuts the axial and coronal slices.
Matplotlib is used through its object API with the Agg canvas: no pyplot state, no
display, safe inside Slicer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..geometry.orientation import to_ras
from ..io.atomic import atomic_path
from ..io.image import Image
from .report import oriented_plane, plane_of_aligned_grid

__all__ = ["Panel", "overview_panels", "write_overview_png", "DEFAULT_LABEL_COLORS"]

# BraTS colours as most viewers show them (necrosis red, oedema green, enhancing yellow).
DEFAULT_LABEL_COLORS: Dict[int, Tuple[float, float, float]] = {
    1: (0.90, 0.10, 0.10),
    2: (0.10, 0.80, 0.20),
    3: (1.00, 0.85, 0.00),
    4: (1.00, 0.85, 0.00),
}
_CONVENTIONS = ("radiological", "neurological")


@dataclass
class Panel:
    """One view, ready to draw: row 0 is the top of the picture, column 0 its left.

    Attributes:
        name: ``"axial"``, ``"coronal"`` or ``"sagittal"``, with the slice index.
        image: ``(rows, cols)`` intensities.
        labels: ``(rows, cols)`` integer labels.
        aspect: pixel height / width in mm, for an undistorted picture.
        msp: ``(cols, rows)`` of the mid-sagittal line, or None (sagittal view).
        left_marker, right_marker: letters for the picture's left and right edges.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    aspect: float
    msp: Optional[Tuple[np.ndarray, np.ndarray]]
    left_marker: str
    right_marker: str


def _scalar(image: Image, channel: int) -> Image:
    return image if image.array.ndim == 3 else image.channel(channel)


def _plane_line(coefficients, offset, fixed_axis, fixed_value, free_axis, free_size):
    """Voxel i (axis 0) along the free axis where the plane ``c . ijk + o = 0`` cuts a slice."""
    free = np.array([0.0, free_size - 1.0])
    if abs(coefficients[0]) < 1e-9:
        return None
    i = -(coefficients[free_axis] * free + coefficients[fixed_axis] * fixed_value + offset) / coefficients[0]
    return i, free


def overview_panels(
    image: Image,
    labelmap: Union[np.ndarray, Image, None] = None,
    plane_normal: Optional[Sequence[float]] = None,
    plane_point: Optional[Sequence[float]] = None,
    convention: str = "radiological",
    channel: int = 0,
) -> List[Panel]:
    """The three views of :func:`write_overview_png`, as arrays (what the tests check).

    ``labelmap`` is ``(X, Y, Z)`` on ``image``'s grid. With no plane given, the central
    plane of voxel axis 0 is drawn: the mid-sagittal plane of an aligned image.
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
    scalar = _scalar(image, channel)
    if labelmap is None:
        labels = np.zeros(scalar.spatial_shape, np.int16)
    else:
        labels = labelmap.array if isinstance(labelmap, Image) else np.asarray(labelmap)
    if labels.shape != scalar.spatial_shape:
        raise InputError(f"labelmap shape {labels.shape} differs from the image's {scalar.spatial_shape}", image.source)
    if (plane_normal is None) != (plane_point is None):
        raise InputError("give both the plane normal and a point on the plane, or neither")
    if plane_normal is None:
        normal, point = plane_of_aligned_grid(scalar)
    else:
        normal, point = oriented_plane(plane_normal, plane_point)

    ras, _ = to_ras(Image(np.stack([scalar.array.astype(np.float32), labels.astype(np.float32)]), scalar.affine))
    volume, lab = ras.array[0], np.rint(ras.array[1]).astype(np.int32)
    shape, spacing = ras.spatial_shape, ras.spacing
    fg = np.argwhere(lab > 0)
    if len(fg):
        # Of scattered lesions the centroid may lie in none: take the labelled voxel nearest it.
        centre = fg[np.argmin(((fg - fg.mean(axis=0)) ** 2).sum(axis=1))]
    else:
        centre = np.array(shape) // 2
    ci, cj, ck = (int(v) for v in centre)
    coefficients = ras.affine[:3, :3].T @ normal
    offset = float((ras.affine[:3, 3] - point) @ normal)

    radiological = convention == "radiological"
    nx = shape[0]

    def x_cols(i):
        # RAS axis 0 runs left -> right; radiological shows the patient's right on the left.
        return (nx - 1 - i) if radiological else i

    def lr(a2d):
        return a2d[:, ::-1] if radiological else a2d

    left, right = ("R", "L") if radiological else ("L", "R")
    panels = []
    # Axial: rows = y reversed (anterior up), cols = x.
    line = _plane_line(coefficients, offset, 2, ck, 1, shape[1])
    msp = None if line is None else (x_cols(line[0]), shape[1] - 1 - line[1])
    panels.append(
        Panel(f"axial k={ck}", lr(volume[:, ::-1, ck].T), lr(lab[:, ::-1, ck].T), spacing[1] / spacing[0], msp, left, right)
    )
    # Coronal: rows = z reversed (superior up), cols = x.
    line = _plane_line(coefficients, offset, 1, cj, 2, shape[2])
    msp = None if line is None else (x_cols(line[0]), shape[2] - 1 - line[1])
    panels.append(
        Panel(f"coronal j={cj}", lr(volume[:, cj, ::-1].T), lr(lab[:, cj, ::-1].T), spacing[2] / spacing[0], msp, left, right)
    )
    # Sagittal: rows = z reversed, cols = y reversed (the patient faces the viewer's left).
    panels.append(
        Panel(f"sagittal i={ci}", volume[ci, ::-1, ::-1].T, lab[ci, ::-1, ::-1].T, spacing[2] / spacing[1], None, "A", "P")
    )
    return panels


def _rgb(color) -> Tuple[float, float, float]:
    c = np.asarray(color, dtype=np.float64)[:3]
    return tuple(c / 255.0) if c.max() > 1.0 else tuple(c)


def _label_color(value: int, colors: Mapping[int, Sequence[float]]):
    if value in colors:
        return _rgb(colors[value])
    from matplotlib import colormaps

    return colormaps["tab10"](value % 10)[:3]


def write_overview_png(
    image: Image,
    labelmap: Union[np.ndarray, Image, None],
    path: Union[str, Path],
    plane_normal: Optional[Sequence[float]] = None,
    plane_point: Optional[Sequence[float]] = None,
    label_colors: Optional[Mapping[int, Sequence[float]]] = None,
    label_names: Optional[Mapping[int, str]] = None,
    convention: str = "radiological",
    title: Optional[str] = None,
    channel: int = 0,
    dpi: int = 100,
    maps: Optional[Mapping[str, np.ndarray]] = None,
) -> Path:
    """Write an overview PNG (axial, coronal, sagittal through the lesion centroid), atomically.

    Args:
        image: the grey-level image; for ``(C, X, Y, Z)`` images, ``channel`` is shown.
        labelmap: ``(X, Y, Z)`` integer labels on the image's grid, or None.
        path: the ``.png`` to write.
        plane_normal, plane_point: mid-sagittal plane in RAS mm (default: the grid centre
            plane, right for aligned images).
        label_colors: ``{label: (r, g, b)}`` in 0-1 or 0-255 (Slicer's colours);
            missing labels take :data:`DEFAULT_LABEL_COLORS`, then tab10.
        label_names: ``{label: name}`` for the legend.
        convention: ``"radiological"`` or ``"neurological"``.
        maps: ``{name: (X, Y, Z) map on the image's grid}``, one extra row each (same
            views, inferno colours from 0 to the map's maximum), e.g. the mirror focus.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError("the overview must be written to a .png file", path)
    panels = overview_panels(image, labelmap, plane_normal, plane_point, convention, channel)
    colors = {**DEFAULT_LABEL_COLORS, **dict(label_colors or {})}
    names = dict(label_names or {})
    present = sorted({int(v) for p in panels for v in np.unique(p.labels)} - {0})

    finite = np.concatenate([p.image[np.isfinite(p.image)].ravel() for p in panels])
    nonzero = finite[finite != 0]
    low, high = np.percentile(nonzero, (1, 99)) if nonzero.size else (0.0, 1.0)
    if high <= low:
        high = low + 1.0

    maps = dict(maps or {})
    fig = Figure(figsize=(12, 4.6 * (1 + len(maps))), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    grid = fig.subplots(1 + len(maps), 3, squeeze=False)
    axes = grid[0]
    for row, (name, values) in zip(grid[1:], maps.items()):
        # The same views as the image row: the map as the "image", the same labels pick the slices.
        map_panels = overview_panels(Image(np.asarray(values, np.float32), image.affine), labelmap, plane_normal, plane_point, convention, 0)
        top = max(1e-6, float(np.max(values)))
        for ax, panel in zip(row, map_panels):
            shown = ax.imshow(panel.image, cmap="inferno", vmin=0.0, vmax=top, aspect=panel.aspect, interpolation="nearest")
            ax.set_title(f"{panel.name}: {name}", color="white", fontsize=10)
            ax.set_axis_off()
        bar = fig.colorbar(shown, ax=list(row), fraction=0.02, pad=0.01)
        bar.ax.tick_params(colors="white", labelsize=8)
    for ax, panel in zip(axes, panels):
        ax.imshow(panel.image, cmap="gray", vmin=low, vmax=high, aspect=panel.aspect, interpolation="nearest")
        overlay = np.zeros(panel.labels.shape + (4,), np.float32)
        for value in present:
            mask = panel.labels == value
            overlay[mask, :3] = _label_color(value, colors)
            overlay[mask, 3] = 0.45
        ax.imshow(overlay, aspect=panel.aspect, interpolation="nearest")
        rows, cols = panel.image.shape
        if panel.msp is not None:
            ax.plot(panel.msp[0], panel.msp[1], color="cyan", linewidth=1.0, linestyle="--")
            ax.set_xlim(-0.5, cols - 0.5)
            ax.set_ylim(rows - 0.5, -0.5)
        for x, letter in ((0.02, panel.left_marker), (0.98, panel.right_marker)):
            ax.text(x, 0.5, letter, transform=ax.transAxes, color="yellow", fontsize=14, fontweight="bold",
                    ha="left" if x < 0.5 else "right", va="center")
        ax.set_title(panel.name, color="white", fontsize=10)
        ax.set_axis_off()
    handles = [
        Line2D([], [], marker="s", linestyle="", markersize=10, color=_label_color(v, colors), label=names.get(v, f"label {v}"))
        for v in present
    ]
    handles.append(Line2D([], [], color="cyan", linestyle="--", label="mid-sagittal plane"))
    fig.legend(handles=handles, loc="lower right", fontsize=8, facecolor="black", labelcolor="white", frameon=False,
               ncol=len(handles))
    side = "patient's right on viewer's left" if convention == "radiological" else "patient's right on viewer's right"
    fig.text(0.01, 0.02, f"{convention.capitalize()} convention: {side}", color="white", fontsize=9)
    if title:
        fig.suptitle(title, color="white", fontsize=12)

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor())
    return path
