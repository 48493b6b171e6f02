"""The pretraining command's wiring, with a small stand-in for SASwinPretrainer.

The real network costs about a minute per step on 2 CPU cores, so the stand-in returns
the same outputs (rotation logits, contrastive and symmetry embeddings, reconstruction)
from a tiny Conv3d; the views, the four losses and their weights are the real ones from
SymmetryAwareCore.models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from SymmetryAwareCore.io.image import Image
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareTraining.cli import main
from SymmetryAwareTraining.config import RunConfig, apply_overrides

HERE = Path(__file__).resolve().parent


class TinyPretrainer(nn.Module):
    """Same output contract as SASwinPretrainer, from a 2-layer Conv3d."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 8, 3, padding=1)
        self.rot = nn.Linear(8, 4)
        self.con = nn.Linear(8, 8)
        self.proj = nn.Linear(8, 8)
        self.rec = nn.Conv3d(8, in_channels, 1)

    def forward(self, x, x_counterpart):
        f, fc = torch.relu(self.conv(x)), torch.relu(self.conv(x_counterpart))
        pooled, pooled_c = f.mean((2, 3, 4)), fc.mean((2, 3, 4))

        def tokens(features):  # (B, 8, 2, 2, 2) region embeddings, as the real head's
            t = torch.nn.functional.adaptive_avg_pool3d(features, 2)
            return self.proj(t.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(t.shape[0], -1, 2, 2, 2)

        return {"rotation": self.rot(pooled), "contrastive": self.con(pooled), "reconstruction": self.rec(f),
                "embedding": self.proj(pooled), "embedding_counterpart": self.proj(pooled_c),
                "token_embedding": tokens(f), "token_embedding_counterpart": tokens(fc)}


@pytest.fixture()
def lists(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for n in range(6):
        write_nifti(Image(rng.normal(size=(20, 18, 18)).astype(np.float32) + 5, np.eye(4)), tmp_path / f"s{n}.nii.gz")
        entries.append({"case": f"s{n}", "image": f"s{n}.nii.gz", "status": "patient" if n % 2 else "healthy",
                        "fold": n % 3})
    down = tmp_path / "down.json"
    down.write_text(json.dumps({"training": entries}))
    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps({"training": [e for e in entries if e["fold"] != 2]}))
    return pre, down


def _args(pre, down, out, *extra):
    return ["pretrain", "--datalist", str(pre), "--set", f"data.exclude_datalist={down}", "--set", "data.exclude_fold=2",
            "--output-dir", str(out), "--device", "cpu", "--steps", "2", "--set", "data.roi_size=[16,16,16]",
            "--set", "data.batch_size=2", "--set", "model.name=test_training_pretrain:TinyPretrainer",
            "--set", "model.kwargs={in_channels: 1}", "--set", "pretrain.block_size=4",
            # synthetic blobs, not heads: no mid-sagittal plane to find, so an unaligned run
            "--set", "data.align=false", *extra]


def test_pretrain_runs_all_four_losses(lists, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    pre, down = lists
    out = tmp_path / "run"
    assert main(_args(pre, down, out)) == 0
    losses = json.loads((out / "summary.json").read_text())["final_losses"]
    assert set(losses) == {"loss", "rotation", "contrastive", "inpainting", "symmetry"}
    weighted = losses["rotation"] + losses["contrastive"] + losses["inpainting"] + 0.5 * losses["symmetry"]
    assert losses["loss"] == pytest.approx(weighted, rel=1e-5)
    # The held-out fold 2 is refused when it is in the pretraining list.
    assert main(_args(down, down, tmp_path / "leak")) == 2


def test_pretrain_passes_healthy_labels_the_loss_way_round(lists, monkeypatch):
    """Datalists say 1 = patient; the symmetry loss wants 1 = healthy, 0 = patient, -1 unknown."""
    from SymmetryAwareTraining.tasks import PretrainTask

    pre, down = lists
    config = apply_overrides(RunConfig(), [f"data.datalist={pre}", f"data.exclude_datalist={down}",
                                           "data.exclude_fold=2", "data.batch_size=3", "pretrain.block_size=4"])
    task = PretrainTask(config)
    seen = {}

    def spy(out1, out2, view1, view2, healthy):
        seen["healthy"] = healthy.tolist()
        assert view1.image.shape == view2.image.shape == (3, 1, 16, 16, 16)
        assert out1["rotation"].shape == (3, 4) and out2["rotation"].shape == (3, 4)
        return {"total": out1["rotation"].sum(), "rotation": out1["rotation"].sum()}

    task.criterion = spy
    batch = {"image": torch.randn(3, 1, 16, 16, 16), "counterpart": torch.randn(3, 1, 16, 16, 16),
             "status": torch.tensor([1, 0, -1])}
    losses = task.loss(TinyPretrainer(), batch)
    assert seen["healthy"] == [0, 1, -1] and set(losses) == {"loss", "rotation"}
    with pytest.raises(Exception, match="batch_size >= 2"):
        PretrainTask(apply_overrides(config, ["data.batch_size=1"]))


def test_init_weights_from_a_pretraining_checkpoint(tmp_path):
    """Fine-tuning starts from pretrained tensors: ``module.`` prefixes are stripped, tensors
    the new model lacks are ignored, and a file sharing nothing (or of other shapes) is refused."""
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareTraining.checkpoint import save_checkpoint
    from SymmetryAwareTraining.tasks import load_init_weights

    pretrained = TinyPretrainer()
    state = {f"module.{k}": v for k, v in pretrained.state_dict().items()}
    save_checkpoint(tmp_path / "pre.pt", {"model": state})

    class Downstream(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 8, 3, padding=1)  # shared with the pretrainer
            self.out = nn.Conv3d(8, 3, 1)  # new

    model = Downstream()
    load_init_weights(model, str(tmp_path / "pre.pt"))
    assert torch.equal(model.conv.weight, pretrained.conv.weight)

    save_checkpoint(tmp_path / "other.pt", {"model": {"unrelated.weight": torch.zeros(2)}})
    with pytest.raises(InputError, match="no tensor"):
        load_init_weights(Downstream(), str(tmp_path / "other.pt"))
    save_checkpoint(tmp_path / "shape.pt", {"model": {"conv.weight": torch.zeros(8, 2, 3, 3, 3)}})
    with pytest.raises(InputError, match="another shape"):
        load_init_weights(Downstream(), str(tmp_path / "shape.pt"))


def test_balanced_weights_equalise_the_encoder_gradient(lists):
    """Weights from the measured norms make every task's weighted encoder gradient the same
    size (total / n) on the batch they were measured on; bad norms are refused."""
    from SymmetryAwareCore.models.losses import balanced_weights
    from SymmetryAwareTraining.tasks import PretrainTask, pretrain_gradient_norms

    pre, down = lists
    config = apply_overrides(RunConfig(), [f"data.datalist={pre}", f"data.exclude_datalist={down}",
                                           "data.exclude_fold=2", "data.batch_size=3", "pretrain.block_size=4"])
    task = PretrainTask(config)
    torch.manual_seed(0)
    model = TinyPretrainer()
    # the tiny model's rotation and contrastive heads differ in scale, so the raw norms differ
    with torch.no_grad():
        model.rot.weight.mul_(20.0)
    batch = {"image": torch.randn(3, 1, 16, 16, 16), "counterpart": torch.randn(3, 1, 16, 16, 16),
             "status": torch.tensor([1, 0, 1])}
    torch.manual_seed(1)
    norms = pretrain_gradient_norms(model, task, [batch], prefix="conv.")
    assert set(norms) == {"rotation", "contrastive", "inpainting", "symmetry"}
    assert max(norms.values()) > 3 * min(norms.values())  # unbalanced to start with
    weights = balanced_weights(norms, total=1.0)
    for name, w in weights.items():
        assert w * norms[name] == pytest.approx(0.25)
    # The same views again (same seed): each weighted loss's gradient now has norm 1/4.
    from SymmetryAwareCore.models.losses import TASKS

    torch.manual_seed(1)
    losses = task.losses(model, batch, weighted=False)
    params = [p for n, p in model.named_parameters() if n.startswith("conv.")]
    for name in TASKS:
        grads = torch.autograd.grad(weights[name] * losses[name], params, retain_graph=True)
        assert float(torch.sqrt(sum((g ** 2).sum() for g in grads))) == pytest.approx(0.25, rel=1e-4)
    with pytest.raises(ValueError, match="positive"):
        balanced_weights({"rotation": 0.0})
    with pytest.raises(ValueError, match="tasks among"):
        balanced_weights({"rotatoin": 1.0})


def test_whole_scan_pretraining_balances_each_batch_and_trains(lists, tmp_path, monkeypatch):
    """pretrain.input=whole-scan: each item is a healthy and a patient scan, resized whole,
    with their exact left-right flips; with the contrastive task off one view is made; a
    frozen stage does not move while the rest trains."""
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareTraining.engine import collate
    from SymmetryAwareTraining.tasks import PretrainTask

    monkeypatch.syspath_prepend(str(HERE))
    pre, down = lists
    config = apply_overrides(RunConfig(), [f"data.datalist={pre}", f"data.exclude_datalist={down}",
                                           "data.exclude_fold=2", "data.batch_size=1", "data.roi_size=[16,16,16]",
                                           "data.align=false", "pretrain.input=whole-scan", "pretrain.block_size=4",
                                           "pretrain.contrastive_weight=0",
                                           "model.name=test_training_pretrain:TinyPretrainer",
                                           "model.kwargs={in_channels: 1}", "model.freeze=[conv.]"])
    task = PretrainTask(config)  # batch_size 1 item = 2 scans: the contrastive check does not refuse it
    dataset = task.train_dataset()
    assert len(dataset) == 2  # 2 healthy, 2 patient in folds 0-1
    batch = collate([dataset[(0, 0)], dataset[(0, 1)]])
    assert batch["image"].shape == (2, 2, 1, 16, 16, 16)
    assert batch["status"].tolist() == [[0, 1], [0, 1]]
    assert torch.equal(batch["counterpart"], torch.flip(batch["image"], dims=(3,)))
    model = task.build_model()
    assert not model.conv.weight.requires_grad and model.rot.weight.requires_grad
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    before = model.conv.weight.detach().clone(), model.proj.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = task.loss(model, batch)
    assert calls == [4]  # one view of 2 x 2 scans
    assert float(losses["contrastive"]) == 0.0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    optimizer.step()
    assert torch.equal(model.conv.weight, before[0]) and not torch.equal(model.proj.weight, before[1])
    with pytest.raises(InputError, match="model.freeze"):
        PretrainTask(apply_overrides(config, ["model.freeze=[nothing.]"])).build_model()
    only_healthy = tmp_path / "healthy.json"
    only_healthy.write_text(json.dumps({"training": [e for e in json.loads(pre.read_text())["training"]
                                                     if e["status"] == "healthy"]}))
    with pytest.raises(InputError, match="healthy AND patient"):
        PretrainTask(apply_overrides(config, [f"data.datalist={only_healthy}"])).train_dataset()
