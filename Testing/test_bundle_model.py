"""Training/scripts/bundle_model.py end to end on a tiny network and one 3 mm phantom:
the shipped card carries the held-out scores, the default mark and the symmetry head asked
for, and refuses a second default or another model's figures (leaving nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_brats_run

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "Training" / "scripts" / "bundle_model.py"


@pytest.fixture(scope="module")
def bundle_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    card_path, datalist, _ = tiny_brats_run(root, {"training": {"config": {"train": {"steps": 1}}}})
    return root, card_path.parent, datalist


def _bundle(run, datalist, output, *extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "Training")]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), "--run", str(run), "--datalist", str(datalist), "--fold", "0",
                           "--output", str(output), "--version", "9.9.9", *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def test_bundled_card_is_marked_default_names_its_head_and_keeps_other_scores(bundle_inputs):
    root, run, datalist = bundle_inputs
    out = root / "models"
    out.mkdir()
    (out / "head.json").write_text("{}")
    (out / "older.json").write_text(json.dumps({"name": "older", "default": True}))

    refused = _bundle(run, datalist, out / "new.safetensors", "--default")
    assert refused.returncode == 2 and "older.json is already marked default" in refused.stderr
    assert not (out / "new.safetensors").exists()  # refused before anything was written

    (out / "older.json").write_text(json.dumps({"name": "older"}))
    first = _bundle(run, datalist, out / "new.safetensors")
    assert first.returncode == 0, first.stderr
    card = json.loads((out / "new.json").read_text())
    assert "default" not in card and card["metrics"]["summary"]["WT"]["dice_n"] == 1
    # A result of these very weights (as heldout_glioma.py writes it) is accepted...
    scored = root / "scored.json"
    scored.write_text(json.dumps({"model": {"sha256": card["sha256"]}, "summary": {"set": {"WT": {"dice_mean": 0.5}}},
                                  "cases": {"c1": {"WT": {"dice": 0.5, "false_positive_ml": 1.5}}}}))
    done = _bundle(run, datalist, out / "new.safetensors", "--default", "--symmetry-head", "head.json",
                   "--also-scored", f"faint={scored}")
    assert done.returncode == 0, done.stderr
    card = json.loads((out / "new.json").read_text())
    assert card["default"] is True and card["extra"]["symmetry_head"] == "head.json"
    assert card["metrics"]["also_scored"]["faint"]["false_positive_ml"] == {"c1": 1.5}

    # ...one of other weights is not, and the pair written for the check is removed.
    scored.write_text(json.dumps({"model": {"sha256": "0" * 64}, "summary": {}, "cases": {}}))
    other = _bundle(run, datalist, out / "other.safetensors", "--also-scored", f"faint={scored}")
    assert other.returncode != 0 and "not these" in other.stderr
    assert not (out / "other.safetensors").exists() and not (out / "other.json").exists()


def test_bias_correction_of_the_shipped_card_and_of_its_other_scores_must_agree(bundle_inputs):
    """``--bias-correction n4``: the card asks for N4 (its held-out scores are then measured
    with it, through segment_case); a result scored without N4 is refused for that card."""
    root, run, datalist = bundle_inputs
    out = root / "models_n4"
    out.mkdir()
    done = _bundle(run, datalist, out / "n4.safetensors", "--bias-correction", "n4")
    assert done.returncode == 0, done.stderr
    card = json.loads((out / "n4.json").read_text())
    assert card["preprocessing"]["bias_correction"] == "n4"
    scored = root / "scored_plain.json"
    scored.write_text(json.dumps({"model": {"sha256": card["sha256"]}, "summary": {}, "cases": {}, "bias_correction": None}))
    mixed = _bundle(run, datalist, out / "n4.safetensors", "--bias-correction", "n4", "--also-scored", f"faint={scored}")
    assert mixed.returncode != 0 and "with bias correction none" in mixed.stderr
    scored.write_text(json.dumps({"model": {"sha256": card["sha256"]}, "summary": {"set": {}}, "cases": {}, "bias_correction": "n4"}))
    agreed = _bundle(run, datalist, out / "n4.safetensors", "--bias-correction", "n4", "--also-scored", f"faint={scored}")
    assert agreed.returncode == 0, agreed.stderr
