"""Slicer logic against a real MRML scene (slicer-core, headless): loading the core's result files.

The result files are made here, mimicking the core's contract, on a real subject's T1
that is rotated, shifted and stored in LPS order, so that any mix-up of voxel order or
world coordinates shows. Expected labels are defined in RAS millimetres, so every check
is done in physical space, whatever voxel order Slicer's readers choose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the Slicer logic tests")
slicerio = pytest.importorskip("slicerio")

from SymmetryAwareCore.geometry.rigid import move_image, reorient_to, rigid_matrix  # noqa: E402

# Imported as Slicer imports it: the module folder on the path, the Lib package top-level.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic, hemisphere_volumes_ml, roi_mask, voxel_centres_ras  # noqa: E402
from SymmetryAwareSegLib.nodes import (  # noqa: E402
    LABEL_VALUE_TAG,
    array_from_volume as _array_from_volume,
    ijk_to_ras as _ijk_to_ras,
    segment_tag as _segment_tag,
)

LABELS = [
    {"value": 1, "name": "necrotic core", "color": [0.9, 0.1, 0.1]},
    {"value": 2, "name": "oedema", "color": [0.1, 0.8, 0.2]},
    {"value": 4, "name": "enhancing tumour", "color": [1.0, 0.9, 0.0]},
    {"value": 3, "name": "unused label", "color": [0.2, 0.2, 0.9]},
]


def rule_labels(ras: np.ndarray) -> np.ndarray:
    """Labels of points ``(..., 3)`` RAS: a sphere left, a box across the midline, a slab right."""
    out = np.zeros(ras.shape[:-1], np.uint8)
    out[np.linalg.norm(ras - np.array([-18.0, -6.0, 8.0]), axis=-1) <= 10.0] = 1
    box = (np.abs(ras[..., 0] - 4.0) <= 9.0) & (np.abs(ras[..., 1] + 20.0) <= 8.0) & (np.abs(ras[..., 2] - 4.0) <= 6.0)
    out[box] = 2
    out[(ras[..., 0] > 16.0) & (ras[..., 0] < 24.0) & (np.abs(ras[..., 1]) < 10.0)] = 4
    return out


def nib_centres(affine: np.ndarray, shape) -> np.ndarray:
    """RAS of voxel centres ``(X, Y, Z, 3)`` of a nibabel grid."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def write_case(folder: Path, affine: np.ndarray, shape, labels_rule=rule_labels, minimal_plane=True) -> Path:
    """A case folder as the core writes it (segmentation, maps, plane, report)."""
    folder.mkdir(parents=True, exist_ok=True)
    centres = nib_centres(affine, shape)
    nib.save(nib.Nifti1Image(labels_rule(centres), affine), folder / "segmentation.nii.gz")
    attention = np.clip(1.0 - np.linalg.norm(centres, axis=-1) / 80.0, 0.0, 1.0)
    stored = np.rint(attention * 255).astype(np.uint8)
    image = nib.Nifti1Image(stored, affine)
    image.header.set_slope_inter(1.0 / 255.0, 0.0)
    nib.save(image, folder / "attention.nii.gz")
    # Signed, centred at 0; float16 precision stored as float32, as the core's write_map does.
    asymmetry = (centres[..., 0] / 40.0).astype(np.float16).astype(np.float32)
    nib.save(nib.Nifti1Image(asymmetry, affine), folder / "asymmetry.nii.gz")
    # The plane x = 0 stated in LPS, with no orientation matrix: the minimal form.
    plane = {"markups": [{"type": "Plane", "coordinateSystem": "LPS", "center": [0.0, 0.0, 0.0],
                          "normal": [-1.0, 0.0, 0.0],
                          "controlPoints": [{"id": "1", "label": "MSP", "position": [0.0, 0.0, 0.0]}]}]}
    (folder / "msp.mrk.json").write_text(json.dumps(plane))
    report = {"labels": LABELS, "volumes_ml": {}, "model": {"name": "test"}, "device": "cpu", "runtime_s": {}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


@pytest.fixture(scope="module")
def oblique_t1(tmp_path_factory, subject_t1):
    """The real subject T1 rotated 12/-7/20 degrees, shifted, stored LPS, as a file."""
    world = rigid_matrix((12.0, -7.0, 20.0), (3.0, -4.0, 5.0), center_mm=(0.0, -20.0, 10.0))
    moved = reorient_to(move_image(subject_t1, world), "LPS")
    path = tmp_path_factory.mktemp("input") / "case01_t1.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(moved.array, np.float32), moved.affine), path)
    return path, moved.affine, moved.array.shape


@pytest.fixture()
def scene_logic():
    scene = slicer.vtkMRMLScene()
    return scene, SymmetryAwareSegLogic(scene=scene, python="python")


def labels_in_ras(logic, segmentation, reference):
    labels, ijk_to_ras = logic.labels_on_reference(segmentation, reference)
    return labels, voxel_centres_ras(labels.shape, ijk_to_ras)


def test_results_load_on_input_geometry_with_names_colours_maps_plane(tmp_path, oblique_t1, scene_logic):
    path, affine, shape = oblique_t1
    scene, logic = scene_logic
    reference = logic.read_volume(path, "vtkMRMLScalarVolumeNode", "case01_t1")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient")
    study = hierarchy.CreateStudyItem(patient, "study")
    hierarchy.CreateItem(study, reference)  # Slicer does this on load; headless we do
    case = write_case(tmp_path / "out" / "case01_t1", affine, shape)
    loaded = logic.load_results(case, reference)
    for node in (loaded.segmentation, loaded.attention, loaded.asymmetry, loaded.plane, loaded.table):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study, node.GetName()

    seg = loaded.segmentation
    # Segmentation carries the input's geometry (needed for DICOM export and resampling).
    geometry = seg.GetSegmentation().GetConversionParameter("Reference image geometry")
    assert geometry, "reference geometry not set"
    ref_matrix = _ijk_to_ras(reference)
    numbers = [float(v) for v in geometry.split(";")[:16]]
    assert np.allclose(np.array(numbers).reshape(4, 4)[:3, :3], ref_matrix[:3, :3], atol=1e-4)

    # Names, colours and the core's label values, all labels present (the unused one empty).
    segmentation = seg.GetSegmentation()
    found = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        found[segment.GetName()] = (int(_segment_tag(segment, LABEL_VALUE_TAG)), segment.GetColor())
    assert set(found) == {l["name"] for l in LABELS}
    for label in LABELS:
        value, color = found[label["name"]]
        assert value == label["value"]
        assert np.allclose(color, label["color"], atol=1e-6)

    # Voxels in physical space match the rule the files were made from.
    labels, ras = labels_in_ras(logic, seg, reference)
    expected = rule_labels(ras)
    assert np.count_nonzero(expected) > 100
    assert np.array_equal(labels, expected)

    # Attention: magnitude map with a magnitude colour table, values rescaled to 0..1.
    attention = loaded.attention
    values = _array_from_volume(attention)
    assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-6 and values.max() > 0.9
    assert attention.GetDisplayNode().GetColorNode().GetName() == "Inferno"
    # Asymmetry: diverging colours, window centred at 0.
    asym = loaded.asymmetry
    display = asym.GetDisplayNode()
    assert display.GetColorNode().GetName() == "DivergingBlueRed"
    assert abs(display.GetLevel()) < 1e-6 and display.GetWindow() > 0
    a_ras = voxel_centres_ras(_array_from_volume(asym).shape, _ijk_to_ras(asym))
    assert np.allclose(_array_from_volume(asym), a_ras[..., 0] / 40.0, atol=2e-3)

    # The plane, stated in LPS in the file, is x = 0 in RAS.
    origin, normal = [0.0] * 3, [0.0] * 3
    loaded.plane.GetOriginWorld(origin)
    loaded.plane.GetNormalWorld(normal)
    assert np.allclose(origin, 0.0, atol=1e-6)
    assert np.allclose(np.abs(normal), [1.0, 0.0, 0.0], atol=1e-6)

    # Table: volume per segment and hemisphere, against an independent count on the file grid.
    centres = nib_centres(affine, shape)
    truth = rule_labels(centres)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    table = loaded.table.GetTable()
    rows = {table.GetValue(r, 0).ToString(): [table.GetValue(r, c).ToDouble() for c in (2, 3, 4)] for r in range(table.GetNumberOfRows())}
    for label in LABELS:
        mask = truth == label["value"]
        left = np.count_nonzero(mask & (centres[..., 0] < 0)) * voxel_ml
        right = np.count_nonzero(mask & (centres[..., 0] > 0)) * voxel_ml
        assert rows[label["name"]] == pytest.approx([left, right, left + right], abs=1e-3)
    assert rows["necrotic core"][1] == 0.0 and rows["enhancing tumour"][0] == 0.0
    assert rows["oedema"][0] > 0 and rows["oedema"][1] > 0


def test_saved_seg_nrrd_reads_back_in_slicerio_with_same_geometry(tmp_path, oblique_t1, scene_logic):
    path, affine, shape = oblique_t1
    scene, logic = scene_logic
    reference = logic.read_volume(path, "vtkMRMLScalarVolumeNode", "case01_t1")
    loaded = logic.load_results(write_case(tmp_path / "case01_t1", affine, shape), reference)
    out = logic.save_segmentation(loaded.segmentation, tmp_path / "saved" / "case01.seg.nrrd")
    assert out.is_file() and not list(out.parent.glob(".*tmp*"))

    seg = slicerio.read_segmentation(str(out))
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(seg["ijkToLPS"])
    # Same grid axes and spacing as the input (the origin may move if the extent is cropped).
    assert np.allclose(ijk_to_ras[:3, :3], _ijk_to_ras(reference)[:3, :3], atol=1e-4)
    voxels = np.asarray(seg["voxels"])
    if voxels.ndim == 4:
        voxels = voxels[..., 0]
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in voxels.shape), indexing="ij"), -1).astype(np.float64)
    ras = ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]
    expected = rule_labels(ras)
    by_name = {s["name"]: s for s in seg["segments"]}
    assert set(by_name) == {l["name"] for l in LABELS}
    for label in LABELS:
        segment = by_name[label["name"]]
        assert np.allclose(segment["color"], label["color"], atol=1e-3)
        assert np.array_equal(voxels == segment["labelValue"], expected == label["value"])


def test_roi_mode_replaces_only_inside_the_roi(tmp_path, oblique_t1, scene_logic):
    path, affine, shape = oblique_t1
    scene, logic = scene_logic
    reference = logic.read_volume(path, "vtkMRMLScalarVolumeNode", "case01_t1")
    first = logic.load_results(write_case(tmp_path / "a" / "case01_t1", affine, shape), reference)

    def second_rule(ras):
        out = np.zeros(ras.shape[:-1], np.uint8)
        out[np.abs(ras[..., 2] - 4.0) <= 12.0] = 2  # a thick slab of "oedema" everywhere
        return out

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenterWorld(-14.0, -8.0, 6.0)
    roi.SetSize(30.0, 26.0, 22.0)
    second = write_case(tmp_path / "b" / "case01_t1", affine, shape, labels_rule=second_rule)
    logic.load_results(second, reference, segmentation_node=first.segmentation, roi_node=roi)

    labels, ras = labels_in_ras(logic, first.segmentation, reference)
    inside = np.all(np.abs(ras - np.array([-14.0, -8.0, 6.0])) <= np.array([15.0, 13.0, 11.0]) + 1e-6, axis=-1)
    assert 0 < np.count_nonzero(inside) < inside.size
    assert np.array_equal(labels[inside], second_rule(ras)[inside])
    assert np.array_equal(labels[~inside], rule_labels(ras)[~inside])


def test_roi_mask_follows_a_rotated_box():
    ijk_to_ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ijk_to_ras[:3, 3] = (-20.0, -20.0, -20.0)
    angle = np.deg2rad(30.0)
    axes = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    mask = roi_mask((21, 21, 21), ijk_to_ras, (0, 0, 0), (16.0, 4.0, 4.0), axes)
    ras = voxel_centres_ras((21, 21, 21), ijk_to_ras)
    along = ras @ axes[:, 0]
    assert mask[np.abs(along - 6.0) < 1.0].any()  # far along the rotated long axis: inside
    assert not mask[(np.abs(ras[..., 0] - 7.0) < 0.1) & (np.abs(ras[..., 1]) < 0.1)].any()  # along x: outside


def test_hemisphere_volumes_follow_a_tilted_plane():
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, 3] = (-10.0, -10.0, -10.0)
    labels = np.ones((21, 21, 21), np.uint8)
    normal = np.array([-np.cos(0.2), np.sin(0.2), 0.0])  # pointing left: must be turned right
    volumes = hemisphere_volumes_ml(labels, ijk_to_ras, [1], (0.0, 0.0, 0.0), normal)[1]
    ras = voxel_centres_ras(labels.shape, ijk_to_ras)
    side = ras @ -normal
    assert volumes[0] == pytest.approx((np.count_nonzero(side < 0) + 0.5 * np.count_nonzero(side == 0)) / 1000.0)
    assert volumes[2] == pytest.approx(21 ** 3 / 1000.0)


def test_mirror_point_across_a_tilted_plane(scene_logic):
    scene, logic = scene_logic
    plane = scene.AddNewNodeByClass("vtkMRMLMarkupsPlaneNode", "msp")
    normal = np.array([np.cos(0.15), np.sin(0.15), 0.05])
    normal /= np.linalg.norm(normal)
    plane.SetNormalWorld(*normal)
    plane.SetOriginWorld(3.0, -2.0, 1.0)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
    points.AddControlPointWorld(-25.0, 10.0, 30.0, "lesion")
    mirrored = logic.mirror_point(points, 0, plane)
    assert points.GetNumberOfControlPoints() == 2
    assert points.GetNthControlPointLabel(1) == "lesion (mirror)"
    stored = [0.0] * 3
    points.GetNthControlPointPositionWorld(1, stored)
    assert np.allclose(stored, mirrored)
    original = np.array([-25.0, 10.0, 30.0])
    midpoint = (original + mirrored) / 2
    assert abs((midpoint - np.array([3.0, -2.0, 1.0])) @ normal) < 1e-6  # midpoint on the plane
    assert np.allclose(np.cross(mirrored - original, normal), 0.0, atol=1e-6)  # moved along the normal
    assert not np.allclose(mirrored, original)
    with pytest.raises(ValueError):
        logic.mirror_point(points, 5, plane)


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_plane_written_by_the_core_loads_as_the_same_plane(tmp_path, scene_logic, system):
    markups = pytest.importorskip("SymmetryAwareCore.geometry.markups")
    from SymmetryAwareCore.geometry.msp import MidSagittalPlane

    normal = np.array([np.cos(0.2), np.sin(0.2) * 0.6, np.sin(0.2) * 0.8])
    plane = MidSagittalPlane(normal=normal, point=np.array([4.0, -12.0, 9.0]), symmetry_score=0.9,
                             confident=True, method="mirror-registration")
    path = markups.write_plane_markups(plane, tmp_path / "msp.mrk.json", coordinate_system=system)
    scene, logic = scene_logic
    node = logic.load_plane(path, "case mid-sagittal plane")
    origin, loaded_normal = [0.0] * 3, [0.0] * 3
    node.GetOriginWorld(origin)
    node.GetNormalWorld(loaded_normal)
    assert np.allclose(origin, plane.point, atol=1e-5)
    assert np.allclose(loaded_normal, plane.normal, atol=1e-5)


def test_label_values_missing_from_the_report_are_kept(tmp_path, oblique_t1, scene_logic):
    path, affine, shape = oblique_t1
    scene, logic = scene_logic
    reference = logic.read_volume(path, "vtkMRMLScalarVolumeNode", "case01_t1")
    case = write_case(tmp_path / "case01_t1", affine, shape)
    report = json.loads((case / "report.json").read_text())
    report["labels"] = [l for l in report["labels"] if l["value"] != 4]
    (case / "report.json").write_text(json.dumps(report))
    loaded = logic.load_results(case, reference)
    labels, ras = labels_in_ras(logic, loaded.segmentation, reference)
    assert np.array_equal(labels, rule_labels(ras))
    names = [loaded.segmentation.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(loaded.segmentation.GetSegmentation().GetNumberOfSegments())]
    assert names == ["necrotic core", "oedema", "unused label", "Label 4"]


def test_segments_get_standard_terminology_and_laterality_from_the_plane(tmp_path, oblique_t1, scene_logic):
    """Codes come from the core's .seg.nrrd; the side from where each segment lies about the plane."""
    from SymmetryAwareCore.io.image import Image
    from SymmetryAwareCore.io.labels import LabelInfo, brats_labels
    from SymmetryAwareCore.io.writers import write_seg_nrrd
    from SymmetryAwareSegLib.results import TERMINOLOGY_TAG

    path, affine, shape = oblique_t1
    scene, logic = scene_logic
    reference = logic.read_volume(path, "vtkMRMLScalarVolumeNode", "case01_t1")
    case = write_case(tmp_path / "out" / "case01_t1", affine, shape)
    labels = rule_labels(nib_centres(affine, shape))
    infos = list(brats_labels(2021)) + [LabelInfo(3, "unused label", (0.2, 0.2, 0.9))]
    write_seg_nrrd(labels, Image(labels.astype(np.float32), affine), case / "segmentation.seg.nrrd", infos)
    loaded = logic.load_results(case, reference, show_attention=False)

    segmentation = loaded.segmentation.GetSegmentation()
    entries = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        entries[int(_segment_tag(segment, LABEL_VALUE_TAG))] = _segment_tag(segment, TERMINOLOGY_TAG)
    fields = {value: entry.split("~") for value, entry in entries.items()}
    assert all(len(f) == 7 for f in fields.values())
    # The sphere (value 1) lies at x = -18 mm: left; the slab (4) at x = 16..24: right;
    # the box (2) spans x = -5..13 across the plane x = 0: bilateral; the unused label: no side.
    assert fields[1][2] == "SCT^6574001^Necrosis" and fields[1][5:] == ["SCT^12738006^Brain", "SCT^7771000^Left"]
    assert fields[4][2] == "NCIt^C113842^Enhancing Lesion" and fields[4][6] == "SCT^24028007^Right"
    assert fields[2][2] == "SCT^79654002^Edema" and fields[2][6] == "SCT^51440002^Right and left"
    assert fields[3][2] == "SCT^52988006^Lesion" and fields[3][6] == "^^"  # no code known, empty: generic, no side
    table = loaded.table.GetTable()
    sides = {table.GetValue(r, 1).ToInt(): table.GetValue(r, 5).ToString() for r in range(table.GetNumberOfRows())}
    assert sides == {1: "left", 2: "bilateral", 3: "", 4: "right"}


def test_show_3d_builds_surfaces_and_hides_them(tmp_path, oblique_t1, scene_logic):
    path, affine, shape = oblique_t1
    scene, logic = scene_logic
    reference = logic.read_volume(path, "vtkMRMLScalarVolumeNode", "case01_t1")
    loaded = logic.load_results(write_case(tmp_path / "c", affine, shape), reference, show_attention=False)
    seg = loaded.segmentation
    logic.show_3d(seg, True)
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    assert seg.GetSegmentation().ContainsRepresentation(surface)
    assert seg.GetDisplayNode().GetVisibility3D()
    logic.show_3d(seg, False)
    assert not seg.GetDisplayNode().GetVisibility3D()


def test_run_summary_names_the_device_and_an_out_of_memory_fallback():
    from SymmetryAwareSegLib.results import run_summary

    report = {"device": "cpu", "runtime_s": {"total": 51.6}, "notes": [
        "out of memory on cuda:0 with sw_batch_size=1; retrying on cpu with sw_batch_size=1",
        "mid-sagittal plane has low confidence: poor symmetry score"]}
    text = run_summary(report).splitlines()
    assert text[0] == "Device used: cpu"
    assert text[1].startswith("Out-of-memory fallback: out of memory on cuda:0")
    assert text[2] == "Notes: mid-sagittal plane has low confidence: poor symmetry score"
    assert text[3] == "Run time: 51.6 s"
    assert run_summary({}) == ""


def test_dicom_source_files_are_gathered_from_the_dicom_database(tmp_path):
    from SymmetryAwareSegLib.command import dicom_source_folder

    files = {}
    for index, uid in enumerate(("1.2.3.1", "1.2.3.2", "1.2.3.3")):
        path = tmp_path / "db" / f"f{index}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"DICM" + bytes([index]))
        files[uid] = str(path)

    class Database:  # the part of ctkDICOMDatabase the module uses
        def fileForInstance(self, uid):  # noqa: N802 - Slicer's name
            return files.get(uid, "")

    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "from dicom")
    assert dicom_source_folder(volume, tmp_path / "a", Database()) is None  # not loaded from DICOM
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(files))
    folder = dicom_source_folder(volume, tmp_path / "b", Database())
    assert sorted(p.read_bytes() for p in folder.iterdir()) == sorted(Path(f).read_bytes() for f in files.values())
    volume.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 9.9.9")
    assert dicom_source_folder(volume, tmp_path / "c", Database()) is None  # a file the database lacks
    assert dicom_source_folder(volume, tmp_path / "d", None) is None  # no database (headless)


def test_zero_shot_map_loads_on_its_grid_with_a_fixed_unit_window_and_the_score_is_summarised(tmp_path, oblique_t1, scene_logic):
    from SymmetryAwareSegLib.results import run_summary

    path, affine, shape = oblique_t1
    scene, logic = scene_logic
    reference = logic.read_volume(path, "vtkMRMLScalarVolumeNode", "case01_t1")
    case = write_case(tmp_path / "out" / "case01_t1", affine, shape)
    loaded = logic.load_results(case, reference)
    assert loaded.zero_shot is None  # models without a symmetry head write no map

    centres = nib_centres(affine, shape)
    # Larger to the right of x = 0, so a flipped or transposed load shows; 0..0.6, not 0..1.
    values = np.clip(centres[..., 0] / 100.0, 0.0, 0.6).astype(np.float16).astype(np.float32)
    nib.save(nib.Nifti1Image(values, affine), case / "zero_shot_asymmetry.nii.gz")
    report = json.loads((case / "report.json").read_text())
    report["zero_shot_asymmetry"] = {"score": 0.61234, "map": "zero_shot_asymmetry.nii.gz",
                                     "head": {"name": "glioma_phantom_sah_f12"}}
    (case / "report.json").write_text(json.dumps(report))
    loaded = logic.load_results(case, reference)
    node = loaded.zero_shot
    assert node is not None and "zero-shot" in node.GetName()
    ras = voxel_centres_ras(_array_from_volume(node).shape, _ijk_to_ras(node))
    assert np.allclose(_array_from_volume(node), np.clip(ras[..., 0] / 100.0, 0.0, 0.6), atol=2e-3)
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == "Inferno"
    # The window is the score's definition range, not this map's peak (0.6).
    assert display.GetWindow() == pytest.approx(1.0) and display.GetLevel() == pytest.approx(0.5)
    lines = run_summary(loaded.report).splitlines()
    assert "Zero-shot asymmetry: 0.61 (0 symmetric, 1 opposite); glioma_phantom_sah_f12" in lines
    assert not any("Zero-shot" in line for line in run_summary({"zero_shot_asymmetry": None}).splitlines())
