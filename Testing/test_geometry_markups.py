"""The plane as a Slicer markups file: read back by Slicer's own MRML storage node (slicer-core)."""

import json

import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry import MidSagittalPlane, read_plane_markups, write_plane_markups
from SymmetryAwareCore.geometry.markups import MARKUPS_SCHEMA

PLANE = MidSagittalPlane([0.9, 0.3, -0.2], [3.0, -20.0, 15.0], 0.93, True, "mirror-registration")


def _slicer_plane(path):
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsPlaneNode")
    storage = slicer.vtkMRMLMarkupsPlaneJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node) == 1
    normal, origin, size = [0.0] * 3, [0.0] * 3, [0.0] * 2
    node.GetNormal(normal)  # Slicer's API is RAS whatever the file's coordinate system
    node.GetOrigin(origin)
    node.GetSize(size)
    return np.array(normal), np.array(origin), np.array(size), node


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_slicer_reads_the_plane_exactly(tmp_path, system):
    path = write_plane_markups(PLANE, tmp_path / f"msp_{system}.mrk.json", size_mm=(180, 150), coordinate_system=system)
    normal, origin, size, node = _slicer_plane(path)
    np.testing.assert_allclose(normal, PLANE.normal, atol=1e-12)
    np.testing.assert_allclose(origin, PLANE.point, atol=1e-12)
    np.testing.assert_allclose(size, [180, 150])
    assert node.GetPlaneType() == node.PlaneTypePointNormal and node.GetNumberOfControlPoints() == 1


def test_file_fields_follow_the_schema_and_the_coordinate_system(tmp_path):
    lps = json.loads(write_plane_markups(PLANE, tmp_path / "a.mrk.json").read_text())
    ras = json.loads(write_plane_markups(PLANE, tmp_path / "b.mrk.json", coordinate_system="RAS").read_text())
    assert lps["@schema"] == MARKUPS_SCHEMA and "v1.0.3" in MARKUPS_SCHEMA
    m_lps, m_ras = lps["markups"][0], ras["markups"][0]
    assert m_lps["type"] == "Plane" and m_lps["coordinateSystem"] == "LPS" and m_ras["coordinateSystem"] == "RAS"
    flip = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(m_ras["normal"], PLANE.normal)
    np.testing.assert_allclose(m_lps["normal"], flip * PLANE.normal)
    np.testing.assert_allclose(m_lps["center"], flip * PLANE.point)
    np.testing.assert_allclose(m_lps["controlPoints"][0]["position"], flip * PLANE.point)
    # orientation: 3x3 row-major whose third column is the normal; columns orthonormal.
    axes = np.array(m_ras["orientation"]).reshape(3, 3)
    np.testing.assert_allclose(axes[:, 2], PLANE.normal, atol=1e-12)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-12)
    assert np.linalg.det(axes) > 0
    assert m_lps["size"][2] == 0.0 and len(m_lps["planeBounds"]) == 4


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_read_back_round_trip(tmp_path, system):
    path = write_plane_markups(PLANE, tmp_path / "p.mrk.json", coordinate_system=system)
    plane = read_plane_markups(path)
    np.testing.assert_allclose(plane.normal, PLANE.normal, atol=1e-12)
    np.testing.assert_allclose(plane.point, PLANE.point, atol=1e-12)
    assert plane.method == "markups"


def test_reads_a_plane_written_by_slicer(tmp_path):
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsPlaneNode")
    node.SetPlaneType(node.PlaneTypePointNormal)
    node.AddControlPoint(10.0, -5.0, 30.0)
    node.SetNormal(0.6, 0.8, 0.0)
    storage = slicer.vtkMRMLMarkupsPlaneJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "slicer.mrk.json"))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.WriteData(node) == 1
    plane = read_plane_markups(tmp_path / "slicer.mrk.json")
    np.testing.assert_allclose(plane.normal, [0.6, 0.8, 0.0], atol=1e-9)
    np.testing.assert_allclose(plane.point, [10.0, -5.0, 30.0], atol=1e-9)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_plane_markups(tmp_path / "missing.mrk.json")
    bad = tmp_path / "bad.mrk.json"
    bad.write_text(json.dumps({"markups": [{"type": "Fiducial"}]}))
    with pytest.raises(InputError, match="bad.mrk.json: not a markups file holding a Plane"):
        read_plane_markups(bad)
    with pytest.raises(ValueError, match="coordinate_system"):
        write_plane_markups(PLANE, tmp_path / "x.mrk.json", coordinate_system="XYZ")
    assert not (tmp_path / "x.mrk.json").exists()
