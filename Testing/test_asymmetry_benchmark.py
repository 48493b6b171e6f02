"""Benchmarks/asymmetry_benchmark.py: the scans' preparation follows --bias-correction, and its
cache never mixes corrected with uncorrected rows."""

import json

import pytest
from conftest import import_benchmark

from SymmetryAwareCore.contract import BUNDLED_MODELS_DIR
from SymmetryAwareCore.models.model_card import read_card


def test_spec_follows_bias_correction_over_the_heads_card(capsys):
    bench = import_benchmark("asymmetry_benchmark")
    head_card = read_card(BUNDLED_MODELS_DIR / "glioma_phantom_sah_f12.json")
    assert bench.spec_for("glioma", 3.0, head_card).bias_correction == "none"  # what the head trained on
    n4 = bench.spec_for("glioma", 3.0, head_card, "n4")
    assert n4.bias_correction == "n4" and n4.spacing == bench.spec_for("glioma", 3.0, head_card).spacing
    assert bench.spec_for("glioma", 3.0, None, "n4").to_card()["bias_correction"] == "n4"
    with pytest.raises(SystemExit):  # N4 is for MRI: a CT benchmark with it is a usage error
        bench.main(["--kind", "haemorrhage", "--bias-correction", "n4", "--healthy", "2", "--lesion", "2"])
    assert "bias_correction is for MRI" in capsys.readouterr().err
    ct = bench.spec_for("haemorrhage", 3.0, None)  # CT: the default windows, brain window first
    assert ct.is_ct and ct.bias_correction == "none" and tuple(map(tuple, ct.ct_windows))[0] == (0.0, 80.0)


def test_n4_rows_are_cached_apart(tmp_path, capsys):
    bench = import_benchmark("asymmetry_benchmark")
    cache = tmp_path / "cases.jsonl"
    common = ["--healthy", "2", "--lesion", "2", "--hard", "0", "--contrasts", "1", "--bootstrap", "10",
              "--variation", "1", "--cache", str(cache)]
    assert bench.main(common) == 0
    assert bench.main(common + ["--bias-correction", "n4", "--json", str(tmp_path / "n4.json")]) == 0
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    # Four scans prepared twice: the N4 run did not reuse the uncorrected rows.
    assert len(rows) == 8
    assert sum(r["tag"]["preprocessing"].get("bias_correction") == "n4" for r in rows) == 4
    summary = json.loads((tmp_path / "n4.json").read_text())
    assert summary["preprocessing"]["bias_correction"] == "n4" and len(summary["cases"]) == 4
    assert "bias correction n4" in capsys.readouterr().out
