"""Benchmarks/interactive_benchmark.py's paired differences: case by case, the automatic pass too."""

import numpy as np
import pytest
from conftest import import_benchmark


def _row(case, auto, d1, d3, d5, noc90):
    return {"case": case, "auto_dice": auto, "dice_1": d1, "dice_3": d3, "dice_5": d5, "noc90": noc90}


def test_paired_differences_pair_by_case_and_include_the_automatic_pass_when_both_have_it():
    bench = import_benchmark("interactive_benchmark")
    base = [_row("a", 0.5, 0.6, 0.7, 0.8, 5), _row("b", 0.4, 0.5, 0.6, 0.7, 10)]
    # Another order: pairing is by case name, not position.
    n4 = [_row("b", 0.6, 0.5, 0.7, 0.7, 8), _row("a", 0.7, 0.6, 0.8, 0.8, 5)]
    out = bench.paired_differences({"none": {"cases": base}, "n4": {"cases": n4}}, resamples=200)
    entry = out["n4 - none"]
    assert entry["cases"] == 2
    assert entry["auto_dice"]["mean"] == pytest.approx(0.2)
    assert entry["dice_1"]["mean"] == pytest.approx(0.0) and entry["dice_3"]["mean"] == pytest.approx(0.1)
    assert entry["noc90"]["mean"] == pytest.approx(-1.0)
    lo, hi = entry["dice_3"]["ci95"]
    assert lo <= 0.1 <= hi
    # A condition without an automatic pass (a refiner-only model): no auto_dice row.
    no_auto = [dict(r, auto_dice=None) for r in n4]
    assert "auto_dice" not in bench.paired_differences({"none": {"cases": base}, "x": {"cases": no_auto}})["x - none"]



class _FakeSession:
    """What interactive_benchmark.run_case uses of an InteractiveSession: records each load's
    bias_correction; the mask is the truth after the first click."""

    loads: list = []

    def __init__(self, threads=None, ablation=None):
        self.auto_available, self.mask, self.truth = True, None, None

    def load(self, images, model=None, bias_correction=None):
        import nibabel as nib

        _FakeSession.loads.append(bias_correction)
        self.truth = np.asarray(nib.load(images[0]).dataobj) > 0
        self.mask = np.zeros_like(self.truth)
        self.prepared = type("P", (), {"bias_correction": "n4" if bias_correction else None})()

    def auto(self):
        self.mask = np.zeros_like(self.truth)

    def reset(self):
        self.mask = np.zeros_like(self.truth)

    def click(self, ras, positive):
        self.mask = self.truth.copy()


def test_also_bias_correction_pairs_none_against_n4_whatever_the_card_asks(tmp_path, monkeypatch):
    """The interactive card asks for N4 (0.3.0): the baseline must load with N4 explicitly OFF,
    or the pair would compare N4 with N4."""
    import json
    import sys

    import nibabel as nib

    import SymmetryAwareCore.interactive.session as session_module

    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:5, 2:5, 2:5] = 1
    nib.save(nib.Nifti1Image(truth, np.eye(4)), tmp_path / "c_label.nii.gz")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [
        {"name": "c", "image": ["c_label.nii.gz"], "label": "c_label.nii.gz", "fold": 0}]}))
    monkeypatch.setattr(session_module, "InteractiveSession", _FakeSession)
    _FakeSession.loads = []
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", ["interactive_benchmark", "--datalist", str(tmp_path / "datalist.json"),
                                      "--ablation", "none", "--also-bias-correction", "--output", str(out)])
    import_benchmark("interactive_benchmark").main()
    assert _FakeSession.loads == [False, True]
    result = json.loads(out.read_text())
    rows = {name: c["cases"][0] for name, c in result["conditions"].items()}
    assert rows["empty+clicks"]["bias_correction"] is None and rows["n4 empty+clicks"]["bias_correction"] == "n4"
    assert "n4 empty+clicks - empty+clicks" in result["paired"]
