"""Small MRML/VTK helpers shared by the logic's parts (explicit scene, no slicer.util).

``slicer.util``'s helpers use the application's global scene and need ``slicer.app``; these
take the scene they work on, so they also run headless (``slicer-core``) and on the batch's
per-case scenes. Arrays from VTK image data are indexed ``[k, j, i]`` (VTK order);
``IJK-to-RAS`` maps ``(i, j, k, 1)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import vtk
from vtk.util import numpy_support

import slicer

LABEL_VALUE_TAG = "SymmetryAwareSeg.LabelValue"
"""Segment tag holding the label value of the core's label map (survives .seg.nrrd)."""

MARKUPS_CLASSES = (
    "vtkMRMLMarkupsPlaneNode",
    "vtkMRMLMarkupsPlaneDisplayNode",
    "vtkMRMLMarkupsPlaneJsonStorageNode",
    "vtkMRMLMarkupsDisplayNode",
    "vtkMRMLMarkupsJsonStorageNode",
)
"""What a scene needs to hold the mid-sagittal plane. In Slicer 5.8 only the Markups
module's logic registers these, and only in ``slicer.mrmlScene``; from 5.10 MRML core does."""


def register_markups_classes(scene) -> List[str]:
    """Register the markups plane classes in ``scene`` where missing; return those registered.

    A fresh ``vtkMRMLScene()`` in Slicer 5.8 cannot create a plane node otherwise
    (``AddNewNodeByClass`` returns None).
    """
    added = []
    for name in MARKUPS_CLASSES:
        if scene.IsNodeClassRegistered(name):
            continue
        node_class = getattr(slicer, name, None)
        if node_class is None:
            continue
        scene.RegisterNodeClass(node_class())
        added.append(name)
    return added


def new_scene(scene=None):
    """A scene (``scene``, else a fresh one) that can hold everything the results need,
    on any Slicer version: the markups classes are registered where missing."""
    scene = slicer.vtkMRMLScene() if scene is None else scene
    register_markups_classes(scene)
    return scene


def read_volume(scene, path, class_name: str, name: str):
    """Read an image file into a new volume node with Slicer's reader.

    Slicer's ITK reader refuses some valid NIfTI files (float16 data, for one); those
    are read with nibabel when it is present.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    node = scene.AddNewNodeByClass(class_name, name)
    if node is None:
        raise RuntimeError(f"this scene cannot create a {class_name} (class not registered)")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if storage.ReadData(node):
        node.SetName(name)
        node.CreateDefaultDisplayNodes()
        return node
    try:
        import nibabel
    except ImportError:
        scene.RemoveNode(node)
        raise ValueError(f"{path}: Slicer cannot read this image and nibabel is not installed") from None
    try:
        image = nibabel.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32) if class_name != "vtkMRMLLabelMapVolumeNode" else np.asarray(image.dataobj))
    except Exception as error:  # nibabel's ImageFileError, a truncated gzip...: no half-made node stays
        scene.RemoveNode(node)
        raise ValueError(f"{path}: not a readable image ({error})") from None
    if data.ndim != 3:
        scene.RemoveNode(node)
        raise ValueError(f"{path}: expected a 3D image, got shape {data.shape}")
    set_volume_array(node, np.ascontiguousarray(np.transpose(data, (2, 1, 0))), image.affine)
    node.CreateDefaultDisplayNodes()
    return node


def place_beside(reference_node, nodes) -> None:
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


def safe_file_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "volume"


def ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_from_volume(volume_node) -> np.ndarray:
    """A copy of the voxels, indexed ``[k, j, i]`` (VTK order)."""
    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).copy()


def set_volume_array(volume_node, array_kji: np.ndarray, ijk_to_ras_matrix: np.ndarray) -> None:
    image = vtk.vtkImageData()
    image.SetDimensions(array_kji.shape[2], array_kji.shape[1], array_kji.shape[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array_kji).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    volume_node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_ras_matrix[r, c]))
    volume_node.SetIJKToRASMatrix(matrix)


def labelmap_node_from_array(scene, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    set_volume_array(node, array_kji.astype(np.uint8), ijk_to_ras)
    node.CreateDefaultDisplayNodes()
    return node


def segment_tag(segment, tag: str) -> str:
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


def order_segments_by_value(segmentation) -> None:
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    values = {sid: int(segment_tag(segmentation.GetSegment(sid), LABEL_VALUE_TAG) or 0) for sid in ids}
    for position, sid in enumerate(sorted(ids, key=lambda s: values[s])):
        segmentation.SetSegmentIndex(sid, position)


def labels_from_report(report: Dict) -> List[Dict]:
    labels = report.get("labels") or []
    return [l for l in labels if int(l.get("value", 0)) > 0]


def default_labels(array: np.ndarray) -> List[Dict]:
    ramp = colormap_ramp("tab10", 10)
    return [
        {"value": int(v), "name": f"Label {int(v)}", "color": list(ramp[i % 10])}
        for i, v in enumerate(v for v in np.unique(array) if v > 0)
    ]


def colormap_ramp(matplotlib_name: str, count: int) -> np.ndarray:
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


def add_color_legend(volume_node, title: str = "", label_format: str = ""):
    """A colour legend for ``volume_node``'s colour table and window; the legend node, or None.

    ``vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode`` (static; Slicer's
    Modules/Loadable/Colors/Logic/vtkSlicerColorLogic.h, in every Slicer the module supports)
    adds a ``vtkMRMLColorLegendDisplayNode`` whose primary display node is the volume's. Its
    displayable manager (Colors/MRMLDM/vtkMRMLColorLegendDisplayableManager.cxx) takes the
    range from that display node's window/level and shows the legend only in views where the
    volume is a slice layer, so legends of maps not on screen stay hidden. Title and label
    format: vtkMRMLColorLegendDisplayNode.h (``SetTitleText``, ``SetLabelFormat``, printf style).

    Returns None where the scene cannot hold legend nodes (headless ``slicer-core`` scenes do
    not register the class) or the logic lacks the method: the map still shows, unlabelled.
    """
    scene = volume_node.GetScene()
    color_logic = getattr(slicer, "vtkSlicerColorLogic", None)
    if scene is None or color_logic is None or not hasattr(color_logic, "AddDefaultColorLegendDisplayNode"):
        return None
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        return None
    try:
        legend = color_logic.AddDefaultColorLegendDisplayNode(volume_node)
    except Exception:  # a wrapping without this overload: the map still shows
        return None
    if legend is None:
        return None
    if title:
        legend.SetTitleText(title)
    if label_format:
        legend.SetLabelFormat(label_format)
    return legend


_CONVERTERS_REGISTERED = False


def register_segmentation_converters() -> None:
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
