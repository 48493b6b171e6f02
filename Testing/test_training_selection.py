"""Best-checkpoint selection, early stopping, checkpoint fallback, up-front config errors and
init-weight loading, driven through the engine with the tiny task of test_training_engine.

The task here returns scripted validation scores per step, so which state is best is known in
advance; the engine must publish exactly that state's weights and say why in the card.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from SymmetryAwareCore.errors import InputError
from SymmetryAwareTraining.checkpoint import load_checkpoint
from SymmetryAwareTraining.cli import main
from SymmetryAwareTraining.validation import BestTracker, ValidationResult

from test_training_engine import HERE, ToyTask, _args, _weights

SCRIPTS = {"rise_then_fall": {1: 0.7, 2: 0.3}, "hd_falls": {1: 10.0, 2: 5.0}, "plateau": {1: 0.5}}


class ScriptedTask(ToyTask):
    """The toy task with a validation whose score at each step comes from a script."""

    script = {}

    def validation_entries(self):
        return [{"case": "held_out", "image": "x.nii.gz"}]

    def validate(self, model, env):
        value = self.script.get(self.step_of(model), 0.4)
        metric = self.config.validation.metric
        metrics = {"dice_mean": 0.5, "hd95_mean": 1.0, "lesion_dice_mean": 0.5, "lesion_hd95_mean": 1.0}
        return ValidationResult({**metrics, metric: value}, {"held_out": {}}, 0.0)

    def step_of(self, model):
        self.calls = getattr(self, "calls", 0) + 1
        return self.calls


def make_scripted_task(config):
    task = ScriptedTask(config)
    task.script = SCRIPTS[Path(config.train.output_dir).name.split("-")[0]]
    return task


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def _scripted(out, *extra):
    return _args(out, "--set", "train.task=test_training_selection:make_scripted_task", "--set", "train.steps=2",
                 "--set", "train.checkpoint_every=1", "--validate-every", "1", *extra)


def test_best_checkpoint_is_the_better_of_two_states(tmp_path):
    out = tmp_path / "rise_then_fall"
    assert main(_scripted(out)) == 0
    card = _weights(out)
    step1 = load_checkpoint(out / "checkpoints" / "previous.pt")  # two kept: steps 1 and 2
    step2 = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (step1["step"], step2["step"]) == (1, 2)
    assert all(torch.equal(card[k], step1["model"][k]) for k in card)
    assert any(not torch.equal(card[k], step2["model"][k]) for k in card)
    record = json.loads((out / "model.json").read_text())["extra"]["training"]["checkpoint"]
    assert record["selected"] == "best" and record["step"] == 1 and record["best_value"] == 0.7
    assert record["validations"] == [[1, 0.7], [2, 0.3]] and record["why"].startswith("highest dice_mean (0.7)")

    # HD95 is better lower: the later, smaller value wins.
    out = tmp_path / "hd_falls"
    assert main(_scripted(out, "--set", "validation.metric=hd95_mean")) == 0
    record = json.loads((out / "model.json").read_text())["extra"]["training"]["checkpoint"]
    assert record["step"] == 2 and record["why"].startswith("lowest hd95_mean (5)")
    assert all(torch.equal(v, load_checkpoint(out)["model"][k]) for k, v in _weights(out).items())

    # publish=last keeps the last weights, and says so.
    out = tmp_path / "rise_then_fall-last"
    assert main(_scripted(out, "--set", "validation.publish=last")) == 0
    record = json.loads((out / "model.json").read_text())["extra"]["training"]["checkpoint"]
    assert record["selected"] == "last" and record["best_step"] == 1
    assert all(torch.equal(v, load_checkpoint(out)["model"][k]) for k, v in _weights(out).items())


def test_early_stopping_after_patience(tmp_path, capsys):
    out = tmp_path / "plateau"
    assert main(_scripted(out, "--set", "train.steps=8", "--set", "validation.patience=2")) == 0
    assert "early stop at step 3" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["stopped_early"] and summary["best"]["step"] == 1
    record = json.loads((out / "model.json").read_text())["extra"]["training"]["checkpoint"]
    assert "stopped early at step 3" in record["why"] and load_checkpoint(out)["step"] == 3


def test_corrupted_last_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    full, killed = tmp_path / "full", tmp_path / "killed"
    common = ("--set", "train.steps=4", "--set", "train.checkpoint_every=1")
    assert main(_args(full, *common)) == 0
    assert main(_args(killed, *common, "--set", "train.stop_after_steps=3")) == 3
    (killed / "checkpoints" / "last.pt").write_bytes(b"\x00" * 100)  # e.g. a crash mid-write on another FS
    capsys.readouterr()
    assert main(["finetune-seg", "--output-dir", str(killed), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming from the previous checkpoint" in err and "(step 2)" in err and "Traceback" not in err
    a, b = _weights(full), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the run ends as if never interrupted
    # Both unreadable: one line, exit 2.
    for name in ("last.pt", "previous.pt"):
        (killed / "checkpoints" / name).write_bytes(b"junk")
    assert main(["finetune-seg", "--output-dir", str(killed), "--resume"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("override, words", [
    ("data.roi_size=[32,32,32]", "multiple of 32 and at least 64"),
    ("data.roi_size=[64,64,80]", "multiple of 32"),
    ("data.roi_size=[1000000,1000000,1000000]", "1..512"),
    ("model.kwargs={feature_size: 12000}", "12..192"),
    ("data.pos_fraction=1.5", "data.pos_fraction"),
    ("validation.metric=accuracy", "validation.metric 'accuracy'"),
    ("validation.patience=3", "needs validation.every"),
    ("optim.lr=0", "optim.lr"),
    ("model.kwargs={feature_size: 16}", "multiple of 12"),
    ("model.init_checkpoint=/nonexistent/x.pt", "not found"),
])
def test_config_values_are_checked_up_front(override, words, tmp_path, capsys):
    args = ["finetune-seg", "--datalist", str(tmp_path / "never_read.json"), "--output-dir", str(tmp_path / "o"),
            "--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_validation_asked_of_a_task_without_it(tmp_path, capsys):
    assert main(_args(tmp_path / "toy", "--validate-every", "1")) == 2
    assert "has no validation" in capsys.readouterr().err


def test_progress_line_shows_samples_per_second():
    from SymmetryAwareTraining.progress import Progress

    stream = io.StringIO()
    progress = Progress(total=2, every=1, stream=stream, samples_per_step=4)
    progress.update(1, {"loss": 1.0}, lr=1e-3)
    assert "samples/s/device" in stream.getvalue()


def test_best_tracker_rules():
    t = BestTracker("ET_hd95", patience=2, min_delta=0.5)
    assert t.update(1, 10.0) and not t.update(2, 9.8)  # within min_delta: no improvement
    assert t.should_stop is False and not t.update(3, float("nan")) and t.should_stop
    restored = BestTracker("ET_hd95")
    restored.load_state_dict(t.state_dict())
    assert (restored.best_step, restored.best_value, restored.since_best) == (1, 10.0, 2)
    other = BestTracker("dice_mean")
    other.load_state_dict(t.state_dict())  # another metric: its history does not carry over
    assert other.best_step is None


# --- init weights: every encoder and SACA key must load -------------------------------------

def _seg_model(use_saca=True):
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR

    torch.manual_seed(0)
    return SASwinUNETR(in_channels=1, out_channels=3, feature_size=12, depths=(1, 1, 1, 1), use_saca=use_saca)


def test_init_weights_need_every_encoder_and_saca_key(tmp_path):
    from safetensors.torch import save_file

    from SymmetryAwareTraining.tasks import load_init_weights

    source = _seg_model()
    state = source.state_dict()
    # A pretraining checkpoint: encoder + SACA + a head the downstream net lacks -> loads, head named.
    pre = {**{k: v for k, v in state.items() if k.startswith(("swinViT.", "saca."))}, "rotation_head.weight": torch.ones(4)}
    torch.save({"model": {f"module.{k}": v for k, v in pre.items()}, "step": 3}, tmp_path / "pre.pt")
    lines = []
    target = _seg_model()
    torch.nn.init.zeros_(target.swinViT.patch_embed.proj.weight)
    counts = load_init_weights(target, str(tmp_path / "pre.pt"), log=lines.append)
    assert torch.equal(target.swinViT.patch_embed.proj.weight, source.swinViT.patch_embed.proj.weight)
    assert counts["required_loaded"] == counts["required"] > 0 and "rotation_head.weight" in lines[0]

    # One SACA tensor short: refused, the key named; allowed with --allow-partial, counts printed.
    saca_key = next(k for k in pre if k.startswith("saca."))
    short = {k: v for k, v in pre.items() if k != saca_key}
    save_file({k: v.contiguous() for k, v in short.items()}, str(tmp_path / "short.safetensors"))
    with pytest.raises(InputError, match=f"1 encoder/SACA key\\(s\\) missing: {saca_key}"):
        load_init_weights(_seg_model(), str(tmp_path / "short.safetensors"), log=lines.append)
    counts = load_init_weights(_seg_model(), str(tmp_path / "short.safetensors"), allow_partial=True, log=lines.append)
    assert counts["required_loaded"] == counts["required"] - 1 and "partial load allowed" in lines[-1]

    # Keys under an extra prefix: nothing matches -> every problem named, no silent SACA-only load.
    save_file({f"backbone.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "prefixed.safetensors"))
    with pytest.raises(InputError, match="no tensor of the checkpoint matches"):
        load_init_weights(_seg_model(), str(tmp_path / "prefixed.safetensors"), log=lines.append)
    # A MONAI SwinUNETR state (no SACA): refused unless partial loads are allowed.
    plain = {k: v for k, v in state.items() if not k.startswith("saca.")}
    torch.save({"state_dict": plain}, tmp_path / "monai.pth")
    with pytest.raises(InputError, match="SACA key|encoder/SACA"):
        load_init_weights(_seg_model(), str(tmp_path / "monai.pth"), log=lines.append)
    assert load_init_weights(_seg_model(), str(tmp_path / "monai.pth"), allow_partial=True, log=lines.append)["loaded"]


@pytest.mark.parametrize("name, content", [("garbage.safetensors", b"\x07" * 64), ("garbage.pt", b"not a zip"),
                                           ("weights.bin", b""), ("weights.onnx", b"x")])
def test_unreadable_init_checkpoints_are_one_line(name, content, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    args = _args(tmp_path / "run", "--set", "train.task=", "--set", "data.roi_size=[64,64,64]",
                 "--set", "model.kwargs={in_channels: 1, out_channels: 3, feature_size: 12}", "--init-checkpoint",
                 str(path), "--datalist", str(tmp_path / "unused.json"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert name in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_two_process_run_validates_and_stops_early_together(tmp_path):
    """Under torchrun both ranks validate, agree on the best step, stop at the same step
    (the stop checkpoint gathers every rank's RNG state: a rank that ran on would hang it)."""
    import os
    import shutil
    import subprocess
    import sys

    out = tmp_path / "plateau"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "SymmetryAwareTraining.cli",
           *_scripted(out, "--set", "train.steps=8", "--set", "validation.patience=2", "--set", "data.batch_size=1")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if done.returncode and "address already in use" in done.stderr.lower():
        shutil.rmtree(out, ignore_errors=True)  # another process took the rendezvous port
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3 and summary["stopped_early"]
    assert summary["best"]["step"] == 1 and summary["samples_per_second"] > summary["samples_per_second_per_device"]
    state = load_checkpoint(out)
    assert state["step"] == 3 and len(state["rng"]) == 2
    assert done.stderr.count("early stop at step 3") == 1  # said once, by rank 0
