"""Lesion volume report: mL per label on oblique grids, hemisphere split, asymmetry index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry.mirror import mirror_points_ras
from SymmetryAwareCore.geometry.rigid import move_image, reorient_to, rigid_matrix
from SymmetryAwareCore.inference.report import lesion_report, plane_of_aligned_grid, write_report_json
from SymmetryAwareCore.io.image import Image

VOXEL_ML = 2.0**3 / 1000.0  # the subject T1 has 2 mm voxels; a rigid move keeps them


@pytest.fixture
def oblique(subject_t1):
    """The subject T1 (stored LAS: voxel axis 0 points to the patient's LEFT), tilted and shifted."""
    centre = subject_t1.voxel_to_world(np.array(subject_t1.spatial_shape) / 2.0)[0]
    return move_image(subject_t1, rigid_matrix((8.0, -5.0, 15.0), (3.0, -2.0, 7.0), centre))


def _labels(shape):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:6, 10:14, 5:10] = 1  # 80 voxels, i < 16
    labels[20:30, 5:8, 3:5] = 2  # 60 voxels, i > 16
    labels[14:19, 30:32, 10:11] = 3  # 10 voxels across i = 16: 4 at i < 16, 2 at 16, 4 at i > 16
    return labels


def _plane(image):
    # Normal along voxel axis 0, which points to the patient's left here: the report must
    # turn it around itself. The plane passes through the centre of voxel column i = 16.
    normal = image.affine[:3, 0] / np.linalg.norm(image.affine[:3, 0])
    point = image.voxel_to_world([[16, 20, 12]])[0]
    return normal, point


def test_volumes_and_sides_on_an_oblique_grid(oblique):
    normal, point = _plane(oblique)
    assert normal[0] < -0.5  # premise: axis 0 runs to the patient's left, so small i is right
    report = lesion_report(oblique, _labels(oblique.spatial_shape), normal, point, {1: "core", 4: "absent"})
    by_label = {e["label"]: e for e in report["labels"]}
    assert sorted(by_label) == [1, 2, 3, 4]
    one, two, three, four = (by_label[k] for k in (1, 2, 3, 4))
    assert one["name"] == "core" and two["name"] == "label 2"
    assert report["voxel_volume_ml"] == pytest.approx(VOXEL_ML)
    assert one["volume_ml"] == pytest.approx(80 * VOXEL_ML) and one["right_ml"] == pytest.approx(80 * VOXEL_ML)
    assert one["left_ml"] == 0 and one["asymmetry_index"] == pytest.approx(-1.0)
    assert two["left_ml"] == pytest.approx(60 * VOXEL_ML) and two["asymmetry_index"] == pytest.approx(1.0)
    assert three["voxels"] == 10 and three["midline_ml"] == pytest.approx(2 * VOXEL_ML)
    assert three["left_ml"] == pytest.approx(4 * VOXEL_ML) and three["asymmetry_index"] == pytest.approx(0.0)
    assert four["voxels"] == 0 and four["asymmetry_index"] is None
    total = report["total"]
    assert total["voxels"] == 150 and total["left_ml"] == pytest.approx(64 * VOXEL_ML)
    assert total["right_ml"] == pytest.approx(84 * VOXEL_ML)
    assert report["plane"]["normal_ras"][0] > 0
    json.dumps(report)  # JSON-able as it is


def test_split_agrees_with_world_geometry_and_stored_orientation(oblique):
    normal, point = _plane(oblique)
    labels = _labels(oblique.spatial_shape)
    # Label 1's voxel centres, mirrored across the plane, land on the side where label 2 is.
    centres = oblique.voxel_to_world(np.argwhere(labels == 1))
    mirrored = oblique.world_to_voxel(mirror_points_ras(centres, normal, point))
    assert np.all(mirrored[:, 0] > 16)
    # The same anatomy stored RAS (axis 0 now points right) gives the same report.
    base = lesion_report(oblique, labels, normal, point)
    ras_image = reorient_to(oblique, "RAS")
    ras_labels = reorient_to(Image(labels, oblique.affine), "RAS")
    assert ras_image.affine[0, 0] > 0
    again = lesion_report(ras_image, ras_labels, normal, point)
    for a, b in zip(base["labels"], again["labels"]):
        for key in ("volume_ml", "left_ml", "right_ml", "midline_ml"):
            assert a[key] == pytest.approx(b[key])


def test_default_plane_is_the_centre_of_an_aligned_grid():
    image = Image(np.zeros((9, 4, 4), np.float32), np.diag([1.5, 1.0, 1.0, 1.0]))
    normal, point = plane_of_aligned_grid(image)
    np.testing.assert_allclose(normal, [1, 0, 0])
    np.testing.assert_allclose(point, [6.0, 1.5, 1.5])
    labels = np.zeros((9, 4, 4), np.int16)
    labels[0:2, 0, 0] = 5  # left: small x in RAS
    labels[4, 0, 0] = 5  # the centre column: midline
    entry = lesion_report(image, labels)["labels"][0]
    assert entry["left_ml"] == pytest.approx(2 * 1.5e-3) and entry["midline_ml"] == pytest.approx(1.5e-3)


def test_bad_inputs(oblique, tmp_path):
    labels = _labels(oblique.spatial_shape)
    normal, point = _plane(oblique)
    with pytest.raises(InputError, match="shape"):
        lesion_report(oblique, labels[:-1], normal, point)
    with pytest.raises(InputError, match="non-integer"):
        lesion_report(oblique, labels * 0.5, normal, point)
    with pytest.raises(InputError, match="45 degrees"):
        lesion_report(oblique, labels, [0.0, 1.0, 0.2], point)
    with pytest.raises(InputError, match="or neither"):
        lesion_report(oblique, labels, normal, None)
    moved = Image(labels, oblique.affine + np.diag([0, 0, 0.5, 0]), source="seg.nii.gz")
    with pytest.raises(InputError, match="seg.nii.gz: the labelmap is not on"):
        lesion_report(oblique, moved, normal, point)


def test_write_report_json(oblique, tmp_path):
    normal, point = _plane(oblique)
    report = lesion_report(oblique, _labels(oblique.spatial_shape), normal, point)
    path = write_report_json(report, tmp_path / "out" / "report.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
