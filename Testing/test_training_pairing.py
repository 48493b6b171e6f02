"""Mirror-pair training (docs/pairing.md): the counterpart's label, the task's loss, the
engine's count of supervised samples, the configuration checks; ``input`` is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from SymmetryAwareCore.errors import InputError
from SymmetryAwareTraining.config import RunConfig, apply_overrides, check_config, load_config
from SymmetryAwareTraining.crops import AugmentParams, paired_crop
from SymmetryAwareTraining.tasks import SegmentationTask

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "Training" / "configs"


def _coordinates(shape):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return np.stack(grids).astype(np.float32) + 1.0  # + 1: zero padding is recognisable


@pytest.mark.parametrize("params", [
    AugmentParams(),
    AugmentParams(flip_lr=True),
    AugmentParams(flip_lr=True, flip_y=True, rot90=1, scale=(0.9, 1.1, 1.0), shift=(0.1, 0.0, -0.2)),
], ids=["none", "flip_lr", "all"])
def test_counterpart_label_is_the_label_of_the_counterpart_voxels(params):
    shape, roi = (17, 13, 12), (8, 10, 10)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = ((x * 7 + y * 3 + z) % 5).astype(np.uint8)  # not mirror-symmetric
    volume = _coordinates(shape)
    for seed in range(4):
        with_cp = paired_crop(volume, roi, np.random.default_rng(seed), label=label, params=params, counterpart_label=True)
        plain = paired_crop(volume, roi, np.random.default_rng(seed), label=label, params=params)
        np.testing.assert_array_equal(with_cp["label"], plain["label"])  # the patch's label is unchanged
        np.testing.assert_array_equal(with_cp["counterpart"], plain["counterpart"])
        assert "label_counterpart" not in plain
        counterpart = with_cp["counterpart"].astype(np.float64)
        if params.scale:
            counterpart = (counterpart - np.reshape(params.shift, (-1, 1, 1, 1))) / np.reshape(params.scale, (-1, 1, 1, 1))
        q = np.rint(counterpart).astype(int) - 1  # the coordinates each counterpart voxel came from
        real = (q >= 0).all(axis=0)
        assert real.any()
        expected = (q[0] * 7 + q[1] * 3 + q[2]) % 5
        np.testing.assert_array_equal(with_cp["label_counterpart"][real], expected[real])


def _config(pairing=None):
    config = RunConfig()
    config.model.kwargs = {"in_channels": 1, "out_channels": 3, "feature_size": 12, "depths": [1, 1, 1, 1]}
    if pairing:
        config.model.kwargs["pairing"] = pairing
    return config


def _batch():
    g = torch.Generator().manual_seed(0)
    image, counterpart = torch.randn(1, 1, 64, 32, 32, generator=g), torch.randn(1, 1, 64, 32, 32, generator=g)
    label = (torch.rand(1, 3, 64, 32, 32, generator=g) < 0.1).float()
    label_cp = (torch.rand(1, 3, 64, 32, 32, generator=g) < 0.1).float()
    return {"image": image, "counterpart": counterpart, "label": label, "label_counterpart": label_cp}


def test_mirror_pair_loss_supervises_both_crops_and_input_loss_is_unchanged():
    batch = _batch()
    pair_task = SegmentationTask(_config("mirror-pair"))
    net = pair_task.build_model()
    assert net.pairing == "mirror-pair" and pair_task.supervised_per_item == 2
    losses = pair_task.loss(net, batch)
    with torch.no_grad():
        both = torch.cat([net(batch["image"], batch["counterpart"]), net(batch["counterpart"], batch["image"])])
        label = torch.cat([batch["label"], batch["label_counterpart"]])
        expected = pair_task.dice(both, label) + pair_task.bce(both, label)
    torch.testing.assert_close(losses["loss"].detach(), expected, atol=1e-5, rtol=1e-5)

    for config in (_config(), _config("input")):  # the default is the paper's pairing, as before
        task = SegmentationTask(config)
        model = task.build_model()
        model.load_state_dict(net.state_dict())
        assert model.pairing == "input" and task.supervised_per_item == 1
        losses = task.loss(model, {k: v for k, v in batch.items() if k != "label_counterpart"})
        with torch.no_grad():
            logits = model(batch["image"], batch["counterpart"])
            expected = task.dice(logits, batch["label"]) + task.bce(logits, batch["label"])
        torch.testing.assert_close(losses["loss"].detach(), expected, atol=1e-5, rtol=1e-5)


def test_engine_counts_supervised_samples(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    from test_training_engine import ToyTask

    from SymmetryAwareTraining.engine import train

    class PairToyTask(ToyTask):
        supervised_per_item = 2

    config = apply_overrides(RunConfig(), [f"train.output_dir={tmp_path / 'run'}", "train.steps=2", "train.accumulate=2",
                                           "data.batch_size=2", "train.device=cpu", "train.checkpoint_every=2",
                                           "data.roi_size=[8, 8, 8]", "model.name=ToyNet"])
    result = train(config, PairToyTask(config))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["supervised_samples_per_step"] == 2 * 2 * 2  # pairs x accumulation x 2 crops
    assert result.samples_per_second == pytest.approx(summary["samples_per_second_per_device"], rel=1e-3)


@pytest.mark.parametrize("overrides, words", [
    (["model.kwargs.pairing=both"], "pairing must be one of input, mirror-pair"),
    (["model.name=SASwinPretrainer", "model.kwargs.pairing=mirror-pair"], "SASwinUNETR and SASwinClassifier"),
])
def test_bad_pairing_is_a_config_error(overrides, words):
    config = apply_overrides(RunConfig(), ["data.roi_size=[64, 64, 64]", "model.kwargs.feature_size=12", *overrides])
    with pytest.raises(InputError, match=words):
        check_config(config)


def test_a_classifier_may_train_on_mirror_pairs():
    config = apply_overrides(RunConfig(), ["data.roi_size=[64, 64, 64]", "model.kwargs.feature_size=12",
                                           "model.name=SASwinClassifier", "model.kwargs.pairing=mirror-pair"])
    check_config(config)


def test_shipped_segmentation_configs_say_input():
    for name in ("finetune_seg_brats.yaml", "few_shot_seg.yaml"):
        assert load_config(CONFIGS / name).model.kwargs["pairing"] == "input"
    config = load_config(CONFIGS / "few_shot_seg.yaml", ["model.kwargs.pairing=mirror-pair"])
    check_config(config)
    assert SegmentationTask(config).supervised_per_item == 2
