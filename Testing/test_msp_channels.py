"""Benchmarks/msp_channels.py: per-channel planes and the scan's plane against a phantom's truth."""

import json
import sys

from conftest import import_benchmark

from SymmetryAwareCore.phantoms.dataset import write_case
from SymmetryAwareCore.phantoms.generator import make_subject


def test_msp_channels_scores_each_channel_and_the_scan(tmp_path, monkeypatch, capsys):
    paths = write_case(make_subject(5, "glioma", "mri", spacing=3.0, scenario="unilateral"), tmp_path, "p005")
    entry = {"name": "p005", "image": [paths[c].name for c in ("t1", "t1ce", "t2", "flair")],
             "case_json": paths["case_json"].name, "fold": 0}
    other = dict(entry, name="other", fold=1)
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [entry, other]}))
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["msp_channels", "--datalist", str(tmp_path / "datalist.json"), "--fold", "0", "--json", str(out)])
    import_benchmark("msp_channels").main()
    rows = json.loads(out.read_text())
    assert list(rows) == ["p005"]  # fold 1 left out
    assert list(rows["p005"]) == ["t1", "t1ce", "t2", "flair", "scan"]
    scan = rows["p005"]["scan"]
    # The phantom's plane is known: the scan's fit (the one segment uses) is on it.
    assert scan["confident"] and scan["angle"] < 1.0 and scan["offset"] < 1.0, scan
    printed = capsys.readouterr().out
    assert printed.startswith("p005: t1 ") and "  scan: wrong 0  failed 0  confident and wrong 0" in printed
