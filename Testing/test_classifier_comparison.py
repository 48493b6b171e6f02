"""The paired AUC comparison of two classifiers (Training/scripts/compare_classifiers.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "Training" / "scripts"
sys.path.insert(0, str(SCRIPTS))
try:
    from bundle_classifier import auc, bootstrap_ci, describe_network, paired_auc_difference, pointing_hit, pointing_of
    from compare_classifiers import compare, compare_pointing, main
finally:
    sys.path.remove(str(SCRIPTS))


def _cases(probabilities, targets):
    return {f"c{i}": {"case": f"c{i}", "target": int(t), "probability": float(p)}
            for i, (p, t) in enumerate(zip(probabilities, targets))}


def test_identical_classifiers_differ_by_exactly_zero():
    rng = np.random.default_rng(0)
    t = np.r_[np.ones(20), np.zeros(25)]
    s = rng.random(45)
    r = paired_auc_difference(s, s, t, repeats=200)
    assert r["difference"] == 0.0 and r["ci95"] == [0.0, 0.0]


def test_a_separating_classifier_beats_noise_and_the_interval_says_so():
    rng = np.random.default_rng(1)
    t = np.r_[np.ones(25), np.zeros(35)]
    good = t + 0.3 * rng.standard_normal(60)  # AUC near 1
    noise = rng.random(60)  # AUC near 0.5
    r = paired_auc_difference(good, noise, t, repeats=500)
    assert r["difference"] == pytest.approx(auc(good, t) - auc(noise, t))
    assert r["ci95"][0] > 0.2 and r["ci95"][0] <= r["difference"] <= r["ci95"][1]
    flipped = paired_auc_difference(noise, good, t, repeats=500)
    assert flipped["ci95"][1] < 0


def test_classifiers_sharing_their_errors_get_a_narrow_paired_interval():
    # Two classifiers that share most of their per-case error: resampling the same cases for
    # both cancels that error, so the interval of the difference is much narrower than the
    # interval of either AUC alone.
    rng = np.random.default_rng(2)
    t = np.r_[np.ones(25), np.zeros(35)]
    shared = t * 0.8 + rng.standard_normal(60)
    a, b = shared + 0.05 * rng.standard_normal(60), shared + 0.05 * rng.standard_normal(60)
    paired = paired_auc_difference(a, b, t, repeats=500)
    width = paired["ci95"][1] - paired["ci95"][0]
    lo, hi = bootstrap_ci(a, t, repeats=500)
    assert width < 0.08 and width < 0.5 * (hi - lo)


def test_compare_reads_the_cards_and_refuses_mismatched_cases(tmp_path, capsys):
    t = [1] * 10 + [0] * 12
    rng = np.random.default_rng(3)
    a = _cases(np.asarray(t) + 0.2 * rng.standard_normal(22), t)
    b = _cases(rng.random(22), t)
    for name, cases in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"metrics": {"cases": list(cases.values())}}))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--repeats", "300"]) == 0
    out = capsys.readouterr().out
    assert "A better" in out and "cases 22 (10 positive, 12 negative)" in out
    assert compare(a, a, repeats=50)["reading"] == "no measurable difference"
    del b["c0"]
    with pytest.raises(SystemExit, match="different cases"):
        compare(a, b)
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(SystemExit, match="no metrics.cases"):
        main([str(tmp_path / "empty.json"), str(tmp_path / "a.json")])


def test_pointing_hit_measures_the_distance_in_millimetres():
    label = np.zeros((20, 20, 20), np.uint8)
    label[10, 10, 10] = 1
    heat = np.zeros((20, 20, 20), np.float32)
    heat[10, 10, 12] = 1.0  # two voxels from the bleed along z
    assert pointing_hit(heat, label, (1.0, 1.0, 3.0), 6.0)       # 6 mm: on the edge, counted
    assert not pointing_hit(heat, label, (1.0, 1.0, 3.1), 6.0)  # 6.2 mm
    assert not pointing_hit(heat, label, (3.0, 3.0, 5.0), 6.0)
    with pytest.raises(ValueError, match="needs a lesion"):
        pointing_hit(heat, np.zeros_like(label), (1, 1, 1), 6.0)


def test_pointing_rate_counts_patients_only_with_a_wilson_interval():
    cases = [{"target": 1, "pointing_hit": h} for h in [True] * 8 + [False] * 2] + [{"target": 0, "pointing_hit": None}] * 5
    r = pointing_of(cases)
    assert r["rate"] == 0.8 and r["patients"] == 10
    lo, hi = r["ci95"]
    assert 0.44 < lo < 0.5 and 0.94 < hi < 0.97  # Wilson 8/10: 0.490-0.943
    assert pointing_of([{"target": 0, "pointing_hit": None}])["rate"] is None


def test_card_description_names_the_network_settings():
    text = describe_network({"use_saca": True, "saca_stages": [1], "pooling": "lesion", "pairing": "mirror-pair",
                             "feature_size": 12})
    assert "SACA after Swin stage(s) 1" in text and "lesion map" in text and "mirror image" in text
    assert "no SACA" in describe_network({"use_saca": False, "feature_size": 12})


def test_pointing_comparison_counts_discordant_patients_with_an_exact_mcnemar_p(tmp_path, capsys):
    def cases(hits):
        return {f"c{i}": {"case": f"c{i}", "target": 1, "probability": 0.5 + 0.01 * i, "pointing_hit": h}
                for i, h in enumerate(hits)} | {f"h{i}": {"case": f"h{i}", "target": 0, "probability": 0.1 * i, "pointing_hit": None} for i in range(3)}
    a = cases([True] * 6 + [False] * 4)
    b = cases([True] * 2 + [False] * 8)
    r = compare_pointing(a, b)
    assert (r["patients"], r["hits_a"], r["hits_b"], r["only_a"], r["only_b"]) == (10, 6, 2, 4, 0)
    assert r["mcnemar_p"] == pytest.approx(2 / 16)  # 4 discordant pairs, all one way: 2 * 0.5**4
    assert compare_pointing(a, a)["mcnemar_p"] == 1.0
    assert compare_pointing(_cases([0.4, 0.6], [0, 1]), _cases([0.4, 0.6], [0, 1])) is None
    for name, c in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"metrics": {"cases": list(c.values())}}))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--repeats", "50"]) == 0
    assert "pointing A 6/10  B 2/10; A only 4, B only 0" in capsys.readouterr().out
