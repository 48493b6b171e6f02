"""Slicer point mode and map display, headless (slicer-core): command, mirror, legend, all-or-nothing.

The child is a stand-in for ``python -m SymmetryAwareCore attention`` that parses its command
line with the contract's own definition, writes ``attention_from.nii.gz`` and ``report.json``
as the core does, and fails or hangs on demand (as ``test_slicer_batch``'s stand-in does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the Slicer logic tests")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareCore.cli.main import build_parser  # noqa: E402
from SymmetryAwareCore.contract import OUTPUT_FILES, RunOptions, segment_command  # noqa: E402
from SymmetryAwareSegLib.attention import MIRROR_LIST_NAME, ExportedInputs, mirror_label, point_summary  # noqa: E402
from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic  # noqa: E402
from SymmetryAwareSegLib.nodes import array_from_volume, new_scene  # noqa: E402
from SymmetryAwareSegLib.process import ProcessCancelled, ProcessFailed  # noqa: E402
from SymmetryAwareSegLib.results import MAP_STYLES  # noqa: E402

ATTENTION_FLAG = {f.name: f for f in dataclasses.fields(RunOptions)}["attention_from"].metadata["flag"]

FAKE_ATTENTION_CORE = '''
import argparse, json, sys, time
from pathlib import Path
import nibabel as nib
import numpy as np

from SymmetryAwareCore.contract import add_run_option_arguments

parser = argparse.ArgumentParser()
parser.add_argument("command")
parser.add_argument("inputs", nargs="+")
parser.add_argument("--output-dir", required=True)
add_run_option_arguments(parser)
parser.add_argument("--progress")
parser.add_argument("--case-id", required=True)
args = parser.parse_args()
if args.model == "no-saca":
    print(f"symmetryaware {args.command}: error: model {args.model!r} has no symmetry-aware cross-attention, "
          "so no attention map", file=sys.stderr)
    sys.exit(2)
if args.model == "slow":
    print("<filter-progress>0.1</filter-progress>", flush=True)
    time.sleep(60)
out = Path(args.output_dir) / args.case_id
out.mkdir(parents=True, exist_ok=True)
image = nib.load(args.inputs[0])
ijk = np.stack(np.meshgrid(*(np.arange(n) for n in image.shape[:3]), indexing="ij"), -1).astype(float)
ras = ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
query = np.asarray(args.attention_from)
mirror = query * np.array([-1.0, 1.0, 1.0])  # plane x = 0
density = np.exp(-np.sum((ras - mirror) ** 2, axis=-1) / 200.0).astype(np.float32)
nib.save(nib.Nifti1Image(density * 3.0, image.affine), str(out / "attention_from.nii.gz"))
report = {"attention": {"saca_stage": 2, "token_voxels": 8, "token_mm": [24.0, 24.0, 24.0],
                        "point": {"query_ras": query.tolist(), "mirror_ras": mirror.tolist(),
                                  "peak_ras": mirror.tolist(), "peak_to_mirror_mm": 0.0, "share_in_head": 0.9}}}
(out / "report.json").write_text(json.dumps(report))
(out / "args.json").write_text(json.dumps(vars(args), default=list))
print("<filter-progress>1.0</filter-progress>", flush=True)
'''


@pytest.fixture()
def fake_core(tmp_path):
    package = tmp_path / "fakeattn_pkg" / "fakeattn"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(textwrap.dedent(FAKE_ATTENTION_CORE))
    return str(package.parent)


def legend_scene():
    """A scene that holds colour legends, as Slicer's Colors module logic makes the application scene."""
    scene = new_scene()
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # one slice view's layers
    return scene


@pytest.fixture()
def t1_file(tmp_path, subject_t1):
    path = tmp_path / "src" / "case01_t1.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(subject_t1.array, np.float32), subject_t1.affine), path)
    return path


def point_list(scene, ras, label="P"):
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Attention point")
    index = node.AddControlPointWorld(vtk.vtkVector3d(*ras))
    node.SetNthControlPointLabel(index, label)
    return node


def world_point(node, index=0):
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(index, position)
    return position


def scene_state(scene):
    """Names of the nodes in the scene (with their class), to compare before and after."""
    nodes = scene.GetNodes()
    return sorted((nodes.GetItemAsObject(i).GetClassName(), nodes.GetItemAsObject(i).GetName() or "")
                  for i in range(nodes.GetNumberOfItems()))


def write_point_case(folder: Path, reference_file: Path, report: dict, peak: float = 2.5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = nib.load(str(reference_file))
    data = np.zeros(image.shape[:3], np.float32)
    data[tuple(s // 2 for s in data.shape)] = peak
    nib.save(nib.Nifti1Image(data, image.affine), folder / OUTPUT_FILES["attention_from"])
    (folder / OUTPUT_FILES["report"]).write_text(json.dumps(report))
    return folder


def test_point_command_carries_the_point_as_the_contracts_flag():
    logic = SymmetryAwareSegLogic(scene=new_scene(), python="py")
    options = RunOptions(model="m", device="cpu", roi_center=(1, 2, 3), roi_size=(40, 40, 40), dicom_seg=True)
    command = logic.point_attention_command(["/in/a_t1.nii.gz", "/in/a_flair.nii.gz"], "/out", (-30.5, 12, 20.25), options)
    assert command[:5] == ["py", "-m", "SymmetryAwareCore", "attention", "/in/a_t1.nii.gz"]
    assert f"{ATTENTION_FLAG}=-30.5,12,20.25" in command  # "=": a negative R is not read as an option
    assert not any(a.startswith(("--roi-center", "--roi-size", "--dicom-seg")) for a in command)
    # The core's own parser reads the point back, in RAS mm, from that argv.
    args = build_parser().parse_args(command[3:])
    assert args.command == "attention"
    parsed = RunOptions.from_namespace(args)
    assert parsed.attention_from == (-30.5, 12.0, 20.25) and parsed.model == "m" and parsed.roi_center is None
    with pytest.raises(ValueError, match=ATTENTION_FLAG):
        logic.point_attention_command(["/in/a_t1.nii.gz"], "/out", (float("nan"), 0, 0))
    with pytest.raises(ValueError, match="subcommand"):
        segment_command("py", ["/in/a_t1.nii.gz"], "/out", RunOptions(), subcommand="train")


def test_point_run_through_a_child_places_the_mirror_from_the_report_and_shows_the_map(tmp_path, fake_core, t1_file):
    scene = legend_scene()
    logic = SymmetryAwareSegLogic(scene=scene, python=sys.executable, core_module="fakeattn",
                                  env={"PYTHONPATH": fake_core + os.pathsep + os.environ.get("PYTHONPATH", "")})
    reference = logic.read_volume(t1_file, "vtkMRMLScalarVolumeNode", "case01_t1")
    exported = ExportedInputs()
    inputs = exported.files(logic, [reference])
    point = point_list(scene, (-20.0, 5.0, 10.0))
    child, result = logic.start_point_attention(inputs, tmp_path / "out", world_point(point), RunOptions(model="tiny", device="cpu"))
    child.wait(timeout=60)
    args = json.loads((result.case_dir / "args.json").read_text())
    assert args["command"] == "attention" and args["attention_from"] == [-20.0, 5.0, 10.0]

    loaded = logic.load_point_attention(result, reference, point)
    assert loaded.mirror.GetName() == MIRROR_LIST_NAME and loaded.mirror.GetNumberOfControlPoints() == 1
    np.testing.assert_allclose(world_point(loaded.mirror), [20.0, 5.0, 10.0], atol=1e-6)
    assert loaded.mirror.GetNthControlPointLabel(0) == mirror_label("P") == "mirror of P"
    assert loaded.mirror.GetLocked()
    # Window 0..peak; the map is the slice view's foreground over the input.
    display = loaded.map.GetDisplayNode()
    peak = float(array_from_volume(loaded.map).max())
    assert peak > 0
    assert display.GetWindowLevelMin() == pytest.approx(0.0) and display.GetWindowLevelMax() == pytest.approx(peak, rel=1e-5)
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == loaded.map.GetID()
    assert composite.GetBackgroundVolumeID() == reference.GetID()
    # The legend shows the map's own display (colour table and window), with its title.
    assert loaded.legend is not None
    assert loaded.legend.GetPrimaryDisplayNode().GetID() == display.GetID()
    assert loaded.legend.GetTitleText() == MAP_STYLES["attention_from"].title
    assert "peak" in point_summary(loaded.summary) and "SACA stage 2" in point_summary(loaded.summary)

    # Re-placing the point: a second run replaces the map and moves the same mirror list.
    point.SetNthControlPointPositionWorld(0, 30.0, -4.0, 12.0)
    assert exported.files(logic, [reference]) == inputs and exported.exports == 1  # files reused
    child, result2 = logic.start_point_attention(inputs, tmp_path / "out2", world_point(point), RunOptions(model="tiny", device="cpu"))
    child.wait(timeout=60)
    again = logic.load_point_attention(result2, reference, point, mirror_node=loaded.mirror, previous_map=loaded.map)
    assert again.mirror is loaded.mirror and again.mirror.GetNumberOfControlPoints() == 1
    np.testing.assert_allclose(world_point(again.mirror), [-30.0, -4.0, 12.0], atol=1e-6)
    assert loaded.map.GetScene() is None and again.map.GetScene() is scene
    exported.cleanup()


def test_failed_and_cancelled_runs_leave_the_scene_as_before(tmp_path, fake_core, t1_file):
    scene = legend_scene()
    logic = SymmetryAwareSegLogic(scene=scene, python=sys.executable, core_module="fakeattn",
                                  env={"PYTHONPATH": fake_core + os.pathsep + os.environ.get("PYTHONPATH", "")})
    reference = logic.read_volume(t1_file, "vtkMRMLScalarVolumeNode", "case01_t1")
    inputs = logic.export_inputs([reference], tmp_path / "inputs")
    point = point_list(scene, (-20.0, 5.0, 10.0))
    # A previous point run's mirror, which a failure must not move.
    previous = write_point_case(tmp_path / "prev" / "case01_t1", t1_file,
                                {"attention": {"point": {"mirror_ras": [20.0, 5.0, 10.0]}}})
    shown = logic.load_point_attention(previous, reference, point)
    before = scene_state(scene)

    child, result = logic.start_point_attention(inputs, tmp_path / "failed", world_point(point), RunOptions(model="no-saca"))
    with pytest.raises(ProcessFailed, match="has no symmetry-aware cross-attention") as failure:
        child.wait(timeout=60)
    assert "\n" not in str(failure.value)  # the core's one error line, no traceback
    with pytest.raises(ValueError, match="attention_from.nii.gz"):
        logic.load_point_attention(result, reference, point, mirror_node=shown.mirror, previous_map=shown.map)

    child, result = logic.start_point_attention(inputs, tmp_path / "cancelled", world_point(point), RunOptions(model="slow"))
    while child.progress < 0.1:
        child.poll()
    child.cancel(grace_s=0.5)
    with pytest.raises(ProcessCancelled):
        child.wait(timeout=30)
    assert not (result.case_dir / OUTPUT_FILES["attention_from"]).exists()

    # A result that cannot be read: nothing half-loaded stays behind.
    broken = write_point_case(tmp_path / "broken" / "case01_t1", t1_file, {"attention": {"point": {"mirror_ras": [1.0, 2.0, 3.0]}}})
    (broken / OUTPUT_FILES["attention_from"]).write_bytes(b"not an image")
    with pytest.raises((ValueError, RuntimeError)):
        logic.load_point_attention(broken, reference, point, mirror_node=shown.mirror, previous_map=shown.map)

    assert scene_state(scene) == before
    assert shown.map.GetScene() is scene
    np.testing.assert_allclose(world_point(shown.mirror), [20.0, 5.0, 10.0], atol=1e-6)


def test_mirror_falls_back_to_the_cases_plane_through_the_cores_geometry(tmp_path, t1_file):
    scene = new_scene()  # plain slicer-core scene: no legend class registered
    logic = SymmetryAwareSegLogic(scene=scene, python="py")
    reference = logic.read_volume(t1_file, "vtkMRMLScalarVolumeNode", "case01_t1")
    case = write_point_case(tmp_path / "case01_t1", t1_file, {"attention": {}})
    # The plane x = 10 mm, in LPS as the core writes it (so x_LPS = -10).
    plane = {"markups": [{"type": "Plane", "coordinateSystem": "LPS", "center": [-10.0, 0.0, 0.0], "normal": [-1.0, 0.0, 0.0],
                          "controlPoints": [{"id": "1", "label": "MSP", "position": [-10.0, 0.0, 0.0]}]}]}
    (case / OUTPUT_FILES["plane"]).write_text(json.dumps(plane))
    point = point_list(scene, (-20.0, 5.0, 10.0), label="Q")
    loaded = logic.load_point_attention(case, reference, point)
    np.testing.assert_allclose(world_point(loaded.mirror), [40.0, 5.0, 10.0], atol=1e-6)
    assert loaded.mirror.GetNthControlPointLabel(0) == "mirror of Q"
    assert loaded.legend is None and loaded.map.GetScene() is scene  # no legend support: the map still shows


def test_maps_get_their_windows_and_titled_legends(tmp_path, t1_file):
    scene = legend_scene()
    logic = SymmetryAwareSegLogic(scene=scene, python="py")
    affine = nib.load(str(t1_file)).affine
    shape = nib.load(str(t1_file)).shape[:3]
    focus = np.zeros(shape, np.uint8)
    focus[: shape[0] // 2] = 100  # stored 0..255, scaled to at most 0.39: the window stays 0..1
    image = nib.Nifti1Image(focus, affine)
    image.header.set_slope_inter(1.0 / 255.0, 0.0)
    nib.save(image, tmp_path / "attention.nii.gz")
    nib.save(nib.Nifti1Image(np.linspace(-0.3, 0.2, focus.size, dtype=np.float32).reshape(shape), affine), tmp_path / "asym.nii.gz")
    node = logic.load_map(tmp_path / "attention.nii.gz", "focus", style="attention")
    display = node.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    legend = logic.legend_of(node)
    assert legend is not None and legend.GetTitleText() == "Mirror focus (0-1)" and legend.GetLabelFormat() == "%.2f"
    signed = logic.load_map(tmp_path / "asym.nii.gz", "asym", style="asymmetry")
    display = signed.GetDisplayNode()
    assert display.GetWindowLevelMin() == pytest.approx(-0.3, rel=1e-3) and display.GetWindowLevelMax() == pytest.approx(0.3, rel=1e-3)
    assert logic.legend_of(signed).GetTitleText() == MAP_STYLES["asymmetry"].title


def test_exported_inputs_are_reused_until_the_volume_changes(tmp_path, t1_file):
    logic = SymmetryAwareSegLogic(scene=new_scene(), python="py")
    volume = logic.read_volume(t1_file, "vtkMRMLScalarVolumeNode", "case01_t1")
    exported = ExportedInputs()
    with pytest.raises(ValueError, match="input volume"):
        exported.files(logic, [None])
    first = exported.files(logic, [volume])
    assert exported.files(logic, [volume]) == first and exported.exports == 1
    volume.GetImageData().Modified()  # voxels edited (e.g. slicer.util.updateVolumeFromArray)
    second = exported.files(logic, [volume])
    assert exported.exports == 2 and all(p.is_file() for p in second)
    assert not first[0].exists()  # the old folder is gone with its files
    exported.cleanup()
    assert not any(p.exists() for p in second)
