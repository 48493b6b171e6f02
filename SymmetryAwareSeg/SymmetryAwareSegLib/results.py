"""Results into the scene: a finished case folder becomes nodes on the input's geometry.

Result files are on the first input's voxel grid (contract of the core). They are read by
Slicer's own readers, which may order voxels differently from nibabel (Slicer keeps
IJK-to-RAS right-handed); everything is therefore compared and merged in physical (RAS)
space or on the reference volume's own grid, never by raw file indices. Arrays from VTK
image data are indexed ``[k, j, i]``; left-right is RAS axis 0 (R positive).

Segments carry standard terminology (from the core's ``.seg.nrrd``, which codes each label
with SNOMED CT / NCIt) and a laterality (left, right, bilateral: the side of the
mid-sagittal plane holding the segment) as the entry's anatomic region modifier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import vtk

import slicer

from .command import CaseResult
from .nodes import (
    LABEL_VALUE_TAG,
    add_color_legend,
    array_from_volume,
    colormap_ramp,
    default_labels,
    ijk_to_ras,
    labelmap_node_from_array,
    labels_from_report,
    order_segments_by_value,
    place_beside,
    read_volume,
    segment_tag,
)
from .tables import laterality_of, roi_geometry, roi_mask

try:
    from slicer.i18n import tr as _
except ImportError:  # headless (slicer-core) or a Slicer without translations
    def _(text: str) -> str:
        return text

__all__ = [
    "run_summary",
    "LoadedResults",
    "ResultsMixin",
    "terminology_by_value",
    "with_laterality",
    "TERMINOLOGY_TAG",
    "SIGNED_COLORMAP",
    "MAGNITUDE_COLORMAP",
    "MAP_STYLES",
    "MapStyle",
    "map_window",
]

# Colour tables Slicer ships as files: found by name in a full Slicer scene. Headless
# (slicer-core) they are missing, and an equivalent table is built from matplotlib.
SIGNED_COLORMAP = ("DivergingBlueRed", "RdBu_r")
MAGNITUDE_COLORMAP = ("Inferno", "inferno")
ALTERNATIVE_MAGNITUDE_COLORMAP = ("Viridis", "viridis")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class MapStyle:
    """How one of the core's maps is shown: colour table, window and legend.

    ``window``: ``"unit"`` (0..1, the map's definition range: mirror focus), ``"peak"``
    (0..the map's maximum: point attention, per mL, whose scale varies by case) or
    ``"symmetric"`` (-m..m around 0, m the largest magnitude: signed asymmetry).
    """

    colormap: Tuple[str, str]
    window: str
    title: str
    label_format: str


MAP_STYLES: Dict[str, MapStyle] = {
    "attention": MapStyle(MAGNITUDE_COLORMAP, "unit", "Mirror focus (0-1)", "%.2f"),
    "attention_from": MapStyle(MAGNITUDE_COLORMAP, "peak", "Point attention (per mL)", "%.3g"),
    "asymmetry": MapStyle(SIGNED_COLORMAP, "symmetric", "Asymmetry p(x) - p(mirror x)", "%.2f"),
    # The symmetry head's score is defined on 0..1 for every scan, so scans compare by colour.
    "zero_shot": MapStyle(MAGNITUDE_COLORMAP, "unit", "Zero-shot asymmetry (0-1)", "%.2f"),
    # A classifier's lesion map: the probability of its finding per region, 0..1 like its score.
    "finding": MapStyle(MAGNITUDE_COLORMAP, "unit", "Finding probability (0-1)", "%.2f"),
}
"""Display of each map, by its key in the contract's ``OUTPUT_FILES`` (``finding``: a
classifier's map, :mod:`.classification`)."""

TERMINOLOGY_TAG = getattr(getattr(slicer, "vtkSegment", None), "GetTerminologyEntryTagName", lambda: "TerminologyEntry")()
"""Segment tag Slicer reads a segment's terminology from (``vtkSegment::GetTerminologyEntryTagName``)."""

# Codes for laterality (SNOMED CT), used as the anatomic region modifier of "Brain".
_BRAIN = "SCT^12738006^Brain"
_SIDES = {"left": "SCT^7771000^Left", "right": "SCT^24028007^Right", "bilateral": "SCT^51440002^Right and left"}
_GENERIC_ENTRY = (
    "Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered Structure"
    "~SCT^52988006^Lesion~^^~Anatomic codes - DICOM master list~^^~^^"
)


def terminology_by_value(seg_nrrd: Union[str, Path]) -> Dict[int, str]:
    """``{label value: TerminologyEntry}`` read from a ``.seg.nrrd`` header (no image data).

    The core writes each segment's ``LabelValue`` and its terminology as a tag; a missing or
    unreadable file gives ``{}`` (segments then get a generic "Lesion" entry).
    """
    fields: Dict[str, str] = {}
    try:
        with open(seg_nrrd, "rb") as handle:
            for raw in handle:
                line = raw.decode("latin-1").rstrip("\r\n")
                if not line:
                    break  # end of the NRRD header
                if ":=" in line:
                    key, value = line.split(":=", 1)
                    fields[key.strip()] = value
    except OSError:
        return {}
    out = {}
    index = 0
    while f"Segment{index}_ID" in fields:
        value = fields.get(f"Segment{index}_LabelValue")
        tags = dict(item.split(":", 1) for item in fields.get(f"Segment{index}_Tags", "").split("|") if ":" in item)
        entry = tags.get("TerminologyEntry", "")
        if value is not None and entry:
            out[int(value)] = entry
        index += 1
    return out


def with_laterality(entry: str, side: Optional[str]) -> str:
    """``entry`` with anatomic region "Brain" and ``side`` (left/right/bilateral) as its modifier.

    Entry fields: ``context~category~type~typeModifier~anatomicContext~region~regionModifier``.
    """
    fields = (entry or _GENERIC_ENTRY).split("~")
    if len(fields) != 7:
        fields = _GENERIC_ENTRY.split("~")
    if side in _SIDES:
        fields[4] = fields[4] or "Anatomic codes - DICOM master list"
        fields[5] = _BRAIN
        fields[6] = _SIDES[side]
    return "~".join(fields)


def map_window(values: np.ndarray, window: str) -> Tuple[float, float]:
    """Display range ``(low, high)`` of a map by its :class:`MapStyle` window kind."""
    finite = np.asarray(values)[np.isfinite(values)]
    if window == "unit":
        return 0.0, 1.0
    if window == "symmetric":
        extent = float(np.max(np.abs(finite))) if finite.size else 0.0
        extent = extent if extent > 0 else 1.0
        return -extent, extent
    if window == "peak":
        top = float(finite.max()) if finite.size else 0.0
        return 0.0, top if top > 0 else 1.0
    raise ValueError(f"unknown map window {window!r}")


def run_summary(report: dict) -> str:
    """What the radiologist should know about a finished run: device, fallbacks, notes."""
    lines = []
    device = report.get("device")
    if device:
        lines.append(_("Device used: {device}").format(device=device))
    notes = [str(n) for n in report.get("notes") or []]
    fallbacks = [n for n in notes if "out of memory" in n.lower() or "out-of-memory" in n.lower() or "fallback" in n.lower()]
    if fallbacks:
        lines.append(_("Out-of-memory fallback: {what}").format(what="; ".join(fallbacks)))
    others = [n for n in notes if n not in fallbacks]
    if others:
        lines.append(_("Notes: {notes}").format(notes="; ".join(others)))
    zero_shot = report.get("zero_shot_asymmetry")
    if isinstance(zero_shot, dict) and zero_shot.get("score") is not None:
        head = (zero_shot.get("head") or {}).get("name")
        text = _("Zero-shot asymmetry: {score:.2f} (0 symmetric, 1 opposite)").format(score=float(zero_shot["score"]))
        lines.append(text + (f"; {head}" if head else ""))
    runtime = (report.get("runtime_s") or {}).get("total")
    if runtime is not None:
        lines.append(_("Run time: {seconds:.1f} s").format(seconds=float(runtime)))
    return "\n".join(lines)


@dataclass
class LoadedResults:
    """Nodes created (or updated) by :meth:`ResultsMixin.load_results`."""

    segmentation: object = None
    attention: object = None
    asymmetry: object = None
    zero_shot: object = None
    plane: object = None
    legends: Dict[str, object] = field(default_factory=dict)
    table: object = None
    report: Dict = field(default_factory=dict)
    extra: Dict[str, object] = field(default_factory=dict)


class ResultsMixin:
    """Loading a case's files into ``self.scene`` (part of :class:`SymmetryAwareSegLogic`)."""

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
        labels = labels_from_report(result.report)
        loaded = LoadedResults()
        if roi_node is not None and segmentation_node is not None and segmentation_node.GetSegmentation().GetNumberOfSegments():
            loaded.segmentation = self.replace_inside_roi(segmentation_node, result.segmentation, labels, roi_node, reference_volume)
        else:
            loaded.segmentation = self.load_segmentation(result.segmentation, labels, reference_volume, segmentation_node)
        if loaded.segmentation.GetDisplayNode() is not None:
            loaded.segmentation.GetDisplayNode().SetOpacity(opacity)
        case = result.case_id
        loaded.report = result.report
        if result.path("attention").is_file():
            loaded.attention = self.load_map(result.path("attention"), f"{case} attention", style="attention")
        if result.path("asymmetry").is_file():
            loaded.asymmetry = self.load_map(result.path("asymmetry"), f"{case} asymmetry", style="asymmetry")
        if result.path("zero_shot").is_file():
            loaded.zero_shot = self.load_map(result.path("zero_shot"), f"{case} zero-shot asymmetry", style="zero_shot")
        for key, node in (("attention", loaded.attention), ("asymmetry", loaded.asymmetry), ("zero_shot", loaded.zero_shot)):
            legend = self.legend_of(node)
            if legend is not None:
                loaded.legends[key] = legend
        if result.path("plane").is_file():
            loaded.plane = self.load_plane(result.path("plane"), f"{case} mid-sagittal plane")
        volumes = self.segment_volumes(loaded.segmentation, reference_volume, loaded.plane)
        self.apply_terminology(loaded.segmentation, terminology_by_value(result.path("segmentation")), volumes)
        loaded.table = self.volume_table(loaded.segmentation, reference_volume, loaded.plane, name=f"{case} volumes", volumes=volumes)
        place_beside(reference_volume, [loaded.segmentation, loaded.attention, loaded.asymmetry, loaded.zero_shot,
                                        loaded.plane, loaded.table])
        if show_attention and loaded.attention is not None:
            self.show_overlay(reference_volume, loaded.attention, opacity)
        return loaded

    def apply_terminology(self, segmentation_node, entries: Dict[int, str], volumes) -> None:
        """Tag each segment with its terminology and laterality.

        ``entries``: ``{label value: TerminologyEntry}`` (:func:`terminology_by_value`);
        ``volumes``: :meth:`segment_volumes` rows, whose left/right split gives the side.
        """
        segmentation = segmentation_node.GetSegmentation()
        sides = {value: laterality_of(left, right) for _name, value, (left, right, _total) in volumes}
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            tag = segment_tag(segment, LABEL_VALUE_TAG)
            value = int(tag) if tag else index + 1
            segment.SetTag(TERMINOLOGY_TAG, with_laterality(entries.get(value, ""), sides.get(value)))

    def show_3d(self, segmentation_node, show: bool = True) -> None:
        """Show (build surfaces) or hide the segmentation in 3D views."""
        if show:
            segmentation_node.CreateClosedSurfaceRepresentation()
        display = segmentation_node.GetDisplayNode()
        if display is None:
            segmentation_node.CreateDefaultDisplayNodes()
            display = segmentation_node.GetDisplayNode()
        display.SetVisibility3D(bool(show))

    def load_segmentation(self, path, labels: Sequence[Dict], reference_volume, segmentation_node=None):
        """A segmentation node from a label map file, named and coloured from ``labels``.

        ``labels``: ``[{"value", "name", "color": [r, g, b]}]`` (the report's list). Every
        label gets a segment, empty ones included, so the table lists them all.
        """
        labelmap = read_volume(self.scene, path, "vtkMRMLLabelMapVolumeNode", "__symmetryaware_labels__")
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
            tag = segment_tag(segmentation.GetSegment(segment_id), LABEL_VALUE_TAG)
            values.append(int(tag) if tag else index + 1)
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__symmetryaware_export__")
        try:
            if ids.GetNumberOfValues() == 0:
                shape = array_from_volume(reference_volume).shape
                return np.zeros(shape, np.uint8), ijk_to_ras(reference_volume)
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference_volume):
                raise RuntimeError(f"could not export {segmentation_node.GetName()} on {reference_volume.GetName()}")
            exported = array_from_volume(labelmap).astype(np.int32)
            out = np.zeros(exported.shape, np.uint8)
            for order, value in enumerate(values, start=1):
                out[exported == order] = value  # export numbers segments 1..n in id order
            return out, ijk_to_ras(labelmap)
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
            tag = segment_tag(segment, LABEL_VALUE_TAG)
            if tag and int(tag) not in known:
                color = segment.GetColor()
                labels = list(labels) + [{"value": int(tag), "name": segment.GetName(), "color": list(color)}]
        labelmap = labelmap_node_from_array(self.scene, merged, ijk_to_ras, "__symmetryaware_merged__")
        try:
            return self._segmentation_from_labelmap(labelmap, labels, reference_volume, segmentation_node)
        finally:
            self.scene.RemoveNode(labelmap)

    def _segmentation_from_labelmap(self, labelmap, labels, reference_volume, segmentation_node=None):
        # Values the report does not name still become (generically named) segments, so
        # no voxel is dropped and every segment knows its label value.
        named = {int(l["value"]) for l in labels}
        labels = list(labels) + [l for l in default_labels(array_from_volume(labelmap)) if l["value"] not in named]
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
            order_segments_by_value(segmentation)
            return segmentation_node
        finally:
            self.scene.RemoveNode(colors)

    def load_map(self, path, name: str, signed: bool = False, colormap: Optional[Tuple[str, str]] = None,
                 style: Optional[str] = None):
        """A scalar volume node for one of the core's maps, with its colour table, window and legend.

        ``style``: a key of :data:`MAP_STYLES` (``attention``: Inferno over 0..1;
        ``attention_from``: Inferno over 0..peak; ``asymmetry``: DivergingBlueRed centred at
        0). Without it, ``signed`` picks the asymmetry or a magnitude (0..max) style. The
        legend (where the scene supports it, :func:`nodes.add_color_legend`) shows the same
        colour table over the same window. Returns the node.
        """
        if style is not None:
            chosen = MAP_STYLES[style]
        elif signed:
            chosen = MAP_STYLES["asymmetry"]
        else:
            chosen = MapStyle(MAGNITUDE_COLORMAP, "peak", "", "")
        node = read_volume(self.scene, path, "vtkMRMLScalarVolumeNode", name)
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(self.color_node(*(colormap or chosen.colormap)).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(*map_window(array_from_volume(node), chosen.window))
        add_color_legend(node, chosen.title, chosen.label_format)
        return node

    @staticmethod
    def legend_of(volume_node):
        """The colour legend display node of ``volume_node``, or None (none, or no legend support)."""
        color_logic = getattr(slicer, "vtkSlicerColorLogic", None)
        if volume_node is None or color_logic is None or not hasattr(color_logic, "GetColorLegendDisplayNode"):
            return None
        try:
            return color_logic.GetColorLegendDisplayNode(volume_node)
        except Exception:
            return None

    def color_node(self, slicer_name: str, matplotlib_name: str):
        """Slicer's colour table ``slicer_name``, or an equivalent one built headless."""
        existing = self.scene.GetNodesByClassByName("vtkMRMLColorNode", slicer_name)
        if existing.GetNumberOfItems():
            return existing.GetItemAsObject(0)
        node = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", slicer_name)
        node.SetTypeToUser()
        node.SetNumberOfColors(256)
        ramp = colormap_ramp(matplotlib_name, 256)
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
        if node is None:  # Slicer 5.8 scene without the Markups classes: see nodes.new_scene
            raise RuntimeError("this scene cannot hold a markups plane: create it with nodes.new_scene()")
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
        try:
            from SymmetryAwareCore.geometry.mirror import mirror_points_ras
        except ImportError as error:  # the core's dependencies are not installed yet
            raise RuntimeError(f"the core library cannot be imported ({error}); press Apply once to install its dependencies") from None

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
