"""Logic of the SymmetryAwareSeg module: MRML nodes in, core command line, MRML nodes out.

No widgets and no Qt here (the module must import in PythonSlicer, in a headless
``slicer-core`` environment and in tests): every method takes the scene and nodes it works
on, and the child process is a collaborator that tests may replace.

Geometry: result files are on the first input's voxel grid (contract of the core). They
are read by Slicer's own readers, which may order voxels differently from nibabel
(Slicer keeps IJK-to-RAS right-handed); everything here is therefore compared and merged
in physical (RAS) space or on the reference volume's own grid, never by raw file indices.
Arrays from VTK image data are indexed ``[k, j, i]`` (VTK order); ``IJK-to-RAS`` maps
``(i, j, k, 1)``. Left-right is RAS axis 0 (R positive).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import vtk
from vtk.util import numpy_support

import slicer

from .models import ModelCard, assign_channels, read_model_card
from .process import ChildProcess, ProgressEvent, python_executable

__all__ = [
    "CaseResult",
    "LoadedResults",
    "SymmetryAwareSegLogic",
    "build_segment_command",
    "case_id_from_path",
    "roi_mask",
    "roi_geometry",
    "voxel_centres_ras",
    "hemisphere_volumes_ml",
    "find_cases",
    "default_child_env",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
"""Files the batch runner takes as input images."""

LABEL_VALUE_TAG = "SymmetryAwareSeg.LabelValue"
"""Segment tag holding the label value of the core's label map (survives .seg.nrrd)."""

# Colour tables Slicer ships as files: found by name in a full Slicer scene. Headless
# (slicer-core) they are missing, and an equivalent table is built from matplotlib.
SIGNED_COLORMAP = ("DivergingBlueRed", "RdBu_r")
MAGNITUDE_COLORMAP = ("Inferno", "inferno")
ALTERNATIVE_MAGNITUDE_COLORMAP = ("Viridis", "viridis")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


# ---------------------------------------------------------------------------------------
# Pure helpers (numpy only): tested without a scene
# ---------------------------------------------------------------------------------------
def case_id_from_path(path: Union[str, Path]) -> str:
    """The core's case id: the file name without its extensions (``a/b.nii.gz`` -> ``b``)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES + (".seg.nrrd",), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name.split(".")[0]


def build_segment_command(
    python: str,
    inputs: Sequence[Union[str, Path]],
    output_dir: Union[str, Path],
    model: str = "",
    device: str = "auto",
    overlap: float = 0.25,
    tta: bool = False,
    roi_center: Optional[Sequence[float]] = None,
    roi_size: Optional[Sequence[float]] = None,
    core_module: str = "SymmetryAwareCore",
) -> List[str]:
    """Argument vector of ``python -m SymmetryAwareCore segment`` (the core's contract).

    ``roi_center`` and ``roi_size`` are RAS millimetres and go together.
    """
    if not inputs:
        raise ValueError("at least one input image is needed")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    # The case folder is named here, not left to the core's own naming rule, so the logic
    # knows where the results land whatever the files are called.
    command = [python, "-m", core_module, "segment", *[str(p) for p in inputs], "--output-dir", str(output_dir)]
    command += ["--case-id", case_id_from_path(inputs[0])]
    if model:
        command += ["--model", str(model)]
    command += ["--device", device, "--overlap", f"{float(overlap):g}"]
    if tta:
        command.append("--tta")
    if (roi_center is None) != (roi_size is None):
        raise ValueError("roi_center and roi_size go together")
    if roi_center is not None:
        if any(float(s) <= 0 for s in roi_size):
            raise ValueError(f"ROI size must be positive, not {tuple(roi_size)}")
        command += ["--roi-center", ",".join(f"{float(v):g}" for v in roi_center)]
        command += ["--roi-size", ",".join(f"{float(v):g}" for v in roi_size)]
    command += ["--progress", "machine"]
    return command


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


# ---------------------------------------------------------------------------------------
# Results of one run
# ---------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    """Files of one finished case (``DIR/<case_id>/``), as promised by the core."""

    case_dir: Path

    @property
    def case_id(self) -> str:
        return self.case_dir.name

    def file(self, name: str) -> Path:
        return self.case_dir / name

    @property
    def segmentation(self) -> Path:
        return self.file("segmentation.nii.gz")

    @property
    def report(self) -> Dict:
        path = self.file("report.json")
        if not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class LoadedResults:
    """Nodes created (or updated) by :meth:`SymmetryAwareSegLogic.load_results`."""

    segmentation: object = None
    attention: object = None
    asymmetry: object = None
    plane: object = None
    table: object = None
    extra: Dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# The logic
# ---------------------------------------------------------------------------------------
class SymmetryAwareSegLogic:
    """Run SA-Swin segmentation on volume nodes and load its results into a scene.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` inside Slicer; any
            ``vtkMRMLScene`` headless).
        python: interpreter that runs the core (default: PythonSlicer, else this Python).
        core_module: module run with ``-m`` (tests substitute a fake core).
        process_factory: builds the child process; ``ChildProcess`` by default.
        env: extra environment for the child (e.g. ``PYTHONPATH`` to the shipped core).
    """

    def __init__(
        self,
        scene=None,
        python: Optional[str] = None,
        core_module: str = "SymmetryAwareCore",
        process_factory: Callable[..., ChildProcess] = ChildProcess,
        env: Optional[Dict[str, str]] = None,
    ):
        self.scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
        if self.scene is None:
            raise ValueError("no MRML scene: pass scene=slicer.vtkMRMLScene() outside Slicer")
        self.python = python or python_executable()
        self.core_module = core_module
        self.process_factory = process_factory
        self.env = dict(env) if env is not None else default_child_env()
        _register_segmentation_converters()

    # -- inputs -----------------------------------------------------------------------
    def assign_volumes(self, card: ModelCard, volume_nodes: Sequence) -> List:
        """Order ``volume_nodes`` as the model's channels, matching node names to patterns.

        Raises ``ValueError`` naming the channels left without a volume.
        """
        nodes = [n for n in volume_nodes if n is not None]
        if len(card.channels) == 1 and len(nodes) == 1:
            return nodes  # one channel, one volume: nothing to match
        picks = assign_channels(card.channels, [n.GetName() for n in nodes])
        missing = [name for (name, _), pick in zip(card.channels, picks) if pick is None]
        if missing:
            raise ValueError(
                f"model {card.name}: no input volume matches channel(s) {', '.join(missing)}; "
                "rename the volumes or pick them in the model's order"
            )
        return [nodes[i] for i in picks]

    def export_inputs(self, volume_nodes: Sequence, folder: Union[str, Path]) -> List[Path]:
        """Write volume nodes as NIfTI files named after the nodes (the core's case id).

        A volume under a transform is refused: the file would silently drop the transform.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for node in volume_nodes:
            if node.GetParentTransformNode() is not None:
                raise ValueError(f"volume {node.GetName()!r} is under a transform: harden it first")
            path = folder / f"{_safe_file_name(node.GetName())}.nii.gz"
            if path in paths:
                path = folder / f"{_safe_file_name(node.GetName())}_{len(paths)}.nii.gz"
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(str(path))
            storage.SetUseCompression(True)
            if not storage.WriteData(node):
                raise ValueError(f"{path}: could not write volume {node.GetName()!r}")
            paths.append(path)
        return paths

    # -- running ------------------------------------------------------------------------
    def start_case(
        self,
        inputs: Sequence[Union[str, Path]],
        output_dir: Union[str, Path],
        on_event: Optional[Callable[[ProgressEvent], None]] = None,
        **options,
    ) -> Tuple[ChildProcess, CaseResult]:
        """Start the core on input files; return the running child and where results go.

        ``options``: ``model``, ``device``, ``overlap``, ``tta``, ``roi_center``, ``roi_size``
        as in :func:`build_segment_command`. Non-blocking: poll or wait on the child.
        """
        command = build_segment_command(self.python, inputs, output_dir, core_module=self.core_module, **options)
        child = self.process_factory(command, env=self.env, on_event=on_event)
        child.start()
        return child, CaseResult(Path(output_dir) / case_id_from_path(inputs[0]))

    def run_case(self, inputs, output_dir, on_event=None, timeout: Optional[float] = None, **options) -> CaseResult:
        """Blocking :meth:`start_case`: raises ``ProcessFailed``/``ProcessCancelled``."""
        child, result = self.start_case(inputs, output_dir, on_event=on_event, **options)
        child.wait(timeout=timeout)
        if not result.segmentation.is_file():
            raise RuntimeError(f"{result.segmentation}: the core finished without writing it")
        return result

    # -- loading results ------------------------------------------------------------------
    def load_results(
        self,
        result: Union[CaseResult, str, Path],
        reference_volume,
        segmentation_node=None,
        roi_node=None,
        opacity: float = 0.6,
        show_attention: bool = True,
    ) -> LoadedResults:
        """Load a case's files into the scene, on ``reference_volume``'s geometry.

        With ``roi_node`` the existing ``segmentation_node`` is replaced only inside the ROI
        (ROI mode); otherwise it is replaced entirely (or created).
        """
        if not isinstance(result, CaseResult):
            result = CaseResult(Path(result))
        if not result.segmentation.is_file():
            raise ValueError(f"{result.segmentation}: missing (not a finished case folder)")
        labels = _labels_from_report(result.report)
        loaded = LoadedResults()
        if roi_node is not None and segmentation_node is not None and segmentation_node.GetSegmentation().GetNumberOfSegments():
            loaded.segmentation = self.replace_inside_roi(segmentation_node, result.segmentation, labels, roi_node, reference_volume)
        else:
            loaded.segmentation = self.load_segmentation(result.segmentation, labels, reference_volume, segmentation_node)
        if loaded.segmentation.GetDisplayNode() is not None:
            loaded.segmentation.GetDisplayNode().SetOpacity(opacity)
        case = result.case_id
        if result.file("attention.nii.gz").is_file():
            loaded.attention = self.load_map(result.file("attention.nii.gz"), f"{case} attention", signed=False)
        if result.file("asymmetry.nii.gz").is_file():
            loaded.asymmetry = self.load_map(result.file("asymmetry.nii.gz"), f"{case} asymmetry", signed=True)
        if result.file("msp.mrk.json").is_file():
            loaded.plane = self.load_plane(result.file("msp.mrk.json"), f"{case} mid-sagittal plane")
        loaded.table = self.volume_table(loaded.segmentation, reference_volume, loaded.plane, name=f"{case} volumes")
        _place_beside(reference_volume, [loaded.segmentation, loaded.attention, loaded.asymmetry, loaded.plane, loaded.table])
        if show_attention and loaded.attention is not None:
            self.show_overlay(reference_volume, loaded.attention, opacity)
        return loaded

    def load_segmentation(self, path, labels: Sequence[Dict], reference_volume, segmentation_node=None):
        """A segmentation node from a label map file, named and coloured from ``labels``.

        ``labels``: ``[{"value", "name", "color": [r, g, b]}]`` (the report's list). Every
        label gets a segment, empty ones included, so the table lists them all.
        """
        labelmap = self._read_volume(path, "vtkMRMLLabelMapVolumeNode", "__symmetryaware_labels__")
        try:
            return self._segmentation_from_labelmap(labelmap, labels, reference_volume, segmentation_node)
        finally:
            self.scene.RemoveNode(labelmap)

    def labels_on_reference(self, segmentation_node, reference_volume) -> Tuple[np.ndarray, np.ndarray]:
        """``(labels[k, j, i], ijk_to_ras)`` of a segmentation on the reference's grid.

        Label values come from the segments' :data:`LABEL_VALUE_TAG` (the core's values).
        """
        segmentation = segmentation_node.GetSegmentation()
        ids = vtk.vtkStringArray()
        values = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            ids.InsertNextValue(segment_id)
            tag = _segment_tag(segmentation.GetSegment(segment_id), LABEL_VALUE_TAG)
            values.append(int(tag) if tag else index + 1)
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__symmetryaware_export__")
        try:
            if ids.GetNumberOfValues() == 0:
                shape = _array_from_volume(reference_volume).shape
                return np.zeros(shape, np.uint8), _ijk_to_ras(reference_volume)
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference_volume):
                raise RuntimeError(f"could not export {segmentation_node.GetName()} on {reference_volume.GetName()}")
            exported = _array_from_volume(labelmap).astype(np.int32)
            out = np.zeros(exported.shape, np.uint8)
            for order, value in enumerate(values, start=1):
                out[exported == order] = value  # export numbers segments 1..n in id order
            return out, _ijk_to_ras(labelmap)
        finally:
            self.scene.RemoveNode(labelmap)

    def replace_inside_roi(self, segmentation_node, new_labels_path, labels, roi_node, reference_volume):
        """Replace the segmentation inside ``roi_node`` by the new result, keep it outside."""
        old, ijk_to_ras = self.labels_on_reference(segmentation_node, reference_volume)
        staging = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__symmetryaware_roi__")
        try:
            self.load_segmentation(new_labels_path, labels, reference_volume, staging)
            new, _ = self.labels_on_reference(staging, reference_volume)
        finally:
            self.scene.RemoveNode(staging)
        center, size, axes = roi_geometry(roi_node)
        inside = roi_mask(old.shape, ijk_to_ras, center, size, axes)
        merged = np.where(inside, new, old).astype(np.uint8)
        known = {int(l["value"]) for l in labels}
        for index in range(segmentation_node.GetSegmentation().GetNumberOfSegments()):
            segment = segmentation_node.GetSegmentation().GetNthSegment(index)
            tag = _segment_tag(segment, LABEL_VALUE_TAG)
            if tag and int(tag) not in known:
                color = segment.GetColor()
                labels = list(labels) + [{"value": int(tag), "name": segment.GetName(), "color": list(color)}]
        labelmap = _labelmap_node_from_array(self.scene, merged, ijk_to_ras, "__symmetryaware_merged__")
        try:
            return self._segmentation_from_labelmap(labelmap, labels, reference_volume, segmentation_node)
        finally:
            self.scene.RemoveNode(labelmap)

    def _segmentation_from_labelmap(self, labelmap, labels, reference_volume, segmentation_node=None):
        # Values the report does not name still become (generically named) segments, so
        # no voxel is dropped and every segment knows its label value.
        named = {int(l["value"]) for l in labels}
        labels = list(labels) + [l for l in _default_labels(_array_from_volume(labelmap)) if l["value"] not in named]
        colors = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "__symmetryaware_colors__")
        try:
            top = max((int(l["value"]) for l in labels), default=0)
            colors.SetTypeToUser()
            colors.SetNumberOfColors(top + 1)
            colors.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
            for label in labels:
                r, g, b = (float(c) for c in label.get("color", (0.5, 0.5, 0.5))[:3])
                colors.SetColor(int(label["value"]), str(label["name"]), r, g, b, 1.0)
            if labelmap.GetDisplayNode() is None:
                labelmap.CreateDefaultDisplayNodes()
            labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
            if segmentation_node is None:
                segmentation_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
                segmentation_node.SetName(self.scene.GenerateUniqueName(f"{reference_volume.GetName()} segmentation"))
            if segmentation_node.GetDisplayNode() is None:
                segmentation_node.CreateDefaultDisplayNodes()
            segmentation_node.GetSegmentation().RemoveAllSegments()
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node):
                raise RuntimeError(f"could not import {labelmap.GetName()} into {segmentation_node.GetName()}")
            segmentation = segmentation_node.GetSegmentation()
            by_name = {str(l["name"]): l for l in labels}
            present = set()
            for index in range(segmentation.GetNumberOfSegments()):
                segment = segmentation.GetNthSegment(index)
                label = by_name.get(segment.GetName())
                if label is None:
                    continue
                segment.SetColor(*[float(c) for c in label["color"][:3]])
                segment.SetTag(LABEL_VALUE_TAG, str(int(label["value"])))
                present.add(segment.GetName())
            for label in sorted(labels, key=lambda l: int(l["value"])):
                if str(label["name"]) in present:
                    continue
                segment_id = segmentation.AddEmptySegment("", str(label["name"]), [float(c) for c in label["color"][:3]])
                segmentation.GetSegment(segment_id).SetTag(LABEL_VALUE_TAG, str(int(label["value"])))
            _order_segments_by_value(segmentation)
            return segmentation_node
        finally:
            self.scene.RemoveNode(colors)

    def load_map(self, path, name: str, signed: bool, colormap: Optional[Tuple[str, str]] = None):
        """A scalar volume node for an attention (magnitude) or asymmetry (signed) map.

        Signed maps get ``DivergingBlueRed`` with the window centred at 0 (symmetric about
        the largest magnitude); magnitude maps ``Inferno`` over 0..max. Returns the node.
        """
        node = self._read_volume(path, "vtkMRMLScalarVolumeNode", name)
        values = _array_from_volume(node)
        display = node.GetDisplayNode()
        colormap = colormap or (SIGNED_COLORMAP if signed else MAGNITUDE_COLORMAP)
        display.SetAndObserveColorNodeID(self.color_node(*colormap).GetID())
        display.AutoWindowLevelOff()
        finite = values[np.isfinite(values)]
        if signed:
            extent = float(np.max(np.abs(finite))) if finite.size else 1.0
            extent = extent if extent > 0 else 1.0
            display.SetWindowLevelMinMax(-extent, extent)
        else:
            top = float(finite.max()) if finite.size else 1.0
            display.SetWindowLevelMinMax(0.0, top if top > 0 else 1.0)
        _add_color_legend(node)
        return node

    def color_node(self, slicer_name: str, matplotlib_name: str):
        """Slicer's colour table ``slicer_name``, or an equivalent one built headless."""
        existing = self.scene.GetNodesByClassByName("vtkMRMLColorNode", slicer_name)
        if existing.GetNumberOfItems():
            return existing.GetItemAsObject(0)
        node = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", slicer_name)
        node.SetTypeToUser()
        node.SetNumberOfColors(256)
        ramp = _colormap_ramp(matplotlib_name, 256)
        for index, (r, g, b) in enumerate(ramp):
            node.SetColor(index, "", float(r), float(g), float(b), 1.0)
        node.SetAttribute("Category", "SymmetryAwareSeg")
        return node

    def load_plane(self, path, name: str):
        """A markups plane node from ``msp.mrk.json``; the file's coordinate system is honoured.

        Slicer's reader handles full files; the ``center``/``normal`` of the file are then
        applied explicitly, so a minimal file (no orientation matrix) is read right too.
        """
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsPlaneNode", name)
        storage = slicer.vtkMRMLMarkupsJsonStorageNode()
        self.scene.AddNode(storage)
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            self.scene.RemoveNode(storage)
            self.scene.RemoveNode(node)
            raise ValueError(f"{path}: not a readable markups plane")
        node.SetAndObserveStorageNodeID(storage.GetID())
        node.SetName(name)
        markup = (json.loads(Path(path).read_text(encoding="utf-8")).get("markups") or [{}])[0]
        to_ras = _LPS_TO_RAS if str(markup.get("coordinateSystem", "LPS")).upper() == "LPS" else np.eye(3)
        if "normal" in markup:
            normal = to_ras @ np.asarray(markup["normal"], dtype=np.float64)
            node.SetNormalWorld(*normal)
        if "center" in markup:
            node.SetOriginWorld(*(to_ras @ np.asarray(markup["center"], dtype=np.float64)))
        return node

    def volume_table(self, segmentation_node, reference_volume, plane_node=None, name: str = "volumes", table_node=None):
        """A table node: one row per segment, volume (mL) left, right and total.

        Hemispheres are split by ``plane_node`` (the mid-sagittal plane), else by x = 0.
        """
        labels, ijk_to_ras = self.labels_on_reference(segmentation_node, reference_volume)
        origin = normal = None
        if plane_node is not None:
            origin, normal = [0.0] * 3, [0.0] * 3
            plane_node.GetOriginWorld(origin)
            plane_node.GetNormalWorld(normal)
        segmentation = segmentation_node.GetSegmentation()
        rows = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            tag = _segment_tag(segment, LABEL_VALUE_TAG)
            rows.append((segment.GetName(), int(tag) if tag else index + 1))
        volumes = hemisphere_volumes_ml(labels, ijk_to_ras, [v for _, v in rows], origin, normal)
        if table_node is None:
            table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        table = table_node.GetTable()
        table.Initialize()
        columns = [vtk.vtkStringArray(), vtk.vtkIntArray()] + [vtk.vtkDoubleArray() for _ in range(3)]
        for array, title in zip(columns, ("Segment", "Label", "Left (mL)", "Right (mL)", "Total (mL)")):
            array.SetName(title)
            table.AddColumn(array)
        table.SetNumberOfRows(len(rows))
        for row, (segment_name, value) in enumerate(rows):
            left, right, total = volumes[value]
            table.SetValue(row, 0, vtk.vtkVariant(segment_name))
            table.SetValue(row, 1, vtk.vtkVariant(value))
            table.SetValue(row, 2, vtk.vtkVariant(round(left, 4)))
            table.SetValue(row, 3, vtk.vtkVariant(round(right, 4)))
            table.SetValue(row, 4, vtk.vtkVariant(round(total, 4)))
        table_node.Modified()
        return table_node

    def show_overlay(self, background_volume, foreground_volume, opacity: float = 0.6) -> None:
        """Show ``foreground_volume`` over ``background_volume`` in every slice view."""
        composites = self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
        for index in range(composites.GetNumberOfItems()):
            composite = composites.GetItemAsObject(index)
            composite.SetBackgroundVolumeID(background_volume.GetID())
            composite.SetForegroundVolumeID(foreground_volume.GetID())
            composite.SetForegroundOpacity(float(opacity))

    # -- markups helpers ------------------------------------------------------------------
    def mirror_point(self, markups_node, index: int, plane_node, target_node=None) -> np.ndarray:
        """Mirror control point ``index`` of ``markups_node`` across ``plane_node``.

        The mirrored point is added to ``target_node`` (default: the same node), labelled
        ``"<label> (mirror)"``. Returns its RAS position. The reflection is the core's
        :func:`SymmetryAwareCore.geometry.mirror.mirror_points_ras` (the one mirror relation).
        """
        from SymmetryAwareCore.geometry.mirror import mirror_points_ras

        if not 0 <= index < markups_node.GetNumberOfControlPoints():
            raise ValueError(f"{markups_node.GetName()} has no control point {index}")
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(index, position)
        origin, normal = [0.0] * 3, [0.0] * 3
        plane_node.GetOriginWorld(origin)
        plane_node.GetNormalWorld(normal)
        mirrored = mirror_points_ras(np.asarray([position]), np.asarray(normal), np.asarray(origin))[0]
        target = target_node if target_node is not None else markups_node
        new_index = target.AddControlPointWorld(vtk.vtkVector3d(*mirrored))
        target.SetNthControlPointLabel(new_index, f"{markups_node.GetNthControlPointLabel(index)} (mirror)")
        return mirrored

    # -- saving ---------------------------------------------------------------------------
    def save_segmentation(self, segmentation_node, path) -> Path:
        """Write a ``.seg.nrrd`` (atomic: temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name.split('.')[0]}.tmp.seg.nrrd")
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(temporary))
        try:
            if not storage.WriteData(segmentation_node):
                raise RuntimeError(f"{path}: could not write the segmentation")
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()
        return path

    def save_volume(self, volume_node, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(volume_node):
            raise RuntimeError(f"{path}: could not write {volume_node.GetName()}")
        return path

    def save_bundle(self, path) -> Path:
        """Save the whole scene as a Medical Reality Bundle (``.mrb``, a zip)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        application_logic = slicer.vtkMRMLApplicationLogic()
        application_logic.SetMRMLScene(self.scene)
        with tempfile.TemporaryDirectory(prefix="symmetryaware_mrb_") as staging:
            bundle_dir = Path(staging) / path.stem
            bundle_dir.mkdir()
            if not application_logic.SaveSceneToSlicerDataBundleDirectory(str(bundle_dir)):
                raise RuntimeError(f"{path}: could not save the scene")
            temporary = path.with_name(f".{path.stem}.tmp.mrb")
            if not application_logic.Zip(str(temporary), str(bundle_dir)):
                raise RuntimeError(f"{path}: could not zip the scene")
            os.replace(temporary, path)
        return path

    # -- batch ----------------------------------------------------------------------------
    def batch(
        self,
        input_dir,
        output_dir,
        model: str = "",
        save_bundle: bool = True,
        on_event: Optional[Callable[[str, ProgressEvent], None]] = None,
        **options,
    ) -> List[Dict]:
        """Segment every case of a folder; per case save ``.seg.nrrd``, maps and an ``.mrb``.

        A case is a sub-folder of ``input_dir`` holding its channel images (ordered by the
        model card's patterns when ``model`` is a card path), or a single image file at the
        top level. Each case is loaded into a fresh scene of its own. A failing case is
        recorded (``"error"``) and the batch goes on. Returns one summary dict per case.
        """
        cases = find_cases(input_dir)
        if not cases:
            raise ValueError(f"{input_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        card = _card_or_none(model)
        summaries = []
        for files in cases:
            if card is not None:
                picks = assign_channels(card.channels, [p.name for p in files])
                if all(p is not None for p in picks):
                    files = [files[i] for i in picks]
            case_id = case_id_from_path(files[0])
            summary = {"case": case_id, "inputs": [str(p) for p in files]}
            try:
                callback = None if on_event is None else (lambda event, c=case_id: on_event(c, event))
                result = self.run_case(files, output_dir, on_event=callback, model=model, **options)
                case_logic = SymmetryAwareSegLogic(
                    scene=slicer.vtkMRMLScene(), python=self.python, core_module=self.core_module,
                    process_factory=self.process_factory, env=self.env,
                )
                reference = case_logic._read_volume(files[0], "vtkMRMLScalarVolumeNode", case_id)
                loaded = case_logic.load_results(result, reference, show_attention=False)
                summary["segmentation"] = str(case_logic.save_segmentation(loaded.segmentation, result.case_dir / f"{case_id}.seg.nrrd"))
                for key, node in (("attention", loaded.attention), ("asymmetry", loaded.asymmetry)):
                    if node is not None:
                        summary[key] = str(case_logic.save_volume(node, result.case_dir / f"{case_id}_{key}.nrrd"))
                if save_bundle:
                    summary["bundle"] = str(case_logic.save_bundle(result.case_dir / f"{case_id}.mrb"))
            except Exception as error:  # one bad case must not stop a night's batch
                summary["error"] = str(error)
            summaries.append(summary)
        return summaries

    # -- file reading ---------------------------------------------------------------------
    def _read_volume(self, path, class_name: str, name: str):
        """Read an image file into a new volume node with Slicer's reader.

        Slicer's ITK reader refuses some valid NIfTI files (float16 data, for one); those
        are read with nibabel when it is present.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: file not found")
        node = self.scene.AddNewNodeByClass(class_name, name)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        if storage.ReadData(node):
            node.SetName(name)
            node.CreateDefaultDisplayNodes()
            return node
        try:
            import nibabel
        except ImportError:
            self.scene.RemoveNode(node)
            raise ValueError(f"{path}: Slicer cannot read this image and nibabel is not installed") from None
        image = nibabel.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32) if class_name != "vtkMRMLLabelMapVolumeNode" else np.asarray(image.dataobj))
        if data.ndim != 3:
            self.scene.RemoveNode(node)
            raise ValueError(f"{path}: expected a 3D image, got shape {data.shape}")
        _set_volume_array(node, np.ascontiguousarray(np.transpose(data, (2, 1, 0))), image.affine)
        node.CreateDefaultDisplayNodes()
        return node


# ---------------------------------------------------------------------------------------
# Small MRML/VTK helpers (explicit scene; slicer.util's helpers need the global scene)
# ---------------------------------------------------------------------------------------
def default_child_env() -> Dict[str, str]:
    """Environment for the child: the folder holding the shipped ``SymmetryAwareCore`` first.

    Inside Slicer the core is installed beside the module (see the top CMakeLists.txt);
    headless, the installed package is found as usual.
    """
    try:
        import SymmetryAwareCore
    except ImportError:
        return {}
    root = str(Path(SymmetryAwareCore.__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": root + (os.pathsep + existing if existing else "")}


def find_cases(input_dir) -> List[List[Path]]:
    """Cases of a batch folder: each sub-folder's images, then each loose image."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"{input_dir}: not a folder")

    def images(folder: Path) -> List[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.startswith("."))

    cases = [images(sub) for sub in sorted(p for p in input_dir.iterdir() if p.is_dir())]
    cases = [c for c in cases if c]
    cases += [[p] for p in images(input_dir)]
    return cases


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


def _place_beside(reference_node, nodes) -> None:
    """Put ``nodes`` under the reference volume's parent (its study) in the subject hierarchy."""
    scene = reference_node.GetScene()
    try:
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    except AttributeError:
        hierarchy = None
    if hierarchy is None:
        return
    parent = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(reference_node))
    if not parent:
        return
    for node in nodes:
        if node is None:
            continue
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:  # headless scenes get no items automatically
            hierarchy.CreateItem(parent, node)


def _card_or_none(model: str) -> Optional[ModelCard]:
    if model and str(model).lower().endswith(".json") and Path(model).is_file():
        return read_model_card(model)
    return None


def _safe_file_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "volume"


def _ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _array_from_volume(volume_node) -> np.ndarray:
    """A copy of the voxels, indexed ``[k, j, i]`` (VTK order)."""
    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).copy()


def _set_volume_array(volume_node, array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> None:
    image = vtk.vtkImageData()
    image.SetDimensions(array_kji.shape[2], array_kji.shape[1], array_kji.shape[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array_kji).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    volume_node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_ras[r, c]))
    volume_node.SetIJKToRASMatrix(matrix)


def _labelmap_node_from_array(scene, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    _set_volume_array(node, array_kji.astype(np.uint8), ijk_to_ras)
    node.CreateDefaultDisplayNodes()
    return node


def _segment_tag(segment, tag: str) -> str:
    value = ""
    try:
        found = segment.GetTag(tag)  # newer VTK wrapping returns the value
        if isinstance(found, str):
            return found
    except TypeError:
        pass
    holder = vtk.reference("")
    if segment.GetTag(tag, holder):
        value = str(holder)
    return value


def _order_segments_by_value(segmentation) -> None:
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    values = {sid: int(_segment_tag(segmentation.GetSegment(sid), LABEL_VALUE_TAG) or 0) for sid in ids}
    for position, sid in enumerate(sorted(ids, key=lambda s: values[s])):
        segmentation.SetSegmentIndex(sid, position)


def _labels_from_report(report: Dict) -> List[Dict]:
    labels = report.get("labels") or []
    return [l for l in labels if int(l.get("value", 0)) > 0]


def _default_labels(array: np.ndarray) -> List[Dict]:
    ramp = _colormap_ramp("tab10", 10)
    return [
        {"value": int(v), "name": f"Label {int(v)}", "color": list(ramp[i % 10])}
        for i, v in enumerate(v for v in np.unique(array) if v > 0)
    ]


def _colormap_ramp(matplotlib_name: str, count: int) -> np.ndarray:
    """``(count, 3)`` RGB in 0..1; a blue-white-red or black-yellow ramp without matplotlib."""
    try:
        from matplotlib import colormaps

        return np.asarray(colormaps[matplotlib_name].resampled(count)(np.arange(count)))[:, :3]
    except (ImportError, KeyError):
        t = np.linspace(0.0, 1.0, count)[:, None]
        if matplotlib_name.lower().startswith("rdbu"):
            blue, white, red = np.array([0.0, 0.0, 1.0]), np.ones(3), np.array([1.0, 0.0, 0.0])
            return np.where(t < 0.5, blue + (white - blue) * (t * 2), white + (red - white) * (t * 2 - 1))
        return np.hstack([t, t ** 2, np.zeros_like(t)])


def _add_color_legend(volume_node) -> None:
    scene = volume_node.GetScene()
    if scene is None or not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        return  # headless slicer-core has no colour legend nodes
    try:
        slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volume_node)
    except Exception:  # no legend support (old Slicer / headless): the map still shows
        pass


_CONVERTERS_REGISTERED = False


def _register_segmentation_converters() -> None:
    """Register labelmap <-> surface rules once; Slicer does this itself, slicer-core does not."""
    global _CONVERTERS_REGISTERED
    if _CONVERTERS_REGISTERED:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    names = set()
    rules = factory.GetConverterRules()
    for rule in rules if isinstance(rules, (list, tuple)) else []:
        names.add(rule.GetName())
    for rule_class in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule, slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        rule = rule_class()
        if rule.GetName() not in names:
            factory.RegisterConverterRule(rule)
    _CONVERTERS_REGISTERED = True
