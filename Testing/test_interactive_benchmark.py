"""Benchmarks/interactive_benchmark.py's paired differences: case by case, the automatic pass too."""

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


def test_update_card_changes_fields_not_weights_and_leaves_a_broken_change_undone(tmp_path):
    """models.model_card.update_card (used to add measured figures or a bias correction to a
    shipped card): atomic, validated, never touching the weights' hash."""
    import shutil

    from SymmetryAwareCore.contract import BUNDLED_MODELS_DIR
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.models.model_card import read_card, update_card, verify_weights

    for f in ("interactive_glioma_saswin_f12.json", "interactive_glioma_saswin_f12.safetensors"):
        shutil.copy(BUNDLED_MODELS_DIR / f, tmp_path / f)
    path = tmp_path / "interactive_glioma_saswin_f12.json"
    before = path.read_text()
    with pytest.raises(InputError):
        update_card(path, lambda d: d.update(sha256="0" * 64))
    with pytest.raises(InputError):  # an invalid preprocessing value: refused by the card's own checks
        update_card(path, lambda d: d["preprocessing"].update(bias_correction="n5"))
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["interactive_glioma_saswin_f12.json", "interactive_glioma_saswin_f12.safetensors"])
    card = update_card(path, lambda d: d.update(version="9.9.9"))
    assert card.version == "9.9.9" and read_card(path).version == "9.9.9" and verify_weights(path)
