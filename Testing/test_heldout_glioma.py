"""Benchmarks/heldout_glioma.py: per-case scores read from files on the truth's own grid."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import import_benchmark, tiny_brats_run


@pytest.fixture(scope="module")
def bench():
    return import_benchmark("heldout_glioma")


def _write(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(path))
    return path


def test_scores_count_false_positives_in_ml_on_an_oblique_grid(bench, tmp_path):
    # 2 x 1.5 x 1 mm voxels, rotated 30 degrees about z and shifted: spacing comes from the affine's columns.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([2.0, 1.5, 1.0])
    affine[:3, 3] = (-12.0, 7.0, 3.0)
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[5:9, 5:9, 5:9] = 2          # oedema: WT only, 64 voxels
    pred = truth.copy()
    pred[15:17, 15:17, 15:17] = 2     # 8 voxels of healthy tissue marked as oedema
    m = bench._scores(_write(tmp_path / "pred.nii.gz", pred, affine), _write(tmp_path / "truth.nii.gz", truth, affine))
    assert m["WT"]["dice"] == pytest.approx(2 * 64 / (72 + 64))
    assert m["WT"]["false_positive_ml"] == pytest.approx(8 * 3.0 / 1000)


def test_scores_refuse_a_prediction_off_the_truth_grid(bench, tmp_path):
    labels = np.zeros((8, 8, 8), np.uint8)
    truth = _write(tmp_path / "truth.nii.gz", labels, np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    with pytest.raises(SystemExit, match="not on the grid"):
        bench._scores(_write(tmp_path / "pred.nii.gz", labels, shifted), truth)


def _result(path, dice_wt, fp_ml):
    cases = {f"c{i}": {"WT": {"dice": float(d), "hd95": 1.0, "false_positive_ml": float(f)},
                       "TC": {"dice": float(d) / 2, "hd95": 1.0}, "ET": {"dice": 0.5, "hd95": 1.0}}
             for i, (d, f) in enumerate(zip(dice_wt, fp_ml))}
    path.write_text(json.dumps({"model": {}, "cases": cases, "summary": {}}))
    return path


def test_compare_heldout_pairs_cases_and_splits_by_a_datalist_field(tmp_path, capsys):
    compare = import_benchmark("compare_heldout")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.8, 20)
    gain = np.where(np.arange(20) < 10, 0.2, 0.0)  # the first ten cases improve, the rest do not
    before = _result(tmp_path / "a.json", base, np.full(20, 5.0))
    after = _result(tmp_path / "b.json", base + gain, np.full(20, 7.0))
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": [{"name": f"c{i}", "contrast": 0.5 if i < 10 else 0.3}
                                                 for i in range(20)]}))
    out = tmp_path / "cmp.json"
    assert compare.main([str(before), str(after), "--datalist", str(datalist), "--group-by", "contrast",
                         "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    mean, low, high = result["all"]["WT"]["difference"]
    assert mean == pytest.approx(0.1) and 0 < low < 0.1 < high
    assert result["all"]["TC"]["difference"][0] == pytest.approx(0.05)
    assert result["all"]["ET"]["difference"] == [0.0, 0.0, 0.0]
    assert result["contrast 0.5"]["WT"]["difference"][0] == pytest.approx(0.2)
    assert result["contrast 0.3"]["WT"]["difference"] == [0.0, 0.0, 0.0]
    assert result["all"]["WT_false_positive_ml"]["difference"] == pytest.approx([2.0, 2.0, 2.0])
    missed = int(np.sum(base < 0.1))
    assert result["all"]["WT_missed"]["before"] == missed
    assert result["all"]["WT_missed"]["after"] == int(np.sum(base + gain < 0.1))
    assert "WT: " in capsys.readouterr().out

    other = _result(tmp_path / "c.json", base[:19], np.full(19, 5.0))
    with pytest.raises(SystemExit, match="different cases"):
        compare.main([str(before), str(other)])
    with pytest.raises(SystemExit, match="cannot read"):
        compare.main([str(before), str(after), "--datalist", str(tmp_path / "absent.json"), "--group-by", "x"])


@pytest.fixture(scope="module")
def tiny_region_model(tmp_path_factory):
    """A random feature-12 SA-Swin with the BraTS region card, and one 3 mm phantom in a datalist."""
    from SymmetryAwareCore.inference.model_source import resolve_model

    card_path, datalist, paths = tiny_brats_run(tmp_path_factory.mktemp("sweep"))
    return resolve_model(str(card_path)), [paths[c] for c in ("t1", "t1ce", "t2", "flair")], datalist.parent


def test_threshold_sweep_reproduces_the_labelmap_and_grows_as_the_threshold_falls(bench, tiny_region_model, tmp_path):
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case

    model, paths, _ = tiny_region_model
    options = SegmentOptions(device="cpu", overview=False)
    native, labels = bench.sweep_labels(paths, model, options, [0.3, 0.7])
    written = nib.load(str(segment_case(paths, tmp_path, model, options, case_id="p005").files["labelmap"]))
    assert np.allclose(written.affine, native.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels[None])  # the card's 0.5: the deployed labels
    low, card, high = (labels[t] > 0 for t in (0.3, None, 0.7))
    assert not np.any(card & ~low) and not np.any(high & ~card)  # a lower threshold only adds whole-tumour voxels
    assert low.sum() > card.sum() > high.sum()  # and, on a random network near 0.5, it does add some


def test_sweep_is_written_and_compared_at_a_chosen_threshold(bench, tiny_region_model, tmp_path, capsys):
    compare = import_benchmark("compare_heldout")
    model, _, root = tiny_region_model
    out = tmp_path / "sweep.json"
    bench.main(["--datalist", str(root / "datalist.json"), "--model", model.source, "--output", str(out),
                "--thresholds", "0.3"])
    result = json.loads(out.read_text())
    at_card, at_low = result["cases"]["p005"], result["thresholds"]["0.3"]["cases"]["p005"]
    assert at_low["WT"]["false_positive_ml"] >= at_card["WT"]["false_positive_ml"]
    cmp = tmp_path / "cmp.json"
    assert compare.main([str(out), str(out), "--after-threshold", "0.3", "--output", str(cmp)]) == 0
    wt = json.loads(cmp.read_text())["all"]["WT_false_positive_ml"]
    assert wt["difference"][0] == pytest.approx(at_low["WT"]["false_positive_ml"] - at_card["WT"]["false_positive_ml"])
    with pytest.raises(SystemExit, match="no sweep at threshold 0.4"):
        compare.main([str(out), str(out), "--after-threshold", "0.4"])
    with pytest.raises(SystemExit, match="must lie in"):
        bench.main(["--datalist", str(root / "datalist.json"), "--output", str(tmp_path / "x.json"), "--thresholds", "1.5"])
    assert not (tmp_path / "x.json").exists()


def test_a_threshold_is_refused_for_an_argmax_card():
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.inference.postprocess import labels_from_probabilities

    class Card:
        postprocessing = {"activation": "softmax"}
        labels = ()

    with pytest.raises(InputError, match="only to a region"):
        labels_from_probabilities(np.zeros((1, 2, 2, 2), np.float32), Card(), threshold=0.3)


def test_segment_threshold_option_labels_at_that_threshold_and_says_so(bench, tiny_region_model, tmp_path):
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case

    model, paths, _ = tiny_region_model
    _, labels = bench.sweep_labels(paths, model, SegmentOptions(device="cpu", overview=False), [0.3])
    result = segment_case(paths, tmp_path, model, SegmentOptions(device="cpu", overview=False, threshold=0.3), case_id="p")
    np.testing.assert_array_equal(np.asarray(nib.load(str(result.files["labelmap"])).dataobj), labels[0.3])
    assert result.report["inference"]["threshold"] == 0.3


def test_threshold_for_an_argmax_model_is_one_line_before_any_work(tiny_region_model, tmp_path):
    import subprocess
    import sys

    model, paths, _ = tiny_region_model
    card = json.loads(Path(model.source).read_text())
    card.update(name="tiny-softmax", postprocessing={"activation": "softmax"}, labels=card["labels"][:2])
    softmax = Path(model.source).with_name("tiny_softmax.json")  # same weights: 3 channels = background + 2 labels
    softmax.write_text(json.dumps(card))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "SymmetryAwareCore", "segment", *map(str, paths), "--output-dir", str(out),
                          "--model", str(softmax), "--threshold", "0.3", "--progress", "none"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "--threshold applies only to a region" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_a_case_the_pipeline_refuses_is_listed_not_scored(bench, tiny_region_model, tmp_path):
    model, paths, root = tiny_region_model
    entries = json.loads((root / "datalist.json").read_text())["training"]
    blank = np.zeros((30, 30, 30), np.float32)  # an empty scan: refused in one line before any work
    names = []
    for channel in ("t1", "t1ce", "t2", "flair"):
        nib.save(nib.Nifti1Image(blank, np.diag([3.0, 3.0, 3.0, 1.0])), str(tmp_path / f"blank_{channel}.nii.gz"))
        names.append(str(tmp_path / f"blank_{channel}.nii.gz"))
    nib.save(nib.Nifti1Image(blank.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])), str(tmp_path / "blank_label.nii.gz"))
    listed = [dict(entries[0], image=[str(root / p) for p in entries[0]["image"]], label=str(root / entries[0]["label"])),
              {"name": "blank", "image": names, "label": str(tmp_path / "blank_label.nii.gz"), "fold": 0}]
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": listed}))
    out = tmp_path / "scores.json"
    bench.main(["--datalist", str(datalist), "--model", model.source, "--output", str(out)])
    result = json.loads(out.read_text())
    assert set(result["cases"]) == {"p005"} and "image is empty" in result["refused"]["blank"]


def test_bias_correction_runs_first_and_says_so(tiny_region_model, tmp_path):
    """`--bias-correction`: N4 on each channel before the plane, the frame and the network;
    the report records it; a CT model refuses it in one line."""
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case
    from SymmetryAwareCore.io.image import Image
    from SymmetryAwareCore.preprocessing import Preprocessing, prepare_image

    model, paths, _ = tiny_region_model
    plain = segment_case(paths, tmp_path / "plain", model, SegmentOptions(device="cpu", overview=False), case_id="p")
    result = segment_case(paths, tmp_path / "n4", model, SegmentOptions(device="cpu", overview=False, bias_correction=True), case_id="p")
    assert result.report["inference"]["bias_correction"] == "n4" and plain.report["inference"]["bias_correction"] is None
    assert any("bias field removed" in note for note in result.report["notes"])
    assert result.report["msp"]["confident"]  # the plane is still found on the corrected scan
    ct = Preprocessing.from_card({"spacing": [3, 3, 3], "roi_size": [64, 64, 64], "normalisation": "ct-windows", "ct_windows": [[0, 80]]})
    with pytest.raises(InputError, match="--bias-correction is for MRI"):
        prepare_image(Image(np.zeros((1, 8, 8, 8), np.float32), np.eye(4)), ct, bias_correction=True)


def test_a_card_that_asks_for_n4_gets_it_unless_the_run_turns_it_off(bench, tiny_region_model, tmp_path):
    """``preprocessing.bias_correction: "n4"`` in the card: every case is corrected without
    being asked (the same labels as --bias-correction on a plain card), the report says so;
    ``bias_correction=False`` (--no-bias-correction) turns it off with a note; the benchmark
    records what was applied."""
    import dataclasses

    from SymmetryAwareCore.inference.model_source import LoadedModel
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case

    model, paths, root = tiny_region_model
    asks = LoadedModel(model.network, dataclasses.replace(model.card, preprocessing={**model.card.preprocessing, "bias_correction": "n4"}),
                       model.source)
    options = SegmentOptions(device="cpu", overview=False)
    by_card = segment_case(paths, tmp_path / "card", asks, options, case_id="p")
    by_option = segment_case(paths, tmp_path / "option", model, dataclasses.replace(options, bias_correction=True), case_id="p")
    off = segment_case(paths, tmp_path / "off", asks, dataclasses.replace(options, bias_correction=False), case_id="p")
    assert by_card.report["inference"]["bias_correction"] == "n4" and by_card.report["preprocessing"]["bias_correction"] == "n4"
    assert any("as the model card's preprocessing asks" in note for note in by_card.report["notes"])
    assert off.report["inference"]["bias_correction"] is None and any("turned off by the run" in n for n in off.report["notes"])
    labels = {k: np.asarray(nib.load(str(r.files["labelmap"])).dataobj) for k, r in (("card", by_card), ("option", by_option), ("off", off))}
    np.testing.assert_array_equal(labels["card"], labels["option"])
    asymmetry = {k: np.asarray(nib.load(str(r.files["asymmetry"])).dataobj) for k, r in (("card", by_card), ("off", off))}
    assert not np.allclose(asymmetry["card"], asymmetry["off"])  # N4 changed what the network saw
    out = tmp_path / "scores.json"
    bench.main(["--datalist", str(root / "datalist.json"), "--model", model.source, "--output", str(out), "--bias-correction"])
    assert json.loads(out.read_text())["bias_correction"] == "n4"
    bench.main(["--datalist", str(root / "datalist.json"), "--model", model.source, "--output", str(out)])
    assert json.loads(out.read_text())["bias_correction"] is None
