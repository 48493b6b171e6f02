"""Evaluation: BraTS regions, Dice/HD95 and AUC against hand-computed values, CSV + JSON reports."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.image import Image
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareTraining.cli import main
from SymmetryAwareTraining.metrics import auc_per_finding, labels_to_regions, segmentation_metrics

A, B, C, D, E, F = (0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 1, 0), (1, 1, 0), (3, 3, 3)


def _labels(assign, shape=(4, 4, 4)):
    out = np.zeros(shape, dtype=np.uint8)
    for voxel, value in assign.items():
        out[voxel] = value
    return out


# truth: ET {A, B}, necrosis {C}, oedema {D, E};  prediction: ET {A}, necrosis {B}, oedema {D, F}
TRUTH = {A: 4, B: 4, C: 1, D: 2, E: 2}
PRED = {A: 4, B: 1, D: 2, F: 2}
# TC: truth {A,B,C}, pred {A,B}: 2*2/(3+2).  WT: truth {A..E}, pred {A,B,D,F}: 2*3/(5+4).
# ET: truth {A,B}, pred {A}: 2*1/(2+1).
EXPECTED_DICE = {"TC": 0.8, "WT": 6 / 9, "ET": 2 / 3}


def test_regions_for_both_brats_conventions():
    truth = _labels(TRUTH)
    regions = labels_to_regions(truth)
    assert regions.shape == (3, 4, 4, 4)
    assert regions[0].sum() == 3 and regions[1].sum() == 5 and regions[2].sum() == 2
    as_2023 = np.where(truth == 4, 3, truth)
    np.testing.assert_array_equal(labels_to_regions(as_2023), regions)
    with pytest.raises(InputError, match="both 3 and 4"):
        labels_to_regions(_labels({A: 3, B: 4}))
    with pytest.raises(InputError, match="unexpected labels"):
        labels_to_regions(_labels({A: 7}))


def test_dice_matches_hand_computation():
    m = segmentation_metrics(labels_to_regions(_labels(PRED)), labels_to_regions(_labels(TRUTH)))
    for region, dice in EXPECTED_DICE.items():
        assert m[region]["dice"] == pytest.approx(dice, abs=1e-6)


def test_hd95_in_mm_and_empty_cases():
    truth = labels_to_regions(_labels({A: 4}))
    pred = labels_to_regions(_labels({(3, 0, 0): 4}))
    m = segmentation_metrics(pred, truth, spacing=(2.0, 1.0, 1.0))
    assert m["ET"]["hd95"] == pytest.approx(6.0)  # 3 voxels along x at 2 mm
    empty = labels_to_regions(_labels({}))
    both_empty = segmentation_metrics(empty, empty)
    assert both_empty["ET"] == {"dice": 1.0, "hd95": 0.0}
    missed = segmentation_metrics(empty, truth)
    assert missed["ET"] == {"dice": 0.0, "hd95": 373.13}  # BraTS: one empty mask
    assert segmentation_metrics(truth, empty)["ET"] == {"dice": 0.0, "hd95": 373.13}


def test_auc_matches_hand_computation():
    # Positive/negative pairs: (0.35 vs 0.1 ok, 0.35 vs 0.4 wrong, 0.8 vs both ok): 3/4.
    auc = auc_per_finding(np.array([[0.1], [0.4], [0.35], [0.8]]), np.array([[0], [0], [1], [1]]), ["bleed"])
    assert auc["bleed"] == pytest.approx(0.75)
    assert np.isnan(auc_per_finding(np.array([[0.1], [0.2]]), np.array([[1], [1]]), ["x"])["x"])


def _case_files(tmp_path):
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    (tmp_path / "preds").mkdir()
    entries = []
    for name, truth, pred, fold in [("good", TRUTH, TRUTH, 0), ("part", TRUTH, PRED, 0), ("other", TRUTH, {}, 1)]:
        write_nifti(Image(_labels(truth), affine), tmp_path / "labels" / f"{name}.nii.gz")
        write_nifti(Image(_labels(pred), affine), tmp_path / "preds" / f"{name}.nii.gz")
        entries.append({"case": name, "image": f"img/{name}.nii.gz", "label": f"labels/{name}.nii.gz",
                        "fold": fold, "findings": {"bleed": int(name != "good"), "fracture": int(name == "part")}})
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": entries}))
    return datalist


def test_evaluate_command_segmentation(tmp_path):
    datalist = _case_files(tmp_path)
    out = tmp_path / "report"
    assert main(["evaluate", "--datalist", str(datalist), "--fold", "0", "--predictions",
                 str(tmp_path / "preds"), "--output", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["case"] for r in rows] == ["good", "part"]  # fold 1's case is not scored
    assert float(rows[0]["WT_dice"]) == pytest.approx(1.0)
    for region, dice in EXPECTED_DICE.items():
        assert float(rows[1][f"{region}_dice"]) == pytest.approx(dice, abs=1e-6)
    report = json.loads((out / "metrics.json").read_text())
    assert report["summary"]["TC"]["dice_mean"] == pytest.approx((1.0 + 0.8) / 2, abs=1e-6)
    assert report["summary"]["TC"]["dice_n"] == 2


def test_evaluate_command_classification(tmp_path, capsys):
    datalist = _case_files(tmp_path)
    scores = tmp_path / "scores.csv"
    scores.write_text("case,bleed,fracture\ngood,0.2,0.1\npart,0.9,0.7\nother,0.5,0.5\n")
    out = tmp_path / "cls"
    assert main(["evaluate", "--datalist", str(datalist), "--fold", "0", "--scores", str(scores),
                 "--output", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["summary"]["auc"] == {"bleed": 1.0, "fracture": 1.0} and report["summary"]["cases"] == 2
    scores.write_text("case,bleed\ngood,0.2\n")
    assert main(["evaluate", "--datalist", str(datalist), "--scores", str(scores), "--output", str(out)]) == 2
    assert "no scores for case part" in capsys.readouterr().err


def test_evaluate_refuses_missing_or_misplaced_predictions(tmp_path, capsys):
    datalist = _case_files(tmp_path)
    (tmp_path / "preds" / "part.nii.gz").unlink()
    args = ["evaluate", "--datalist", str(datalist), "--predictions", str(tmp_path / "preds"), "--output",
            str(tmp_path / "r")]
    assert main(args) == 2
    assert "part" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.csv").exists()
    write_nifti(Image(_labels(PRED), np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "preds" / "part.nii.gz")
    assert main(args) == 2
    assert "grid" in capsys.readouterr().err


def test_card_region_channels_are_in_the_training_order():
    """The network's channel k is region REGIONS[k] in training; the card must say the same.

    A card listing WT before TC makes ``segment_case`` call the whole tumour "core" (the
    first bundled model shipped that way: TC Dice 0.28 on phantoms where it learnt 0.8).
    """
    import numpy as np

    from SymmetryAwareCore.inference.model_source import brats_card_fields, standin_card
    from SymmetryAwareCore.inference.postprocess import labels_from_logits
    from SymmetryAwareTraining.config import RunConfig
    from SymmetryAwareTraining.metrics import REGIONS, labels_to_regions
    from SymmetryAwareTraining.tasks import SegmentationTask

    assert list(brats_card_fields()["postprocessing"]["regions"]) == list(REGIONS) == ["TC", "WT", "ET"]
    config = RunConfig()
    config.model.kwargs = {"in_channels": 4, "out_channels": 3, "feature_size": 12}
    config.data.spacing = [3.0, 3.0, 3.0]
    assert list(SegmentationTask(config).card_metadata()["postprocessing"]["regions"]) == list(REGIONS)

    # Round trip: true labels -> training targets (as logits) -> the card's postprocessing -> labels.
    truth = np.zeros((6, 6, 6), np.uint8)
    truth[1:5, 1:5, 1:5] = 2
    truth[2:4, 2:4, 2:4] = 1
    truth[2, 2, 2] = 4
    logits = np.where(np.asarray(labels_to_regions(truth)), 5.0, -5.0).astype(np.float32)
    np.testing.assert_array_equal(labels_from_logits(logits, standin_card()), truth)


def test_training_card_records_the_datalist_voxel_size(tmp_path):
    """So that ``segment --model runs/X/model.json`` resamples new scans to the trained size:
    the spacing comes from ``data.spacing``, else the datalist, else the first case's header;
    a card never goes without it."""
    import json

    import numpy as np
    import pytest

    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.io.image import Image
    from SymmetryAwareCore.io.writers import write_nifti
    from SymmetryAwareTraining.config import RunConfig
    from SymmetryAwareTraining.tasks import SegmentationTask

    config = RunConfig()
    config.model.kwargs = {"in_channels": 4, "out_channels": 3, "feature_size": 12}
    with pytest.raises(InputError):  # no datalist, no data.spacing: nothing to state
        SegmentationTask(config).card_metadata()
    (tmp_path / "datalist.json").write_text(json.dumps({"spacing_mm": 3.0, "channels": ["t1", "t1ce", "t2", "flair"],
                                                        "training": [{"image": ["a.nii.gz"]}]}))
    config.data.datalist = str(tmp_path / "datalist.json")
    card = SegmentationTask(config).card_metadata()
    assert card["preprocessing"]["spacing"] == [3.0, 3.0, 3.0] and card["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert card["preprocessing"]["normalisation"] == "zscore-nonzero" and card["preprocessing"]["alignment"] == "msp"

    # No spacing stated: the first case's own voxel size, in RAS order (2 x 2.5 x 3 mm).
    write_nifti(Image(np.arange(120, dtype=np.float32).reshape(4, 5, 6), np.diag([2.0, 2.5, 3.0, 1.0])), tmp_path / "b_t1.nii.gz")
    (tmp_path / "plain.json").write_text(json.dumps({"training": [{"image": ["b_t1.nii.gz"] * 4}]}))
    config.data.datalist = str(tmp_path / "plain.json")
    assert SegmentationTask(config).card_metadata()["preprocessing"]["spacing"] == [2.0, 2.5, 3.0]
    config.data.align = False  # an unaligned run says so in its card
    assert SegmentationTask(config).card_metadata()["preprocessing"]["alignment"] == "none"


def test_rank_auc_is_the_roc_area_with_ties_counted_half():
    import torch
    from monai.metrics import compute_roc_auc

    from SymmetryAwareTraining.metrics import rank_auc

    rng = np.random.default_rng(3)
    positive, negative = rng.normal(1.0, 1.0, 40).round(1), rng.normal(0.0, 1.0, 60).round(1)  # rounding: ties
    scores = torch.as_tensor(np.concatenate([positive, negative]))
    targets = torch.as_tensor(np.r_[np.ones(40), np.zeros(60)])
    assert rank_auc(positive, negative) == pytest.approx(float(compute_roc_auc(scores, targets)), abs=1e-12)
    assert rank_auc([2.0, 3.0], [0.0, 1.0]) == 1.0 and rank_auc([0.0], [1.0]) == 0.0
    assert rank_auc([1.0, 1.0], [1.0]) == 0.5  # all tied: chance
    assert np.isnan(rank_auc([], [1.0])) and np.isnan(rank_auc([1.0], []))
