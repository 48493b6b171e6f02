"""Run configuration: YAML + --set overrides, typed checks, the saved copy reloads identically."""

from __future__ import annotations

from pathlib import Path

import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareTraining.config import RunConfig, apply_overrides, config_to_dict, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "Training" / "configs"


def test_yaml_then_overrides_then_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  roi_size: [64, 64, 64]\n  fold: 2\noptim:\n  lr: 3.0e-4\n"
                    "model:\n  name: SASwinUNETR\n  kwargs: {in_channels: 4, out_channels: 3, feature_size: 12}\n")
    config = load_config(path, ["optim.lr=1e-3", "train.steps=7", "data.roi_size=[32, 48, 64]",
                                "model.kwargs.use_saca=false", "train.deterministic=yes"])
    assert config.data.fold == 2  # from YAML, untouched
    assert config.optim.lr == pytest.approx(1e-3)  # override beats YAML
    assert config.train.steps == 7 and config.train.deterministic is True
    assert config.data.roi_size == [32, 48, 64]
    assert config.model.kwargs == {"in_channels": 4, "out_channels": 3, "feature_size": 12, "use_saca": False}
    assert config.train.precision == RunConfig().train.precision  # default kept

    saved = save_config(config, tmp_path / "out" / "config.yaml")
    again = load_config(saved)
    assert config_to_dict(again) == config_to_dict(config)


@pytest.mark.parametrize("override, words", [
    ("train.stepz=3", "train.stepz"),
    ("nosection.key=1", "nosection"),
    ("train.steps=many", "train.steps"),
    ("optim.lr=[1, 2]", "optim.lr"),
    ("train.steps", "section.key=value"),
    ("train.deterministic=maybe", "train.deterministic"),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(InputError, match=words.replace(".", r"\.")):
        apply_overrides(RunConfig(), [override])


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(InputError, match="bad.yaml"):
        load_config(path)
    path.write_text("train:\n  stpes: 3\n")
    with pytest.raises(InputError, match="train.stpes"):
        load_config(path)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.train.steps > 0


def test_bias_correction_goes_from_the_config_into_the_runs_preprocessing(tmp_path):
    """``data.bias_correction: n4``: the run's one Preprocessing (what every training case is
    prepared with, and what its model card records) asks for N4, so inference corrects as
    training did; refused for CT and for an unknown method, naming the key."""
    from SymmetryAwareCore.preprocessing.cache import cache_key
    from SymmetryAwareTraining.config import check_config
    from SymmetryAwareTraining.tasks import run_preprocessing

    base = ["data.spacing=[3, 3, 3]", "data.roi_size=[64, 64, 64]", "data.channels=[t1, flair]"]
    plain = run_preprocessing(apply_overrides(RunConfig(), base))
    n4 = run_preprocessing(apply_overrides(RunConfig(), base + ["data.bias_correction=n4"]))
    assert plain.bias_correction == "none" and n4.bias_correction == "n4" and n4.to_card()["bias_correction"] == "n4"
    assert n4 == plain.replace(bias_correction="n4")
    files = [tmp_path / "a_t1.nii.gz", tmp_path / "a_flair.nii.gz"]
    for f in files:
        f.write_bytes(b"x")
    assert cache_key(files, None, ["t1", "flair"], n4) != cache_key(files, None, ["t1", "flair"], plain)  # never mixed
    for bad in (["data.bias_correction=n3"], ["data.bias_correction=n4", "data.modality=ct"]):
        with pytest.raises(InputError, match=r"data\.bias_correction"):
            check_config(apply_overrides(RunConfig(), base + bad))
