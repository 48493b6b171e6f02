"""Slicer logic end to end with a real child process: volumes -> command -> files -> nodes, and batch.

The child is a stand-in for ``python -m SymmetryAwareCore segment`` (which other engineers
are writing): it honours the command-line contract, prints machine progress, writes the
contract's files from its real input, records its arguments, and fails on demand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the Slicer logic tests")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareCore.contract import ChannelMatchError, RunOptions, add_run_option_arguments, match_channels  # noqa: E402
from SymmetryAwareSegLib.batch import SUMMARY_FILE, BatchRun  # noqa: E402
from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic, build_segment_command, find_cases  # noqa: E402
from SymmetryAwareSegLib.models import channel_assignment_text, import_model, read_model_card, sha256_of  # noqa: E402
from SymmetryAwareSegLib.nodes import MARKUPS_CLASSES, new_scene  # noqa: E402
from SymmetryAwareSegLib.process import ProcessFailed  # noqa: E402

FAKE_CORE = '''
import argparse, json, sys, time
from pathlib import Path
import nibabel as nib
import numpy as np

from SymmetryAwareCore.contract import add_run_option_arguments

# A stand-in core that parses its command line with the contract's own definition.
parser = argparse.ArgumentParser()
parser.add_argument("command")
parser.add_argument("inputs", nargs="+")
parser.add_argument("--output-dir", required=True)
add_run_option_arguments(parser)
parser.add_argument("--progress")
parser.add_argument("--case-id", required=True)
args = parser.parse_args()
first = Path(args.inputs[0])
if "bad" in first.name:
    print(f"symmetryaware segment: error: {first}: not a brain image", file=sys.stderr)
    sys.exit(2)
if "slow" in first.name:
    print("<filter-progress>0.1</filter-progress>", flush=True)
    time.sleep(60)
out = Path(args.output_dir) / args.case_id
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
(out / "args.json").write_text(json.dumps(vars(args), default=list))
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


def slicer58_scene():
    """A scene that behaves like a fresh ``vtkMRMLScene()`` in Slicer 5.8: the markups
    classes are not registered there (only the Markups logic registers them, in the
    application scene), so creating a plane node returns None until someone registers them."""
    scene = slicer.vtkMRMLScene()
    registered = set()
    real_add, real_is, real_register = scene.AddNewNodeByClass, scene.IsNodeClassRegistered, scene.RegisterNodeClass

    def add(class_name, *name):
        if class_name in MARKUPS_CLASSES and class_name not in registered:
            return None
        return real_add(class_name, *name)

    def register(node):
        registered.add(node.GetClassName())
        real_register(node)

    scene.AddNewNodeByClass = add
    scene.IsNodeClassRegistered = lambda name: name in registered if name in MARKUPS_CLASSES else real_is(name)
    scene.RegisterNodeClass = register
    return scene


def fake_logic(fake_core, scene=None):
    return SymmetryAwareSegLogic(scene=scene or new_scene(), python=sys.executable, core_module="fakecore",
                                 env={"PYTHONPATH": fake_core + os.pathsep + os.environ.get("PYTHONPATH", "")})


def test_command_is_the_contracts_and_parses_back_to_the_same_options():
    options = RunOptions(model="m", device="cuda", overlap=0.5, tta=True, roi_center=(1, -2.5, 3), roi_size=(40, 40, 30))
    command = build_segment_command("py", ["a_t1.nii.gz", "a_flair.nii.gz"], "/out", options)
    assert command[:6] == ["py", "-m", "SymmetryAwareCore", "segment", "a_t1.nii.gz", "a_flair.nii.gz"]
    joined = " ".join(command)
    for piece in ("--output-dir /out", "--case-id a", "--model m", "--device cuda", "--overlap 0.5", "--tta",
                  "--roi-center=1,-2.5,3", "--roi-size=40,40,30", "--progress machine"):
        assert piece in joined
    parser = argparse.ArgumentParser()
    parser.add_argument("rest", nargs="*")
    add_run_option_arguments(parser)
    assert RunOptions.from_namespace(parser.parse_args(options.as_arg_list())) == options
    with pytest.raises(ValueError):
        build_segment_command("py", [], "/out")
    with pytest.raises(ValueError, match="--device"):
        RunOptions(device="tpu")
    with pytest.raises(ValueError, match="go together"):
        RunOptions(roi_center=(0, 0, 0))
    with pytest.raises(ValueError, match="--overlap must be in"):
        RunOptions(overlap=0.95)


def test_channel_assignment_by_node_name_is_the_cores_rule(card):
    model = read_model_card(card)
    assert model.channel_names == ("t1", "flair")
    assert match_channels(["Case7_FLAIR", "case7_T1"], model.channels)[0] == [1, 0]
    with pytest.raises(ChannelMatchError):
        match_channels(["case7_t1.nii.gz", "case7_t1ce"], model.channels)
    order, notes = match_channels(["scan_a", "scan_b"], model.channels)
    assert order == [0, 1] and "order taken as given" in notes[0]
    assert channel_assignment_text(model, ["Case7_FLAIR", "case7_T1"]) == "Channels: t1 \u2190 case7_T1, flair \u2190 Case7_FLAIR"
    assert "expects 2 channel(s)" in channel_assignment_text(model, ["case7_T1"])


def test_offline_import_checks_the_checksum(card, tmp_path):
    imported = import_model(card, tmp_path / "library")
    assert imported.weights.read_bytes() == b"not really weights"
    card.with_suffix(".safetensors").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="SHA-256"):
        import_model(card, tmp_path / "library2")
    assert not (tmp_path / "library2" / "brats_small.safetensors").exists()


def test_volumes_to_nodes_through_a_real_child(tmp_path, fake_core, card, subject_t1):
    logic = fake_logic(fake_core)
    source = write_volume(tmp_path / "src" / "t1.nii.gz", subject_t1)
    flair = logic.read_volume(source, "vtkMRMLScalarVolumeNode", "case07 FLAIR")
    t1 = logic.read_volume(source, "vtkMRMLScalarVolumeNode", "case07 T1")
    ordered = logic.assign_volumes(read_model_card(card), [flair, t1])
    assert [n.GetName() for n in ordered] == ["case07 T1", "case07 FLAIR"]
    inputs = logic.export_inputs(ordered, tmp_path / "inputs")
    assert [p.name for p in inputs] == ["case07_T1.nii.gz", "case07_FLAIR.nii.gz"]

    events = []
    options = RunOptions(model=str(card), device="cpu", roi_center=(0, -10, 5), roi_size=(60, 50, 40))
    result = logic.run_case(inputs, tmp_path / "out", options, on_event=events.append, timeout=60)
    assert result.case_id == "case07"  # the contract's case id of the two files
    assert [e.value for e in events if e.kind == "progress"] == [0.5, 1.0]
    args = json.loads((result.case_dir / "args.json").read_text())
    assert [Path(p).name for p in args["inputs"]] == ["case07_T1.nii.gz", "case07_FLAIR.nii.gz"]
    assert args["device"] == "cpu" and args["roi_center"] == [0, -10, 5] and args["progress"] == "machine"
    assert args["sw_batch"] == RunOptions.default("sw_batch") and args["overlap"] == RunOptions.default("overlap")

    loaded = logic.load_results(result, t1)
    names = [loaded.segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["left thing", "right thing"]
    table = loaded.table.GetTable()
    assert table.GetValue(0, 3).ToDouble() == 0.0 and table.GetValue(0, 2).ToDouble() > 0  # left thing is left
    assert table.GetValue(1, 2).ToDouble() == 0.0 and table.GetValue(1, 3).ToDouble() > 0

    with pytest.raises(ValueError, match="flair"):
        logic.assign_volumes(read_model_card(card), [t1, logic.read_volume(source, "vtkMRMLScalarVolumeNode", "other_t1")])


def test_failing_child_raises_its_one_line_error(tmp_path, fake_core, subject_t1):
    logic = fake_logic(fake_core)
    bad = write_volume(tmp_path / "bad_case.nii.gz", subject_t1)
    with pytest.raises(ProcessFailed, match="not a brain image"):
        logic.run_case([bad], tmp_path / "out", timeout=60)


def test_batch_runs_in_the_background_with_per_case_progress(tmp_path, fake_core, card, subject_t1):
    data = tmp_path / "data"
    write_volume(data / "case01" / "case01_flair.nii.gz", subject_t1)
    write_volume(data / "case01" / "case01_t1.nii.gz", subject_t1)
    for case in ("bad03", "case02"):
        for channel in ("t1", "flair"):
            write_volume(data / case / f"{case}_{channel}.nii.gz", subject_t1)
    write_volume(data / "loose_t1.nii.gz", subject_t1)  # one file for a two-channel model: refused
    assert [(name, len(files)) for name, files in find_cases(data)] == [
        ("bad03", 2), ("case01", 2), ("case02", 2), ("loose_t1", 1)]

    events, progress = [], []
    run = BatchRun(fake_logic(fake_core), data, tmp_path / "out", RunOptions(model=str(card), device="cpu"),
                   on_event=lambda case, event: events.append((case, event.kind, event.text or event.value)))
    run.start()
    polls = 0
    while run.poll():  # what the panel's timer does: each call returns at once
        progress.append((run.current_case, run.progress))
        polls += 1
        time.sleep(0.02)
    assert polls > 3, "the batch must advance through many non-blocking polls"
    assert [p for _, p in progress] == sorted(p for _, p in progress), "overall progress never goes back"
    assert {case for case, _ in progress} == {"case01", "bad03", "case02"}
    assert ("case01", "case", "started") in events and ("case01", "progress", 0.5) in events
    assert ("bad03", "case", "failed") in events and ("case02", "case", "done") in events

    summaries = {s["case"]: s for s in json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())}
    assert set(summaries) == {"case01", "case02", "bad03", "loose_t1"}
    assert "not a brain image" in summaries["bad03"]["error"]
    assert "expects 2 channel(s)" in summaries["loose_t1"]["error"]
    # Channel order from the card: t1 first although flair sorts first in the folder.
    assert [Path(p).name for p in summaries["case01"]["inputs"]] == ["case01_t1.nii.gz", "case01_flair.nii.gz"]
    for case in ("case01", "case02"):
        summary = summaries[case]
        assert "error" not in summary, summary
        for key in ("segmentation", "attention", "asymmetry", "bundle"):
            assert Path(summary[key]).is_file(), key
        with zipfile.ZipFile(summary["bundle"]) as bundle:
            names = bundle.namelist()
        assert any(n.endswith(".mrml") for n in names)
        assert any(n.endswith(".seg.nrrd") for n in names)


def test_batch_works_in_scenes_without_the_markups_logic(tmp_path, fake_core, subject_t1):
    """Slicer 5.8: fresh scenes cannot create a plane node until the classes are registered."""
    write_volume(tmp_path / "data" / "case09_t1.nii.gz", subject_t1)
    plane = {"markups": [{"type": "Plane", "coordinateSystem": "RAS", "center": [0, 0, 0], "normal": [1, 0, 0]}]}

    def run_with(factory, out):
        logic = fake_logic(fake_core)
        run = BatchRun(logic, tmp_path / "data", out, RunOptions(device="cpu"), save_bundle=False, scene_factory=factory)
        run.start()
        while run.poll():
            case_dir = out / "case09_t1"
            if (case_dir / "report.json").exists() and not (case_dir / "msp.mrk.json").exists():
                (case_dir / "msp.mrk.json").write_text(json.dumps(plane))  # the stand-in core writes no plane
            time.sleep(0.02)
        return run.summaries[0]

    bare = run_with(slicer58_scene, tmp_path / "bare")
    assert "markups plane" in bare.get("error", ""), "the emulated 5.8 scene must refuse plane nodes"
    fixed = run_with(lambda: new_scene(slicer58_scene()), tmp_path / "fixed")
    assert "error" not in fixed, fixed
    assert Path(fixed["segmentation"]).is_file()


def test_batch_cancel_stops_the_running_case_and_starts_no_other(tmp_path, fake_core, subject_t1):
    write_volume(tmp_path / "data" / "a_slow_t1.nii.gz", subject_t1)
    write_volume(tmp_path / "data" / "b_t1.nii.gz", subject_t1)
    run = BatchRun(fake_logic(fake_core), tmp_path / "data", tmp_path / "out", RunOptions(device="cpu"), save_bundle=False)
    run.start()
    deadline = time.monotonic() + 30
    while run.progress == 0.0 and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.02)
    assert run.current_case == "a_slow_t1" and 0 < run.progress < 0.5
    started = time.monotonic()
    run.cancel()
    assert time.monotonic() - started < 0.5, "cancel must not block the GUI"
    while run.poll():
        time.sleep(0.02)
    assert time.monotonic() - started < 15
    summaries = {s["case"]: s["error"] for s in json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())}
    assert summaries == {"a_slow_t1": "cancelled", "b_t1": "not run (batch cancelled)"}
    assert not (tmp_path / "out" / "b_t1").exists()


def test_headless_batch_script(tmp_path, fake_core, subject_t1):
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
    bad_option = subprocess.run(command[:-2] + ["--overlap", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert bad_option.returncode == 2 and "--overlap must be in" in bad_option.stderr


def test_batch_refuses_a_classifier_card_before_any_child(tmp_path, fake_core, card, subject_t1):
    """A batch segments; a classifier's card is refused with the command that classifies a folder."""
    write_volume(tmp_path / "data" / "case01_t1.nii.gz", subject_t1)
    data = json.loads(card.read_text())
    data["name"], data["postprocessing"] = "a-classifier", {"activation": "sigmoid", "findings": ["haemorrhage"]}
    classifier = tmp_path / "classifier.json"
    classifier.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="scan-level classifier; a batch segments.*symmetryaware classify"):
        BatchRun(fake_logic(fake_core), tmp_path / "data", tmp_path / "out", RunOptions(model=str(classifier)))
    assert not (tmp_path / "out").exists()
