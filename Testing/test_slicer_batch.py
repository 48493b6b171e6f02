"""Slicer logic end to end with a real child process: volumes -> command -> files -> nodes, and batch.

The child is a stand-in for ``python -m SymmetryAwareCore segment`` (which other engineers
are writing): it honours the command-line contract, prints machine progress, writes the
contract's files from its real input, records its arguments, and fails on demand.
"""

from __future__ import annotations

import json
import sys
import textwrap
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the Slicer logic tests")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic, build_segment_command, find_cases  # noqa: E402
from SymmetryAwareSegLib.models import assign_channels, import_model, read_model_card, sha256_of  # noqa: E402
from SymmetryAwareSegLib.process import ProcessFailed  # noqa: E402

FAKE_CORE = '''
import argparse, json, sys, time
from pathlib import Path
import nibabel as nib
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("command")
parser.add_argument("inputs", nargs="+")
parser.add_argument("--output-dir", required=True)
parser.add_argument("--model", default="")
parser.add_argument("--device", default="auto")
parser.add_argument("--overlap", type=float, default=0.25)
parser.add_argument("--tta", action="store_true")
parser.add_argument("--roi-center")
parser.add_argument("--roi-size")
parser.add_argument("--progress")
parser.add_argument("--case-id")
args = parser.parse_args()
first = Path(args.inputs[0])
if "bad" in first.name:
    print(f"symmetryaware segment: error: {first}: not a brain image", file=sys.stderr)
    sys.exit(2)
case = first.name.split(".")[0]
out = Path(args.output_dir) / case
out.mkdir(parents=True, exist_ok=True)
print("<filter-stage>aligning</filter-stage>", flush=True)
image = nib.load(str(first))
shape = image.shape[:3]
ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).astype(float)
ras = ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
print("<filter-progress>0.5</filter-progress>", flush=True)
labels = np.zeros(shape, np.uint8)
labels[ras[..., 0] < -10] = 1
labels[ras[..., 0] > 10] = 2
nib.save(nib.Nifti1Image(labels, image.affine), str(out / "segmentation.nii.gz"))
att = nib.Nifti1Image(np.full(shape, 128, np.uint8), image.affine)
att.header.set_slope_inter(1 / 255.0, 0)
nib.save(att, str(out / "attention.nii.gz"))
nib.save(nib.Nifti1Image((ras[..., 0] / 50).astype(np.float32), image.affine), str(out / "asymmetry.nii.gz"))
report = {"labels": [{"value": 1, "name": "left thing", "color": [1, 0, 0]},
                     {"value": 2, "name": "right thing", "color": [0, 0, 1]}],
          "volumes_ml": {}, "model": {"name": args.model}, "device": args.device, "runtime_s": {"total": 0.1}}
(out / "report.json").write_text(json.dumps(report))
(out / "args.json").write_text(json.dumps(vars(args)))
print("<filter-progress>1.0</filter-progress>", flush=True)
'''


@pytest.fixture()
def fake_core(tmp_path):
    package = tmp_path / "fakecore_pkg" / "fakecore"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(textwrap.dedent(FAKE_CORE))
    return str(package.parent)


@pytest.fixture()
def card(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    weights = folder / "brats_small.safetensors"
    weights.write_bytes(b"not really weights")
    card = {"name": "brats_small", "channels": [{"name": "t1", "patterns": ["*t1.*", "*t1_*"]},
                                                 {"name": "flair", "patterns": ["*flair*"]}],
            "sha256": sha256_of(weights)}
    path = folder / "brats_small.json"
    path.write_text(json.dumps(card))
    return path


def write_volume(path: Path, subject_t1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(subject_t1.array, np.float32), subject_t1.affine), path)
    return path


def test_command_follows_the_contract():
    command = build_segment_command("py", ["a_t1.nii.gz", "a_flair.nii.gz"], "/out", model="m", device="cuda",
                                    overlap=0.5, tta=True, roi_center=(1, -2.5, 3), roi_size=(40, 40, 30))
    assert command[:6] == ["py", "-m", "SymmetryAwareCore", "segment", "a_t1.nii.gz", "a_flair.nii.gz"]
    joined = " ".join(command)
    for piece in ("--output-dir /out", "--model m", "--device cuda", "--overlap 0.5", "--tta",
                  "--roi-center 1,-2.5,3", "--roi-size 40,40,30", "--progress machine"):
        assert piece in joined
    with pytest.raises(ValueError):
        build_segment_command("py", [], "/out")
    with pytest.raises(ValueError):
        build_segment_command("py", ["a"], "/out", device="tpu")
    with pytest.raises(ValueError):
        build_segment_command("py", ["a"], "/out", roi_center=(0, 0, 0))


def test_channel_assignment_by_node_name(card):
    model = read_model_card(card)
    assert model.channel_names == ("t1", "flair")
    assert assign_channels(model.channels, ["Case7_FLAIR", "case7_T1"]) == [1, 0]
    assert assign_channels(model.channels, ["case7_t1.nii.gz", "case7_t1ce"]) == [0, None]
    assert assign_channels(model.channels, ["scan_a", "scan_b"]) == [None, None]


def test_offline_import_checks_the_checksum(card, tmp_path):
    imported = import_model(card, tmp_path / "library")
    assert imported.weights.read_bytes() == b"not really weights"
    card.with_suffix(".safetensors").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="SHA-256"):
        import_model(card, tmp_path / "library2")
    assert not (tmp_path / "library2" / "brats_small.safetensors").exists()


def test_volumes_to_nodes_through_a_real_child(tmp_path, fake_core, card, subject_t1):
    scene = slicer.vtkMRMLScene()
    logic = SymmetryAwareSegLogic(scene=scene, python=sys.executable, core_module="fakecore", env={"PYTHONPATH": fake_core})
    source = write_volume(tmp_path / "src" / "t1.nii.gz", subject_t1)
    flair = logic._read_volume(source, "vtkMRMLScalarVolumeNode", "case07 FLAIR")
    t1 = logic._read_volume(source, "vtkMRMLScalarVolumeNode", "case07 T1")
    ordered = logic.assign_volumes(read_model_card(card), [flair, t1])
    assert [n.GetName() for n in ordered] == ["case07 T1", "case07 FLAIR"]
    inputs = logic.export_inputs(ordered, tmp_path / "inputs")
    assert [p.name for p in inputs] == ["case07_T1.nii.gz", "case07_FLAIR.nii.gz"]

    events = []
    result = logic.run_case(inputs, tmp_path / "out", on_event=events.append, model=str(card), device="cpu",
                            roi_center=(0, -10, 5), roi_size=(60, 50, 40), timeout=60)
    assert result.case_id == "case07_T1"
    assert [e.value for e in events if e.kind == "progress"] == [0.5, 1.0]
    args = json.loads((result.case_dir / "args.json").read_text())
    assert [Path(p).name for p in args["inputs"]] == ["case07_T1.nii.gz", "case07_FLAIR.nii.gz"]
    assert args["device"] == "cpu" and args["roi_center"] == "0,-10,5" and args["progress"] == "machine"

    loaded = logic.load_results(result, t1)
    names = [loaded.segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["left thing", "right thing"]
    table = loaded.table.GetTable()
    assert table.GetValue(0, 3).ToDouble() == 0.0 and table.GetValue(0, 2).ToDouble() > 0  # left thing is left
    assert table.GetValue(1, 2).ToDouble() == 0.0 and table.GetValue(1, 3).ToDouble() > 0

    with pytest.raises(ValueError, match="flair"):
        logic.assign_volumes(read_model_card(card), [t1, logic._read_volume(source, "vtkMRMLScalarVolumeNode", "other")])


def test_failing_child_raises_its_one_line_error(tmp_path, fake_core, subject_t1):
    logic = SymmetryAwareSegLogic(scene=slicer.vtkMRMLScene(), python=sys.executable, core_module="fakecore",
                                  env={"PYTHONPATH": fake_core})
    bad = write_volume(tmp_path / "bad_case.nii.gz", subject_t1)
    with pytest.raises(ProcessFailed, match="not a brain image"):
        logic.run_case([bad], tmp_path / "out", timeout=60)


def test_batch_over_a_folder_saves_seg_maps_and_bundle(tmp_path, fake_core, card, subject_t1):
    data = tmp_path / "data"
    write_volume(data / "case01" / "case01_flair.nii.gz", subject_t1)
    write_volume(data / "case01" / "case01_t1.nii.gz", subject_t1)
    write_volume(data / "case02_t1.nii.gz", subject_t1)
    write_volume(data / "bad03_t1.nii.gz", subject_t1)
    assert [len(c) for c in find_cases(data)] == [2, 1, 1]

    logic = SymmetryAwareSegLogic(scene=slicer.vtkMRMLScene(), python=sys.executable, core_module="fakecore",
                                  env={"PYTHONPATH": fake_core})
    summaries = {s["case"]: s for s in logic.batch(data, tmp_path / "out", model=str(card), device="cpu")}
    assert set(summaries) == {"case01_t1", "case02_t1", "bad03_t1"}
    assert "not a brain image" in summaries["bad03_t1"]["error"]
    # Channel order from the card: t1 first although flair sorts first in the folder.
    assert [Path(p).name for p in summaries["case01_t1"]["inputs"]] == ["case01_t1.nii.gz", "case01_flair.nii.gz"]
    for case in ("case01_t1", "case02_t1"):
        summary = summaries[case]
        assert "error" not in summary, summary
        for key in ("segmentation", "attention", "asymmetry", "bundle"):
            assert Path(summary[key]).is_file(), key
        with zipfile.ZipFile(summary["bundle"]) as bundle:
            names = bundle.namelist()
        assert any(n.endswith(".mrml") for n in names)
        assert any(n.endswith(".seg.nrrd") for n in names)


def test_headless_batch_script(tmp_path, fake_core, subject_t1):
    import os
    import subprocess

    data = tmp_path / "data"
    write_volume(data / "case05_t1.nii.gz", subject_t1)
    write_volume(data / "bad06_t1.nii.gz", subject_t1)
    script = Path(__file__).resolve().parents[1] / "SymmetryAwareSeg" / "Scripts" / "batch.py"
    env = dict(os.environ, PYTHONPATH=fake_core + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, str(script), "--input", str(data), "--output", str(tmp_path / "out"),
               "--device", "cpu", "--no-bundle", "--core-module", "fakecore"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]  # one case failed on purpose
    assert "case05_t1: 100%" in done.stdout
    summary = {s["case"]: s for s in json.loads((tmp_path / "out" / "summary.json").read_text())}
    assert Path(summary["case05_t1"]["segmentation"]).is_file() and "bundle" not in summary["case05_t1"]
    assert "not a brain image" in summary["bad06_t1"]["error"]
    bad_args = subprocess.run([sys.executable, str(script), "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o2")],
                              capture_output=True, text=True, env=env, timeout=120)
    assert bad_args.returncode == 2 and "not a folder" in bad_args.stderr
