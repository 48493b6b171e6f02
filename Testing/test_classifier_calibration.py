"""Platt calibration of a classifier: the fit (Training/scripts/calibrate_classifier.py), the
one rule that applies it (SymmetryAwareCore.inference.classify.calibrate), the card check,
and what classify and the Slicer panel say about it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.inference.classify import calibrate, classify_case, classify_prepared
from SymmetryAwareCore.inference.model_source import LoadedModel, resolve_model
from SymmetryAwareCore.models.model_card import load_model
from SymmetryAwareCore.models.sa_swin_classifier import SASwinClassifier
from SymmetryAwareCore.phantoms import sample_case_paths

SCRIPTS = Path(__file__).resolve().parents[1] / "Training" / "scripts"
sys.path.insert(0, str(SCRIPTS))
try:
    import calibrate_classifier
    from calibrate_classifier import calibration_metrics, fit_platt
finally:
    sys.path.remove(str(SCRIPTS))

SMALL = dict(feature_size=12, depths=(1, 1, 1, 1))
FINDINGS = ["haemorrhage", "mass effect"]


def _logit(p):
    return np.log(p / (1 - p))


def test_platt_fit_recovers_a_known_scale_and_offset():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.05, 0.95, 20000)
    truth = (rng.random(raw.size) < 1 / (1 + np.exp(-(0.4 * _logit(raw) - 0.7)))).astype(int)
    fit = fit_platt(raw, truth)
    assert abs(fit["scale"] - 0.4) < 0.05 and abs(fit["offset"] + 0.7) < 0.05
    # Already calibrated scores stay (about) where they are.
    truth = (rng.random(raw.size) < raw).astype(int)
    fit = fit_platt(raw, truth)
    assert abs(fit["scale"] - 1.0) < 0.08 and abs(fit["offset"]) < 0.05
    # A separable set does not run off to infinity (the ridge), and one class cannot be fitted.
    fit = fit_platt([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert np.isfinite(fit["scale"]) and fit["scale"] > 0
    with pytest.raises(ValueError, match="both positives and negatives"):
        fit_platt([0.2, 0.3], [1, 1])


def test_calibration_metrics_by_hand():
    m = calibration_metrics([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0])
    assert m["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4, abs=1e-4)
    # bin 9: mean p 0.9, frequency 0.5 (2 cases); bin 1: mean p 0.1, frequency 0 (2 cases)
    assert m["ece"] == pytest.approx((0.4 * 2 + 0.1 * 2) / 4, abs=1e-4)
    assert m["median_positive"] == 0.9 and m["median_negative"] == 0.1


def test_calibrate_is_per_finding_monotone_and_the_identity_without_a_calibration():
    p = np.array([0.2, 0.7])
    np.testing.assert_array_equal(calibrate(p, None), p)
    cal = {"method": "platt", "scale": [2.0, 0.5], "offset": [0.5, -1.0]}
    expected = 1 / (1 + np.exp(-(np.array([2.0, 0.5]) * _logit(p) + np.array([0.5, -1.0]))))
    np.testing.assert_allclose(calibrate(p, cal), expected)
    maps = np.random.default_rng(1).uniform(0, 1, (2, 5, 6, 7))
    out = calibrate(maps, cal)
    np.testing.assert_allclose(out[1], calibrate(maps[1][None], {**cal, "scale": [0.5], "offset": [-1.0]})[0])
    for f in range(2):  # a positive scale keeps the map's order, so its peak stays where it was
        assert np.argmax(out[f]) == np.argmax(maps[f])
        assert np.all(np.diff(out[f].ravel()[np.argsort(maps[f].ravel())]) >= -1e-12)
    assert np.isfinite(calibrate(np.array([0.0, 1.0]), cal)).all()


@pytest.fixture(scope="module")
def lesion_card(tmp_path_factory, save_classifier):
    torch.manual_seed(7)
    net = SASwinClassifier(in_channels=4, out_channels=2, pooling="lesion", pairing="mirror-pair", **SMALL)
    return save_classifier(net, tmp_path_factory.mktemp("cal") / "lesion.safetensors", FINDINGS, "tiny-calibrated")


def _with_calibration(card_path: Path, tmp_path: Path, calibration) -> Path:
    data = json.loads(card_path.read_text())
    data["postprocessing"]["calibration"] = calibration
    out = card_path.parent / f"calibrated_{tmp_path.name}.json"  # beside the weights, as a card must be
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("calibration, why", [
    ({"method": "platt", "scale": [1.0, -0.5], "offset": [0.0, 0.0]}, "scale <= 0"),
    ({"method": "platt", "scale": [1.0], "offset": [0.0]}, "one per finding"),
    ({"method": "isotonic", "scale": [1.0, 1.0], "offset": [0.0, 0.0]}, "unknown method"),
    ({"method": "platt", "scale": [1.0, "x"], "offset": [0.0, 0.0]}, "not a number"),
    ({"method": "platt", "scale": [1.0, 1.0]}, "no offset"),
])
def test_a_bad_calibration_in_a_card_is_one_line_error(lesion_card, tmp_path, calibration, why):
    bad = _with_calibration(lesion_card, tmp_path, calibration)
    with pytest.raises(InputError, match="postprocessing.calibration") as info:
        load_model(bad)
    assert "\n" not in str(info.value), why


def test_a_calibration_matches_findings_kept_in_extra_as_training_cards_keep_them(lesion_card, tmp_path):
    """The findings are read by the one rule (contract.card_findings), wherever the card keeps them."""
    data = json.loads(lesion_card.read_text())
    data.setdefault("extra", {})["findings"] = data["postprocessing"].pop("findings")
    data["postprocessing"]["calibration"] = {"method": "platt", "scale": [1.0, 2.0], "offset": [0.0, 0.1]}
    moved = lesion_card.parent / f"extra_{tmp_path.name}.json"
    moved.write_text(json.dumps(data))
    _, card = load_model(moved)
    assert card.postprocessing["calibration"]["scale"] == [1.0, 2.0]
    data["postprocessing"]["calibration"]["scale"] = [1.0]
    moved.write_text(json.dumps(data))
    with pytest.raises(InputError, match="postprocessing.calibration"):
        load_model(moved)


def test_classify_applies_the_cards_calibration_to_probabilities_and_maps(lesion_card, tmp_path):
    network, card = load_model(lesion_card)
    raw_model = LoadedModel(network, card, str(lesion_card))
    calibration = {"method": "platt", "scale": [0.5, 2.0], "offset": [-0.3, 0.4], "fitted_on": "40 test cases"}
    cal_path = _with_calibration(lesion_card, tmp_path, calibration)
    cal_network, cal_card = load_model(cal_path)
    cal_model = LoadedModel(cal_network, cal_card, str(cal_path))
    box = np.random.default_rng(0).normal(size=(4, 30, 36, 28)).astype(np.float32)
    p_raw, map_raw = classify_prepared(box, raw_model, "cpu", return_maps=True)
    p_cal, map_cal = classify_prepared(box, cal_model, "cpu", return_maps=True)
    np.testing.assert_allclose(p_cal, calibrate(p_raw, calibration), rtol=1e-6)
    np.testing.assert_allclose(map_cal, calibrate(map_raw, calibration), rtol=1e-5, atol=1e-6)
    assert not np.allclose(p_cal, p_raw)
    # calibrated=False gives the network's own sigmoid: what a calibration is fitted to.
    np.testing.assert_allclose(classify_prepared(box, cal_model, "cpu", calibrated=False), p_raw, rtol=1e-6)
    paths = sample_case_paths()
    paths = [paths[c] for c in ("t1", "t1ce", "t2", "flair")]
    raw_result = classify_case(paths, raw_model, device="cpu")
    cal_result = classify_case(paths, cal_model, device="cpu")
    assert raw_result["calibration"] is None and cal_result["calibration"] == "40 test cases"
    for i, name in enumerate(FINDINGS):
        expected = calibrate(np.array([raw_result["probabilities"][name]]), {**calibration, "scale": [calibration["scale"][i]],
                                                                               "offset": [calibration["offset"][i]]})[0]
        assert cal_result["probabilities"][name] == pytest.approx(expected, rel=1e-5)


def test_the_panel_says_whether_the_probability_is_calibrated():
    pytest.importorskip("vtk", reason="the Slicer module's files import vtk (slicer-core gives it)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
    try:
        from SymmetryAwareSegLib.classification import LoadedClassification, classification_summary
    finally:
        sys.path.pop(0)
    raw = classification_summary(LoadedClassification("c", {"haemorrhage": 0.64}, result={"calibration": None}))
    assert "haemorrhage: probability 0.640" in raw and "Not calibrated" in raw
    cal = classification_summary(LoadedClassification("c", {"haemorrhage": 0.3}, result={"calibration": "100 cases"}))
    assert "Calibrated on 100 cases" in cal and "Not calibrated" not in cal


def test_the_shipped_ct_cards_held_out_calibration_figures_follow_from_its_stored_cases():
    """The card's before/after Brier and ECE on its 100 held-out cases are recomputed here from
    the stored uncalibrated probabilities and the stored calibration, by the one rule."""
    model = resolve_model("ct-haemorrhage-phantom-saswin-f12")
    calibration = model.card.postprocessing["calibration"]
    cases = model.card.metrics["cases"]
    raw = np.array([c["probability"] for c in cases])
    targets = np.array([c["target"] for c in cases])
    reported = model.card.metrics["calibration"]
    before = calibration_metrics(raw, targets)
    after = calibration_metrics(calibrate(raw[None], calibration)[0], targets)
    for key in ("brier", "ece"):
        assert before[key] == pytest.approx(reported["uncalibrated"][key], abs=1e-4)
        assert after[key] == pytest.approx(reported["calibrated"][key], abs=1e-4)
    assert after["brier"] < before["brier"]  # the shipping rule for the calibration


def _calibration_inputs(tmp_path, save_classifier, training_names=()):
    """A one-finding card with 20 stored held-out cases, and a 40-case calibration datalist."""
    torch.manual_seed(3)
    net = SASwinClassifier(in_channels=4, out_channels=1, pooling="lesion", **SMALL)
    card = save_classifier(net, tmp_path / "one.safetensors", ["haemorrhage"], "tiny-one-finding")
    data = json.loads(card.read_text())
    rng = np.random.default_rng(0)
    held = [{"case": f"ho_{i}", "target": i % 2, "probability": float(0.6 + 0.04 * (i % 2) + rng.normal(0, 0.02))}
            for i in range(20)]
    data["metrics"] = {"cases": held}
    if training_names:
        train_list = tmp_path / "train.json"
        train_list.write_text(json.dumps({"training": [{"name": n, "image": ["x.nii.gz"]} for n in training_names]}))
        data["extra"] = {"training_run": {"data": {"datalist": str(train_list)}}}
    card.write_text(json.dumps(data))
    datalist = tmp_path / "calib.json"
    datalist.write_text(json.dumps({"training": [{"name": f"cal_{i}", "image": [f"cal_{i}.nii.gz"], "haemorrhage": i % 2}
                                                 for i in range(40)]}))
    return card, datalist


def test_the_calibration_script_fits_on_raw_scores_and_rewrites_only_the_card(tmp_path, save_classifier, monkeypatch):
    """End to end with the scoring replaced by known raw scores (p = 0.60 or 0.64 plus noise):
    the script asks for uncalibrated scores, fits a positive scale, writes the card's
    calibration and held-out figures, and leaves the weights (and their hash) alone."""
    from SymmetryAwareCore.inference import classify as classify_module

    card, datalist = _calibration_inputs(tmp_path, save_classifier)
    weights_before = (tmp_path / "one.safetensors").read_bytes()
    rng = np.random.default_rng(1)
    asked = []

    def fake_classify_case(paths, model, device="auto", calibrated=True, **_):
        asked.append(calibrated)
        target = int(Path(paths[0]).name.split("_")[1].split(".")[0]) % 2
        return {"probabilities": {"haemorrhage": float(0.6 + 0.04 * target + rng.normal(0, 0.02))}}

    monkeypatch.setattr(classify_module, "classify_case", fake_classify_case)
    assert calibrate_classifier.main(["--card", str(card), "--datalist", str(datalist), "--recipe", "test"]) == 0
    assert asked == [False] * 40
    data = json.loads(card.read_text())
    calibration = data["postprocessing"]["calibration"]
    assert calibration["method"] == "platt" and calibration["scale"][0] > 1  # stretches the squeezed band
    assert calibration["fitted_on"] == "40 cases of " + tmp_path.name + " (20 with haemorrhage, 20 without)"
    assert calibration["recipe"] == "test"
    reported = data["metrics"]["calibration"]
    assert reported["calibrated"]["brier"] < reported["uncalibrated"]["brier"]
    assert (tmp_path / "one.safetensors").read_bytes() == weights_before
    _, loaded = load_model(card)  # the hash still matches, the calibration passes the card check
    assert loaded.postprocessing["calibration"] == calibration


def test_the_calibration_script_refuses_cases_it_has_trained_or_been_scored_on(tmp_path, save_classifier):
    card, datalist = _calibration_inputs(tmp_path, save_classifier, training_names=["cal_7"])
    before = card.read_text()
    with pytest.raises(SystemExit, match="training run's datalist"):
        calibrate_classifier.main(["--card", str(card), "--datalist", str(datalist)])
    data = json.loads(datalist.read_text())
    data["training"][0]["name"] = "ho_3"
    datalist.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="held-out cases of the card"):
        calibrate_classifier.main(["--card", str(card), "--datalist", str(datalist)])
    assert card.read_text() == before
