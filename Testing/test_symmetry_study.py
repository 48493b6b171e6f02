"""The symmetry study's fixed parts (Training/scripts/symmetry_study.py): plan, grid, scoring
window, paired bootstrap and the decision rule written in docs/symmetry_study.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch

from conftest import import_training_script


@pytest.fixture(scope="module")
def study():
    return import_training_script("symmetry_study")


def test_plan_holds_out_the_designed_groups(study):
    plan = study._plan(1500)
    held = [p for p in plan if p["fold"] == 0]
    train = [p for p in plan if p["fold"] != 0]
    assert len(train) == study.TRAIN_CASES and {p["fold"] for p in train} == {1, 2, 3, 4}
    assert len(held) == sum(count for _, _, count in study.HELD_OUT) >= 50
    for scenario, contrast, count in study.HELD_OUT:
        assert sum(1 for p in held if p["scenario"] == scenario and p["contrast"] == contrast) == count
    assert len({p["seed"] for p in plan}) == len(plan)  # every case its own subject
    assert study._plan(1500) == plan


def test_grid_is_seed_major_and_limits_input_pairing(study):
    grid = study.grid(list(study.ARMS), [8, 32], [0, 1, 2], [0])
    assert [seed for _, _, seed in grid] == sorted(seed for _, _, seed in grid)
    assert {seed for arm, _, seed in grid if arm == "sa_swin_input"} == {0}
    assert sum(1 for arm, _, _ in grid if arm == "swin_unetr") == 6


def test_scoring_window_is_fixed_by_the_case_name_and_holds_lesion(study):
    from SymmetryAwareCore.geometry.mirror import flip_lr

    rng = np.random.default_rng(0)
    volume = rng.normal(size=(2, 90, 80, 70)).astype(np.float32)
    label = np.zeros((90, 80, 70), np.uint8)
    label[10:16, 30:36, 20:26] = 2
    a = study.score_window({"name": "study_0040"}, volume, label)
    b = study.score_window({"name": "study_0040"}, volume, label)
    c = study.score_window({"name": "study_0041"}, volume, label)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["counterpart"], b["counterpart"])
    assert a["image"].shape == (2, 64, 64, 64) and (a["label"] > 0).any()
    assert not np.array_equal(a["start"], c["start"]) or not np.array_equal(a["image"], c["image"])
    # The counterpart is the crop of the flipped volume at the same box: voxel i of it is the
    # mirror of voxel i of the window (no padding here: the volume is larger than the window).
    x0, y0, z0 = (int(v) for v in a["start"])
    assert np.array_equal(a["image"], volume[:, x0:x0 + 64, y0:y0 + 64, z0:z0 + 64])
    flipped = flip_lr(volume, spatial_start=1)
    assert np.array_equal(a["counterpart"], flipped[:, x0:x0 + 64, y0:y0 + 64, z0:z0 + 64])


def test_paired_bootstrap(study):
    mean, low, high = study.paired_bootstrap(np.full(40, 0.05))
    assert mean == pytest.approx(0.05) and low == pytest.approx(0.05) and high == pytest.approx(0.05)
    noise = np.random.default_rng(1).normal(0, 0.1, 40)
    mean, low, high = study.paired_bootstrap(noise - noise.mean())
    assert low < 0 < high and abs(mean) < 1e-12
    shifted = study.paired_bootstrap(noise - noise.mean() + 0.2)
    assert shifted[1] > 0
    assert study.paired_bootstrap(noise) == study.paired_bootstrap(noise)


@pytest.mark.parametrize("primary, expected", [
    ({8: {"low": 0.01, "high": 0.05, "per_seed": [0.02, 0.03, 0.01]}}, "symmetry helps"),
    ({8: {"low": 0.01, "high": 0.05, "per_seed": [0.02, -0.01, 0.01]}}, "no measurable difference"),
    ({8: {"low": -0.05, "high": -0.01, "per_seed": [-0.02, -0.03, -0.01]}}, "symmetry hurts"),
    ({8: {"low": -0.02, "high": 0.03, "per_seed": [0.02, 0.03, 0.01]}}, "no measurable difference"),
    ({8: {"low": 0.01, "high": 0.05, "per_seed": [0.02, 0.03, 0.01]},
      32: {"low": -0.05, "high": -0.01, "per_seed": [-0.02, -0.03, -0.01]}}, "no measurable difference"),
])
def test_decision_rule(study, primary, expected):
    assert study.verdict(primary) == expected


def test_amendment_questions_compare_arms_that_exist_and_use_the_same_rule(study):
    for question, arm, reference, helps, hurts in study.QUESTIONS:
        assert arm in study.ARMS and reference in study.ARMS and arm != reference
        above = {8: {"low": 0.01, "high": 0.05, "per_seed": [0.02, 0.03, 0.01]}}
        below = {8: {"low": -0.05, "high": -0.01, "per_seed": [-0.02, -0.03, -0.01]}}
        assert study.verdict(above, helps, hurts) == helps
        assert study.verdict(below, helps, hurts) == hurts
    for arm, reference, which in study.SECONDARY:
        assert arm in study.ARMS and reference in study.ARMS and which in ("all", "first")
    # The control differs from the mirror-pair arm only by SACA, and from Swin UNETR only by its crops.
    control = dict(item.split("=") for item in study.ARMS["swin_unetr_pair_crops"])
    mirror = dict(item.split("=") for item in study.ARMS["sa_swin_mirror_pair"])
    swin = dict(item.split("=") for item in study.ARMS["swin_unetr"])
    assert control["model.kwargs.use_saca"] == "false" == swin["model.kwargs.use_saca"]
    assert {k: v for k, v in control.items() if k != "model.kwargs.use_saca"} == mirror
    # The healthy-crop control differs from Swin UNETR only by how often a crop is lesion-centred:
    # as often as the control's two crops are on average (one of two, at the config's fraction).
    healthy = dict(item.split("=") for item in study.ARMS["swin_unetr_fg45"])
    assert {k: v for k, v in healthy.items() if k != "data.pos_fraction"} == swin
    designed = yaml.safe_load(study.CONFIG.read_text())["data"]["pos_fraction"]
    assert float(healthy["data.pos_fraction"]) == pytest.approx(designed / 2) and "data.pos_fraction" not in swin


class _MaskModel(torch.nn.Module):
    """Marks every region where image channel 0 is above 0.5: a known prediction whose place
    the engine must keep (the head reads only its own crop, so both pairings give the same)."""

    def __init__(self, pairing):
        super().__init__()
        self.pairing = pairing

    def forward_features(self, x):
        return [x]

    def forward_head(self, features, features_counterpart, return_attention=False):
        # Output channels TC, WT, ET from image channels 1, 0 and 2: a channel mix-up shows.
        return 20.0 * (features[0][:, [1, 0, 2]] - 0.5)


@pytest.mark.parametrize("pairing", ["input", "mirror-pair"])
def test_scan_scoring_counts_the_whole_box_on_the_right_side(study, pairing):
    # Fifth amendment: Dice over the whole box and the WT false-positive volume. The lesion and
    # a false-positive block sit on the left (low x) only: a result flipped or shifted by the
    # engine would miss the lesion.
    shape = (96, 64, 64)
    label = np.zeros(shape, np.uint8)
    label[10:20, 20:30, 20:30] = 2  # 1000 voxels of oedema: WT only
    mark = label > 0
    mark[30:40, 40:50, 40:50] = True  # 1000 voxels marked outside the lesion
    tc = np.zeros(shape, bool)
    tc[60:70, 20:30, 20:30] = True  # marked as core where there is none
    volume = np.stack([mark, tc, np.zeros(shape, bool)]).astype(np.float32)
    scores = study.score_scan(_MaskModel(pairing), volume, label, (1.5, 1.5, 1.5))
    assert scores["WT"] == pytest.approx(2 * 1000 / (1000 + 2000))
    assert scores["TC"] == 0.0  # marked, but no core in the truth
    assert scores["ET"] == 1.0  # nothing marked, nothing true (the BraTS rule)
    assert scores["WT_false_positive_ml"] == pytest.approx(1000 * 1.5 ** 3 / 1000)
    flipped = study.score_scan(_MaskModel(pairing), np.ascontiguousarray(volume[:, ::-1]), label, (1.5, 1.5, 1.5))
    assert flipped["WT"] == 0.0


def test_run_names_carry_their_label_size(study):
    assert study.size_of(study.run_name("swin_unetr_pair_crops", 32, 2)) == 32
    assert study.size_of(study.run_name("sa_swin_mirror_pair", 8, 0)) == 8
    assert study.seed_of(study.run_name("swin_unetr_pair_crops", 32, 2)) == 2


def test_scan_scores_resume_from_the_cases_done_and_leave_a_whole_cache(study, tmp_path):
    from SymmetryAwareCore.models import SASwinUNETR
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, save_model

    card = save_model(SASwinUNETR(2, 3, feature_size=12, depths=(1, 1, 1, 1)), tmp_path / "model.safetensors",
                      ModelCard(channels=[InputChannel("a"), InputChannel("b")], modality="mri"))
    assert card == tmp_path / "model.json"
    done = {"WT": 0.25, "TC": 0.5, "ET": 0.75, "WT_false_positive_ml": 1.0}
    (tmp_path / "study_scan_scores.partial.json").write_text(json.dumps({"first": done}))
    shape = (64, 64, 64)
    label = np.zeros(shape, np.uint8)
    label[10:20, 20:30, 20:30] = 2
    loaded = []

    def load(k):
        loaded.append(k)
        return np.zeros((2,) + shape, np.float32), label

    scores = study.score_scan_run(tmp_path, (["first", "second"], load, (1.5, 1.5, 1.5)))
    assert loaded == [1]  # the case already scored is not segmented again
    assert scores["first"] == done and set(scores["second"]) == set(done)
    assert not (tmp_path / "study_scan_scores.partial.json").exists()
    assert json.loads((tmp_path / "study_scan_scores.json").read_text()) == scores
    assert study.score_scan_run(tmp_path, (["first", "second"], None, (1.5,) * 3)) == scores  # the cache


def test_a_cache_of_the_primary_set_grows_to_every_case_without_rescoring(study, tmp_path):
    """Sixth amendment: the primary set is scored first; a later run over every case adds the rest."""
    from SymmetryAwareCore.models import SASwinUNETR
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, save_model

    save_model(SASwinUNETR(2, 3, feature_size=12, depths=(1, 1, 1, 1)), tmp_path / "model.safetensors",
               ModelCard(channels=[InputChannel("a"), InputChannel("b")], modality="mri"))
    done = {"WT": 0.25, "TC": 0.5, "ET": 0.75, "WT_false_positive_ml": 1.0}
    (tmp_path / "study_scan_scores.json").write_text(json.dumps({"primary_case": done}))
    loaded = []

    def load(k):
        loaded.append(k)
        return np.zeros((2, 64, 64, 64), np.float32), np.zeros((64, 64, 64), np.uint8)

    scores = study.score_scan_run(tmp_path, (["other_case", "primary_case"], load, (1.5,) * 3))
    assert loaded == [0]
    assert scores["primary_case"] == done and set(scores["other_case"]) == set(done)
    assert json.loads((tmp_path / "study_scan_scores.json").read_text()) == scores
    # Asking for a subset of what is cached segments nothing.
    assert study.score_scan_run(tmp_path, (["primary_case"], None, (1.5,) * 3)) == scores


def test_primary_set_is_the_rules_unilateral_low_contrast_groups(study):
    entries = [{"scenario": "unilateral", "lesion_contrast": c} for c in (1.0, 0.5, 0.3)]
    entries.append({"scenario": "bilateral", "lesion_contrast": 0.5})
    groups = [study.case_group(e) for e in entries]
    assert groups == ["unilateral c1", "unilateral c0.5", "unilateral c0.3", "bilateral c0.5"]
    assert [g in study.PRIMARY_GROUPS for g in groups] == [False, True, True, False]
    with pytest.raises(ValueError, match="cases must be one of"):
        study.report(Path("unused.json"), Path("unused"), "", [32], [0], cases="some")


def _fake_runs(study, third_group: str, shifts, seed: int):
    """Per-case scores of runs at size 32, seeds 0-2: each arm's WT is a common per-case base
    plus the arm's shift (and noise of SD 0.002); 24 cases, two thirds in the primary groups."""
    group_of = {f"case{k:02d}": g for k, g in enumerate(["unilateral c0.5", "unilateral c0.3", third_group] * 8)}
    rng = np.random.default_rng(seed)
    base = {n: rng.uniform(0.3, 0.7) for n in group_of}
    runs = {}
    for run_seed in (0, 1, 2):
        for arm, shift in shifts.items():
            scores = {n: {"WT": base[n] + shift + rng.normal(0, 0.002), "TC": 0.5, "ET": 0.4} for n in group_of}
            runs[study.run_name(arm, 32, run_seed)] = {"scores": scores, "seconds": 60.0, "steps": 150}
    return group_of, runs


def test_a_report_of_an_amendments_arms_answers_its_question_and_names_what_is_missing(study):
    # The eighth amendment's runs: Swin UNETR and the SACA-off control only, three seeds, size 32.
    group_of, runs = _fake_runs(study, "bilateral c0.5", {"swin_unetr": 0.0, "swin_unetr_pair_crops": 0.05}, seed=0)
    results = study.summarise(runs, group_of, [32], [0, 1, 2], cases="primary")  # the crops help by 0.05 WT

    assert results["primary"] == {}
    assert results["verdict"] == ("incomplete: sa_swin_mirror_pair or swin_unetr lacks a run at size 32, "
                                  "seeds 0, 1, 2")
    answers = {q["question"]: q for q in results["questions"]}
    crops = answers["the crops alone"]
    assert crops["answer"] == "the mirror-pair crops help" and crops["cases"] == 16  # the primary groups only
    assert crops["by_size"][32]["difference"] == pytest.approx(0.05, abs=0.003)
    assert crops["by_size"][32]["low"] > 0.04 and len(crops["by_size"][32]["per_seed"]) == 3
    assert answers["SACA given the crops"]["answer"].startswith("incomplete: sa_swin_mirror_pair or swin_unetr_pair_crops")
    assert {(r["arm"], r["reference"]) for r in results["secondary"]} == {("swin_unetr_pair_crops", "swin_unetr")}

    lines = study.markdown(results)
    assert not any(line.startswith("| labelled | cases | seeds | Swin UNETR") for line in lines)  # no empty table
    assert any("lacks a run at size 32" in line for line in lines)
    assert any(line.startswith("| the crops alone | 32 | 16 | 3 |") and "the mirror-pair crops help" in line
               for line in lines)


def test_the_ninth_amendments_questions_split_the_crops_into_placement_and_lesion_share(study):
    # Three arms, three seeds: fewer lesion-centred crops add 0.02 WT, the mirror placement 0.03 more.
    group_of, runs = _fake_runs(study, "midline c0.5",
                                {"swin_unetr": 0.0, "swin_unetr_fg45": 0.02, "swin_unetr_pair_crops": 0.05}, seed=1)
    results = study.summarise(runs, group_of, [32], [0, 1, 2], cases="primary")
    answers = {q["question"]: q for q in results["questions"]}
    placement = answers["mirror placement given the lesion share"]
    share = answers["the lesion share alone"]
    assert placement["answer"] == "the mirror placement helps" and share["answer"] == "fewer lesion-centred crops help"
    assert placement["by_size"][32]["difference"] == pytest.approx(0.03, abs=0.003)
    assert share["by_size"][32]["difference"] == pytest.approx(0.02, abs=0.003)
    # The two parts add up to the crops alone, case for case.
    crops = answers["the crops alone"]["by_size"][32]["difference"]
    assert placement["by_size"][32]["difference"] + share["by_size"][32]["difference"] == pytest.approx(crops, abs=1e-9)
    pairs = {(r["arm"], r["reference"]) for r in results["secondary"]}
    assert {("swin_unetr_pair_crops", "swin_unetr_fg45"), ("swin_unetr_fg45", "swin_unetr")} <= pairs
    assert any(line.startswith("| mirror placement given the lesion share | 32 | 16 | 3 |") for line in study.markdown(results))


def test_crop_exposure_counts_every_supervised_crop_and_its_whole_tumour(study):
    # Two cases, regions (3, 4, 4, 4): case 0's crop is 1/8 WT and its counterpart healthy; case 1 holds none.
    def regions(wt_voxels):
        label = torch.zeros(3, 4, 4, 4)
        label[1].view(-1)[:wt_voxels] = 1.0
        label[0].view(-1)[:64] = 1.0  # TC everywhere: a channel mix-up would show
        return label

    class Pairs:
        def __len__(self):
            return 2

        def __getitem__(self, key):
            epoch, index = key
            item = {"label": regions(8 if index == 0 else 0)}
            item["label_counterpart"] = regions(0)
            return item

    class Single(Pairs):
        def __getitem__(self, key):
            return {"label": regions(8 if key[1] == 0 else 0)}

    paired = study.exposure(Pairs(), epochs=3)
    assert paired == {"crops": 12, "with_lesion": pytest.approx(3 / 12), "lesion_fraction": pytest.approx(3 * 0.125 / 12),
                      "counterparts": {"crops": 6, "with_lesion": 0.0, "lesion_fraction": 0.0}}
    single = study.exposure(Single(), epochs=3)
    assert single == {"crops": 6, "with_lesion": pytest.approx(0.5), "lesion_fraction": pytest.approx(0.0625),
                      "counterparts": None}


@pytest.mark.parametrize("command", [["crops"], ["prepare"], ["train", "--output", "unused"],
                                     ["report", "--output", "unused"]])
def test_a_missing_datalist_is_one_line_and_exit_2_before_any_work(study, command, tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert study.main(command + ["--datalist", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: datalist not found (make it with the 'data' command)"]
    assert list(tmp_path.iterdir()) == [] and not Path("unused").exists()


def test_an_unknown_arm_is_refused_by_name(study, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        study.main(["crops", "--datalist", str(tmp_path / "d.json"), "--arms", "swin_unetr_fg99"])
    assert stop.value.code == 2 and "swin_unetr_fg99" in capsys.readouterr().err


def test_the_n4_design_recalibrates_contrasts_and_corrects_every_run(study, tmp_path):
    # Eleventh amendment: a second design with its own groups, seed and preprocessing.
    design = study.DESIGNS["n4"]
    plan = study._plan(design.seed, design)
    held = [p for p in plan if p["fold"] == 0]
    assert len(held) == 76 and {p["contrast"] for p in plan if p["fold"] != 0} == {1.0, 0.15, 0.1}
    for scenario, contrast, count in design.held_out:
        assert sum(1 for p in held if p["scenario"] == scenario and p["contrast"] == contrast) == count
    assert not {p["seed"] for p in plan} & {p["seed"] for p in study._plan(study.DESIGNS["biased"].seed)}
    groups = {study.case_group({"scenario": s, "lesion_contrast": c}) for s, c, _ in design.held_out}
    assert set(design.primary_groups) < groups and "unilateral c1" not in design.primary_groups

    # The datalist names its design; runs and preparation take the design's settings from it.
    pool = [{"name": f"c{k}", "fold": 1 + k % 4} for k in range(32)]
    n4 = tmp_path / "n4.json"
    n4.write_text(json.dumps({"design": "n4", "training": pool}))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"training": pool}))  # made before designs had names: the first one
    assert "data.bias_correction=n4" in study.run_overrides(n4, "swin_unetr", 8, 0, 150, "")
    assert not any("bias_correction" in o for o in study.run_overrides(old, "swin_unetr", 8, 0, 150, ""))
    assert study._config(n4, "").data.bias_correction == "n4"
    assert study._config(old, "").data.bias_correction == "none"
    assert study.design_of(old) is study.DESIGNS["biased"]
    assert study.DESIGNS["n4"].bias_correction == "n4" and study.DESIGNS["biased"].bias_correction == "none"


def test_an_unknown_design_is_one_line_and_exit_2(study, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"design": "sharpened", "training": []}))
    assert study.main(["train", "--datalist", str(bad), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "sharpened" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_primary_set_follows_the_design(study):
    group_of, runs = _fake_runs(study, "bilateral c0.5", {"swin_unetr": 0.0, "sa_swin_mirror_pair": -0.03}, seed=2)
    renamed = {"unilateral c0.5": "unilateral c0.15", "unilateral c0.3": "unilateral c0.1"}
    group_of = {n: renamed.get(g, g) for n, g in group_of.items()}
    results = study.summarise(runs, group_of, [32], [0, 1, 2], primary_groups=study.DESIGNS["n4"].primary_groups)
    assert results["primary"][32]["cases"] == 16 and results["verdict"] == "symmetry hurts"
    assert "unilateral c0.15 and unilateral c0.1" in study.markdown(results)[2]


def test_window_baselines_rank_a_bright_lesion_and_its_mirror_difference(study):
    # Two windows (channels t1, flair): a lesion brighter in FLAIR on one side only, and the same
    # lesion mirrored into the counterpart too (bilateral): intensity finds both, the mirror
    # difference only the one-sided lesion.
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, (2, 16, 16, 16)).astype(np.float32)
    image[:, :2] = 0.0  # outside the head: left out
    label = np.zeros((16, 16, 16), np.uint8)
    label[6:10, 6:10, 6:10] = 2
    bright = image.copy()
    bright[1][label > 0] += 6.0
    one_sided = {"image": bright, "counterpart": image, "label": label}
    both = {"image": bright, "counterpart": bright, "label": label}
    healthy = {"image": image, "counterpart": image, "label": np.zeros_like(label)}
    out = study.window_baselines({"a": one_sided, "b": both, "c": healthy}, ["t1", "flair"])
    assert out["a"]["intensity"] > 0.99 and out["a"]["mirror"] > 0.99
    assert out["b"]["intensity"] > 0.99 and out["b"]["mirror"] < 0.75
    assert np.isnan(out["c"]["intensity"])
    rows = study.summarise_baselines(out, {"a": "unilateral c0.1", "b": "bilateral c0.15", "c": "unilateral c0.1"})
    assert rows["unilateral c0.1"]["windows"] == 1 and rows["all held-out"]["windows"] == 2
    assert rows["all held-out"]["mirror"] == pytest.approx((out["a"]["mirror"] + out["b"]["mirror"]) / 2)
    lines = study.markdown({"primary": {}, "verdict": "x", "secondary": [], "runs": {}, "baselines": rows})
    assert "| unilateral c0.1 | 1 |" in "\n".join(lines)


def test_a_run_of_another_design_is_refused_before_it_is_scored_or_skipped(study, tmp_path):
    import yaml

    from SymmetryAwareCore.errors import InputError

    folder = tmp_path / "study15n4"
    folder.mkdir()
    n4 = folder / "datalist.json"
    n4.write_text(json.dumps({"design": "n4", "training": []}))
    run = tmp_path / "runs" / study.run_name("swin_unetr", 8, 0)
    run.mkdir(parents=True)
    study.check_run(run, n4)  # nothing trained yet: fine
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"datalist": "datasets/study15/datalist.json",
                                                              "bias_correction": "none"}}))
    with pytest.raises(InputError, match="trained on datasets/study15/datalist.json"):
        study.check_run(run, n4)
    (run / "model.json").write_text("{}")
    assert study.main(["train", "--datalist", str(n4), "--output", str(tmp_path / "runs"), "--sizes", "8",
                       "--arms", "swin_unetr", "--seeds", "0"]) == 2  # not skipped as finished
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"datalist": "elsewhere/study15n4/datalist.json",
                                                              "bias_correction": "n4"}}))
    study.check_run(run, n4)  # the same list, reached by another path


def test_data_refuses_a_folder_made_for_another_design(study, tmp_path, capsys):
    (tmp_path / "datalist.json").write_text(json.dumps({"seed": 1500, "training": []}))  # the first design's
    assert study.main(["data", "--design", "n4", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "design 'biased', seed 1500" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datalist.json"]  # nothing made


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_malformed_datalist_is_one_line(study, tmp_path, capsys, text):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert study.main(["report", "--datalist", str(bad), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_report_scores_only_the_arms_asked_for(study, tmp_path):
    import yaml

    from SymmetryAwareCore.errors import InputError

    assert study.arm_of(study.run_name("swin_unetr_mirror_channels", 16, 2)) == "swin_unetr_mirror_channels"
    folder = tmp_path / "study15n4"
    folder.mkdir()
    n4 = folder / "datalist.json"
    # One training case and no held-out one: nothing to score, only the runs to read.
    n4.write_text(json.dumps({"design": "n4", "channels": ["t1", "t1ce", "t2", "flair"], "training": [{"name": "x", "image": [f"x_{c}.nii.gz" for c in ("t1", "t1ce", "t2", "flair")],
                                                              "label": "x_label.nii.gz", "fold": 1}]}))
    # A finished run that would be refused (another design's) shows which runs the report reads.
    run = tmp_path / "runs" / study.run_name("swin_unetr_pair_crops", 8, 0)
    run.mkdir(parents=True)
    (run / "model.json").write_text("{}")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"datalist": "datasets/study15/datalist.json",
                                                              "bias_correction": "none"}}))
    with pytest.raises(InputError, match="trained on datasets/study15/datalist.json"):
        study.report(n4, tmp_path / "runs", "", [8], [0], workers=1)
    results = study.report(n4, tmp_path / "runs", "", [8], [0], workers=1,
                           arms=["swin_unetr", "swin_unetr_mirror_channels"])
    assert results["runs"] == {}


def test_compare_budgets_pairs_each_arm_with_its_own_shorter_runs(study):
    """Sixteenth amendment: the longer runs minus the same arm's shorter runs, seed by seed."""
    group_of = {"a": "unilateral c0.1", "b": "unilateral c0.1", "c": "bilateral c0.15"}

    def runs(arm, wt_by_seed):
        return {study.run_name(arm, 8, seed): {n: {"WT": wt + (0.1 if n == "c" else 0.0), "TC": 0.5, "ET": 0.5}
                                              for n in group_of}
                for seed, wt in wt_by_seed.items()}

    longer = {**runs("swin_unetr", {0: 0.8, 1: 0.6}), **runs("swin_unetr_mirror_channels", {0: 0.7, 1: 0.7})}
    shorter = {**runs("swin_unetr", {0: 0.5, 1: 0.7}), **runs("swin_unetr_mirror_channels", {0: 0.7})}
    rows = study.compare_budgets(longer, shorter, group_of, ["swin_unetr", "swin_unetr_mirror_channels"], 8,
                                 [0, 1], ["unilateral c0.1"])
    # The channel arm lacks its seed-1 shorter run: left out, not compared on one seed.
    assert {r["arm"] for r in rows} == {"swin_unetr"}
    wt = {r["set"]: r for r in rows if r["region"] == "WT"}
    assert set(wt) == {"all held-out", "primary", "unilateral c0.1", "bilateral c0.15"}
    assert wt["primary"]["cases"] == 2 and wt["all held-out"]["cases"] == 3
    assert wt["primary"]["per_seed"] == pytest.approx([0.3, -0.1])
    assert wt["primary"]["difference"] == pytest.approx(0.1)
    assert wt["bilateral c0.15"]["longer"] == pytest.approx(0.8) and wt["bilateral c0.15"]["shorter"] == pytest.approx(0.7)
    assert all(r["difference"] == pytest.approx(0.0) for r in rows if r["region"] != "WT")


def test_still_falling_compares_window_means_not_points(study):
    falling = {k: 1.0 - k / 400 for k in range(10, 310, 10)}
    assert study.still_falling(falling) is True
    # The last point is below the point 50 steps before, but the two windows' means are equal.
    flat = {k: v for k, v in zip(range(10, 310, 10), [0.5] * 20 + [0.25, 0.5, 0.375, 0.125, 0.25,
                                                                  0.5, 0.375, 0.25, 0.25, 0.125])}
    assert flat[300] < flat[250] and study.still_falling(flat) is False
    assert study.still_falling({**falling, 280: float("nan")}) is None  # diverged: not read as flat
    assert study.still_falling({}) is None and study.still_falling({10: 1.0}) is None


def _fake_run(study, folder, datalist, steps, wt=None, losses=()):
    from torch.utils.tensorboard import SummaryWriter

    run = folder / study.run_name("swin_unetr", 8, 0)
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.json").write_text("{}")
    (run / "summary.json").write_text(json.dumps({"steps": steps}))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"datalist": str(datalist), "bias_correction": "n4"}}))
    if wt is not None:
        (run / "study_scores.json").write_text(json.dumps({"study_0000": {"WT": wt, "TC": 0.5, "ET": 0.25}}))
    if losses:
        with SummaryWriter(str(run / "tensorboard")) as writer:
            for step, value in losses:
                writer.add_scalar("train/loss", value, step)
    return run


def test_budgets_reads_both_folders_and_refuses_mistakes_with_one_line(study, tmp_path, capsys):
    datalist = tmp_path / "study15n4" / "datalist.json"
    datalist.parent.mkdir()
    entry = {"fold": 0, "scenario": "unilateral", "lesion_contrast": 0.1, "image": ["t1.nii.gz"], "label": "seg.nii.gz"}
    datalist.write_text(json.dumps({"design": "n4", "training": [{"name": "study_0000", **entry}]}))
    longer, shorter = tmp_path / "long", tmp_path / "short"
    args = ["budgets", "--datalist", str(datalist), "--output", str(longer), "--reference", str(shorter),
            "--seeds", "0", "--arms", "swin_unetr"]

    def refused(fragment):
        code, err = study.main(args), capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and fragment in err and "\n" not in err, err

    _fake_run(study, shorter, datalist, 150)
    refused("no finished run")  # the longer runs are not trained yet
    _fake_run(study, longer, datalist, 300)
    refused("run has no window scores")
    _fake_run(study, shorter, datalist, 150, wt=0.5, losses=[(k, 1.0 - k / 400) for k in range(10, 160, 10)])
    _fake_run(study, longer, datalist, 300, wt=0.75, losses=[(k, 1.0 - k / 1000) for k in range(10, 310, 10)])
    # Once both folders' runs are scored, the table is written beside the longer runs.
    assert study.main(args) == 0
    table = (longer / "budgets.md").read_text()
    assert "| swin_unetr | primary | 1 | WT | 0.750 | 0.500 | +0.250" in table
    # Shorter run's last 50 (steps 110-150), the longer run's at the same steps, its own last 50.
    assert "| swin_unetr_n8_s0 | 150 / 300 | 0.675 | 0.870 | 0.720 | yes / yes |" in table
    # A case held out but not scored (a --cases primary cache), or the folders swapped, is refused.
    datalist.write_text(json.dumps({"design": "n4", "training": [{"name": "study_0000", **entry},
                                                                  {"name": "study_0001", **entry}]}))
    refused("window scores cover 1 of 2 held-out cases")
    datalist.write_text(json.dumps({"design": "n4", "training": [{"name": "study_0000", **entry}]}))
    args[4], args[6] = args[6], args[4]
    refused("--output takes the longer runs")
