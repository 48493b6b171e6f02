"""Zero-shot asymmetry in the product: a model whose card names a symmetry head gets a score
in report.json and a map on the input grid; without a head the report says null and why.

The segmentation network is the transparent bright-FLAIR test double of the pipeline tests;
the head is a small random SASwinPretrainer (feature size 12) saved with its card, which is
what the product needs (a trained head behaves the same way, with meaningful numbers).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from SymmetryAwareCore.contract import OUTPUT_FILES
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.inference.model_source import LoadedModel, standin_card
from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case
from SymmetryAwareCore.inference.zero_shot import SymmetryHead, zero_shot_asymmetry
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, save_model
from SymmetryAwareCore.models.symmetry_head import SASwinPretrainer
from SymmetryAwareCore.phantoms import make_subject

class BrightFlairNet(torch.nn.Module):
    """Logits of the three BraTS regions = 8 * (z-scored FLAIR - 2): bright FLAIR is lesion."""

    use_saca = False

    def forward_features(self, x):
        return [x]

    def forward_head(self, features, features_counterpart, return_attention=False):
        return (8.0 * (features[0][:, 3:4] - 2.0)).repeat(1, 3, 1, 1, 1)

PRE = {"spacing": [3.0, 3.0, 3.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
CHANNELS = ("t1", "t1ce", "t2", "flair")
# The head reads the whole brain box resized to its own roi_size; 32^3 (one bottleneck token)
# keeps these CPU tests short.
HEAD_PRE = dict(PRE, roi_size=[32, 32, 32])


def _head(folder, name="head", preprocessing=HEAD_PRE):
    torch.manual_seed(0)
    net = SASwinPretrainer(in_channels=4, feature_size=12).eval()
    card = ModelCard(channels=[InputChannel(c) for c in CHANNELS], modality="mri", preprocessing=dict(preprocessing),
                     name="random-test-head")
    return save_model(net, folder / f"{name}.safetensors", card), net


def _model(folder, head_name=None) -> LoadedModel:
    card = standin_card()
    card.name = "bright-flair-test-double"
    card.preprocessing = dict(PRE)
    if head_name is not None:
        card.extra = {"symmetry_head": head_name}
    card_path = folder / "model.json"
    card_path.write_text(json.dumps(card.to_dict()))  # the head's card is looked for beside it
    return LoadedModel(BrightFlairNet(), card, str(card_path))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    phantom = make_subject(7, "glioma", "mri", spacing=3.0, orientation="LPS")
    folder = tmp_path_factory.mktemp("case")
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        paths.append(write_nifti(phantom.image.channel(c), folder / f"p007_{name}.nii.gz"))
    return phantom, paths


def test_symmetric_box_scores_zero_and_an_asymmetric_one_more():
    torch.manual_seed(0)
    head = SymmetryHead(SASwinPretrainer(in_channels=4, feature_size=12).eval(), (32, 32, 32), {})
    rng = np.random.default_rng(0)
    half = rng.normal(size=(4, 20, 40, 36)).astype(np.float32)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)  # mirror-symmetric about the box centre
    score, box_map = zero_shot_asymmetry(symmetric, head)
    assert box_map.shape == symmetric.shape[1:]
    assert score == pytest.approx(0.0, abs=1e-5) and box_map.max() < 1e-4
    lopsided = symmetric.copy()
    lopsided[:, :12] += 3.0  # one side brighter
    score2, map2 = zero_shot_asymmetry(lopsided, head)
    assert 0.0 < score2 <= 1.0 and map2.max() > 1e-3


def test_model_with_a_head_reports_a_score_and_writes_the_map_on_the_input_grid(case, tmp_path):
    phantom, paths = case
    _head(tmp_path)
    model = _model(tmp_path, "head.json")
    result = segment_case(paths, tmp_path / "out", model, SegmentOptions(device="cpu", overview=False))
    zs = result.report["zero_shot_asymmetry"]
    assert zs is not None and 0.0 <= zs["score"] <= 1.0
    assert zs["map"] == OUTPUT_FILES["zero_shot"] and zs["head"]["card"] == "head.json"
    assert "note" not in zs["head"]  # the scan was prepared as the head's training scans were
    assert result.report["zero_shot_asymmetry_reason"] is None
    image = nib.load(str(result.output_dir / OUTPUT_FILES["zero_shot"]))
    assert image.shape == phantom.image.spatial_shape
    np.testing.assert_allclose(image.affine, phantom.image.affine, atol=1e-5)
    values = np.asarray(image.dataobj, np.float32)
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.max() > 0.0
    # Nothing outside the head (the skull-stripped phantom is 0 there).
    outside = phantom.image.array.max(axis=0) == 0
    far_outside = outside & (np.asarray(nib.load(str(paths[0])).dataobj) == 0)
    assert values[far_outside].mean() < 0.05 * values[~outside].mean()
    on_disk = json.loads((result.output_dir / OUTPUT_FILES["report"]).read_text())
    assert on_disk["zero_shot_asymmetry"]["score"] == zs["score"]


def test_model_without_a_head_keeps_the_score_null_and_says_why(case, tmp_path):
    _, paths = case
    result = segment_case(paths, tmp_path / "out", _model(tmp_path), SegmentOptions(device="cpu", overview=False))
    assert result.report["zero_shot_asymmetry"] is None
    assert "names no symmetry head" in result.report["zero_shot_asymmetry_reason"]
    assert not (result.output_dir / OUTPUT_FILES["zero_shot"]).exists()


@pytest.mark.parametrize("problem, words", [("missing", "not found"), ("spacing", "spacing"), ("name", "file name")])
def test_a_named_but_unusable_head_is_refused_before_any_work(case, tmp_path, problem, words):
    _, paths = case
    if problem == "spacing":
        _head(tmp_path, preprocessing=dict(HEAD_PRE, spacing=[2.0, 2.0, 2.0]))
    model = _model(tmp_path, "../head.json" if problem == "name" else "head.json")
    with pytest.raises(InputError, match=words):
        segment_case(paths, tmp_path / "out", model, SegmentOptions(device="cpu", overview=False))
    assert not (tmp_path / "out").exists()


def test_a_head_card_beside_models_is_not_a_model(tmp_path, monkeypatch):
    """A symmetry head lies beside its segmentation model's card; listing, the default model
    and a folder path must still find the model only (the head's name sorts first here)."""
    from SymmetryAwareCore.inference import model_source

    _head(tmp_path, name="a_head")
    _model(tmp_path, head_name="a_head.json")
    monkeypatch.setattr(model_source, "BUNDLED_DIR", tmp_path)
    monkeypatch.setattr(model_source, "user_model_dir", lambda: tmp_path / "none")
    assert [p.name for p in model_source._cards_in(tmp_path)] == ["model.json"]
    assert model_source.find_model_card(None).name == "model.json"
    assert model_source.find_model_card(str(tmp_path)).name == "model.json"
    assert "random-test-head" not in [row["name"] for row in model_source.list_models()]
    # The Slicer panel's own list (torch-free) follows the same rule.
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "SymmetryAwareSeg"))
    try:
        from SymmetryAwareSegLib.models import find_models
    finally:
        sys.path.remove(str(root / "SymmetryAwareSeg"))
    assert [c.path.name for c in find_models([tmp_path])] == ["model.json"]


def test_a_scan_prepared_with_another_bias_correction_than_the_heads_is_flagged():
    from SymmetryAwareCore.inference.zero_shot import SymmetryHead

    head = SymmetryHead(None, (64, 64, 64), {"name": "h"}, "none")
    assert head.describe_for(None) == {"name": "h"} and head.describe_for("none") == {"name": "h"}
    assert "trained on scans prepared with bias correction none, this scan with n4" in head.describe_for("n4")["note"]
    assert head.describe == {"name": "h"}  # the head's own record is not changed


def test_a_scan_prepared_as_the_heads_figures_measured_apart_points_to_them():
    from SymmetryAwareCore.inference.zero_shot import MEASURED_APART_KEY, SymmetryHead

    head = SymmetryHead(None, (64, 64, 64), {"name": "h"}, "none", ("n4",))
    note = head.describe_for("n4")["note"]
    assert f"metrics.{MEASURED_APART_KEY}.n4" in note and "does not cover" not in note
    assert head.describe_for("none") == {"name": "h"}


def _benchmark(sha: str, correction: str, low: float) -> dict:
    row = {"group": "unilateral", "contrast": 1.0, "method": "sah", "auc": 0.9, "auc_ci": [low, 0.99],
           "auc_vs_asymmetric": 0.9, "auc_vs_asymmetric_ci": [low, 0.99], "local_auc": 0.7,
           "n_lesion": 50, "n_healthy": 50, "n_asymmetric": 25}
    return {"table": [row, dict(row, method="intensity")], "args": {"seed": 9100, "variation": 2.0},
            "preprocessing": {"bias_correction": correction}, "pretrainer_sha256": sha}


def test_figures_measured_on_n4_scans_are_added_to_the_heads_card_and_reach_the_report(tmp_path):
    """bundle_symmetry_head.py --add-to: the bundled head's card gains N4 figures, weights
    untouched; a loaded head then knows them. Wrong head, same correction or an AUC at chance is refused."""
    import shutil

    from conftest import import_training_script

    from SymmetryAwareCore.contract import BUNDLED_MODELS_DIR
    from SymmetryAwareCore.inference.zero_shot import MEASURED_APART_KEY, load_symmetry_head
    from SymmetryAwareCore.models.model_card import read_card, verify_weights
    from SymmetryAwareCore.preprocessing import Preprocessing

    for f in ("glioma_phantom_sah_f12.json", "glioma_phantom_sah_f12.safetensors",
              "glioma_phantom_saswin_f12_faint.json", "glioma_phantom_saswin_f12_faint.safetensors"):
        shutil.copy(BUNDLED_MODELS_DIR / f, tmp_path / f)
    head_card = tmp_path / "glioma_phantom_sah_f12.json"
    sha = read_card(head_card).sha256
    bundle = import_training_script("bundle_symmetry_head")
    bench = tmp_path / "n4.json"
    before = head_card.read_text()
    for bad, why in ((_benchmark("0" * 64, "n4", 0.8), "not all measured with this head"),
                     (_benchmark(sha, "none", 0.8), "other than the head's own"),
                     (_benchmark(sha, "n4", 0.45), "not clearly above chance"),
                     ({"table": "x"}, "must be asymmetry_benchmark.py --json files")):
        bench.write_text(json.dumps(bad))
        with pytest.raises(SystemExit, match=why):
            bundle.main(["--add-to", str(head_card), "--benchmark", str(bench), "--version", "0.1.1"])
        assert head_card.read_text() == before  # nothing half-written
    bench.write_text(json.dumps(_benchmark(sha, "n4", 0.8)))
    version = read_card(head_card).version
    assert bundle.main(["--add-to", str(head_card), "--benchmark", str(bench)]) == 0
    assert read_card(head_card).version == version  # kept when --version is not given
    assert bundle.main(["--add-to", str(head_card), "--benchmark", str(bench), "--version", "0.1.9"]) == 0
    card = read_card(head_card)
    assert card.version == "0.1.9" and card.sha256 == sha and verify_weights(head_card)
    added = card.metrics[MEASURED_APART_KEY]["n4"]
    assert added["unilateral"]["1"]["scan_auc_ci95"] == [0.8, 0.99] and "--bias-correction n4" in added["evaluated_on"]
    assert card.metrics["zero_shot"] == json.loads(before)["metrics"]["zero_shot"]  # the own figures kept
    model_card_path = tmp_path / "glioma_phantom_saswin_f12_faint.json"
    model_card = read_card(model_card_path)
    spec = Preprocessing.from_card(model_card.preprocessing, source="test")
    head, reason = load_symmetry_head(model_card, model_card_path, spec, 4)
    assert reason is None and head.measured_apart == ("n4",)
    assert f"metrics.{MEASURED_APART_KEY}.n4" in head.describe_for("n4")["note"]
