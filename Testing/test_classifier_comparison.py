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
    from bundle_classifier import auc, bootstrap_ci, paired_auc_difference
    from compare_classifiers import compare, main
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
