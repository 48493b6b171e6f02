"""Validation during training, end to end: dataset layout -> datalist -> fine-tuning with
validation -> best checkpoint -> model card; the same scores on 1 and on 2 processes.

The network is SA-Swin UNETR at feature size 12 on 64^3 crops of 3 mm phantom brains
(64 x 64 x 63, one sliding window per case): a few CPU seconds per step or validated case.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from SymmetryAwareTraining.cli import main
from SymmetryAwareTraining.datalist import load_datalist

from test_training_import import phantom_cases, write_brats, write_msd

TINY = ["--set", "data.roi_size=[64,64,64]", "--set", "optim.warmup_steps=0", "--set", "data.num_workers=0",
        "--set", "model.kwargs={in_channels: 4, out_channels: 3, feature_size: 12, depths: [1, 1, 1, 1]}",
        "--set", "validation.overlap=0", "--set", "train.log_every=1"]


@pytest.fixture(scope="module")
def phantoms(mni_t1):
    return phantom_cases(mni_t1)


def _train_with_validation(source, tmp_path, capsys):
    datalist = tmp_path / "list.json"
    assert main(["datalist", str(source), "--output", str(datalist), "--folds", "2"]) == 0
    out = tmp_path / "run"
    args = ["finetune-seg", "--datalist", str(datalist), "--fold", "0", "--output-dir", str(out), "--device", "cpu",
            "--steps", "2", "--validate-every", "1", "--set", "validation.max_cases=1",
            "--set", "validation.metric=lesion_dice_mean", "--set", "train.checkpoint_every=1", *TINY]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "validation step 1: dice_mean" in err and "samples/s/device" in err and "samples/s per device" in err
    lines = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(x["cases"] == 1 for x in lines)
    assert all(0.0 <= x["lesion_dice_mean"] <= 1.0 and 0.0 <= x["ET_hd95"] <= 374 for x in lines)
    best = max(lines, key=lambda x: x["lesion_dice_mean"])  # ties: the first (an improvement must be strict)
    card = json.loads((out / "model.json").read_text())
    record = card["extra"]["training"]["checkpoint"]
    assert record["selected"] == "best" and record["metric"] == "lesion_dice_mean"
    assert record["step"] == best["step"] and "held-out fold 0" in record["why"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples_per_second_per_device"] > 0 and summary["best"]["step"] == best["step"]
    # The card holds exactly the weights of checkpoints/best.pt.
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    state = torch.load(out / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], state[k]) for k in state)
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "previous.pt").is_file()
    return [{k: v for k, v in x.items() if k != "seconds"} for x in lines]


@pytest.mark.slow
def test_brats_and_msd_layouts_train_to_the_same_validated_carded_model(tmp_path, phantoms, capsys):
    """The same phantoms in the BraTS 2021, BraTS 2023 and MSD layouts (other endings, ET 3,
    4D files in another channel order, other label values) become the same training data:
    datalist -> 2 steps with validation after each -> identical scores, best weights carded."""
    cases, affine = phantoms
    sources = {"brats2021": write_brats(tmp_path / "in21" / "BraTS2021", cases, affine, 2021),
               "brats2023": write_brats(tmp_path / "in23" / "BraTS2023", cases, affine, 2023),
               "msd": write_msd(tmp_path / "inmsd" / "Task01_BrainTumour", cases, affine)}
    scores = {name: _train_with_validation(source, source.parent, capsys) for name, source in sources.items()}
    assert scores["brats2023"] == scores["brats2021"]
    assert scores["msd"] == scores["brats2021"]


def _validate_in_process(rank, world, init_file, datalist, result_file):
    """A child of the 2-process test: one rank of a gloo group validating its share."""
    import torch.distributed as dist

    from SymmetryAwareTraining.distributed import DistEnv

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = _validate(datalist, DistEnv(rank, rank, world, torch.device("cpu"), "gloo"))
        if rank == 0:
            with open(result_file, "w") as handle:
                json.dump(metrics, handle)
    finally:
        dist.destroy_process_group()


def _validate(datalist, env):
    from SymmetryAwareTraining.config import RunConfig
    from SymmetryAwareTraining.tasks import SegmentationTask

    config = RunConfig()
    config.data.datalist, config.data.fold, config.data.roi_size = str(datalist), 0, [64, 64, 64]
    config.model.kwargs = {"in_channels": 4, "out_channels": 3, "feature_size": 12, "depths": [1, 1, 1, 1]}
    config.model.output_prior = 0.3  # an untrained net then predicts some tumour: non-trivial scores
    config.validation.overlap = 0.0
    task = SegmentationTask(config)
    torch.manual_seed(0)
    model = task.build_model()
    result = task.validate(model, env)
    return {"metrics": result.metrics, "cases": list(result.per_case)}


@pytest.mark.slow
def test_two_process_validation_gives_the_one_process_scores(tmp_path, phantoms):
    import torch.multiprocessing as mp

    from SymmetryAwareTraining.distributed import DistEnv

    cases, affine = phantoms
    source = write_brats(tmp_path / "b21", cases, affine, 2021)
    datalist = tmp_path / "list.json"
    assert main(["datalist", str(source), "--output", str(datalist), "--folds", "2"]) == 0
    assert len(load_datalist(datalist).split(0)[1]) == 2  # one case per rank

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the children's setting: identical float sums
    try:
        single = _validate(datalist, DistEnv())
    finally:
        torch.set_num_threads(threads)
    result = tmp_path / "two.json"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_validate_in_process, args=(2, str(tmp_path / "rendezvous"), str(datalist), str(result)),
                       nprocs=2, start_method="spawn")
    double = json.loads(result.read_text())
    assert double["cases"] == single["cases"] and len(single["cases"]) == 2
    for name, value in single["metrics"].items():
        assert double["metrics"][name] == pytest.approx(value, abs=1e-9, nan_ok=True), name
    assert 0.0 < single["metrics"]["WT_dice"] < 1.0  # a real score, not a convention value


def test_card_of_brats_channels_matches_both_brats_spellings(tmp_path):
    """A model trained from an imported BraTS list segments 2021 and 2023 file names alike."""
    import fnmatch

    from SymmetryAwareTraining.config import RunConfig
    from SymmetryAwareTraining.modelcard import write_model_card
    from SymmetryAwareTraining.tasks import SegmentationTask

    (tmp_path / "list.json").write_text(json.dumps({"channels": ["t1", "t1ce", "t2", "flair"],
                                                    "training": [{"image": ["a.nii.gz"]}]}))
    config = RunConfig()
    config.data.datalist = str(tmp_path / "list.json")
    config.data.spacing = [3.0, 3.0, 3.0]  # the list names no files to read it from
    config.model.kwargs = {"in_channels": 4, "out_channels": 3, "feature_size": 12, "depths": [1, 1, 1, 1]}
    task = SegmentationTask(config)
    card = json.loads(write_model_card(task.build_model(), task, config, tmp_path / "model").read_text())
    patterns = {c["name"]: c["patterns"] for c in card["channels"]}
    for name, files in {"t1ce": ["BraTS2021_1_t1ce.nii.gz", "BraTS-GLI-1-000-t1c.nii.gz"],
                        "flair": ["BraTS2021_1_flair.nii.gz", "BraTS-GLI-1-000-t2f.nii.gz"]}.items():
        for f in files:
            assert any(fnmatch.fnmatch(f.lower(), p) for p in patterns[name]), (name, f)
