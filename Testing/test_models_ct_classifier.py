"""A CT haemorrhage classifier card: `classify` by name, `segment` refuses it, listings.

These tests use a classifier with random weights and the card the bundling script writes
(ct-windows, one finding), installed as a user model through ``$SYMMETRYAWARE_MODELS``, so the
card path is tested apart from any trained weights; the shipped lesion-map classifier is
tested in ``test_bundled_ct_classifier.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.contract import card_findings
from SymmetryAwareCore.inference.model_source import find_model_card, list_models, resolve_model
from SymmetryAwareCore.models import SASwinClassifier
from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, read_card, save_model
from SymmetryAwareCore.phantoms import make_subject
from SymmetryAwareCore.phantoms.dataset import write_case
from SymmetryAwareCore.preprocessing import Preprocessing

NAME = "ct-haemorrhage-test-classifier"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A user model folder holding one random-weight CT classifier card."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    network = SASwinClassifier(in_channels=3, out_channels=1, feature_size=12)
    card = ModelCard(
        channels=[InputChannel("ct", ["*_ct.*", "*ct*"])],
        modality="CT",
        name=NAME,
        description="random weights, for tests. NOT FOR CLINICAL USE.",
        preprocessing={"spacing": [3.0] * 3, "roi_size": [64] * 3, "normalisation": "ct-windows", "alignment": "msp",
                       "anti_alias": True, "ct_windows": [[0.0, 80.0], [-20.0, 180.0], [-800.0, 2000.0]]},
        postprocessing={"activation": "sigmoid", "findings": ["haemorrhage"]},
        extra={"findings": ["haemorrhage"], "limits": "random weights. NOT FOR CLINICAL USE."},
    )
    save_model(network, folder / "ct_test.safetensors", card)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYMMETRYAWARE_MODELS", str(folder))
        yield folder


@pytest.fixture(scope="module")
def card(models_dir):
    return read_card(find_model_card(NAME))


@pytest.fixture(scope="module")
def ct_case(tmp_path_factory):
    """A small CT haemorrhage phantom (4 mm, tilted, with skull) written as ``case_ct.nii.gz``."""
    folder = tmp_path_factory.mktemp("ct")
    phantom = make_subject(21, "haemorrhage", "ct", 4.0, "unilateral")
    return write_case(phantom, folder, "case")["ct"]


def test_card_loads_and_is_a_ct_windows_classifier(models_dir, card):
    model = resolve_model(NAME)  # hash and keys checked
    spec = Preprocessing.from_card(card.preprocessing)
    assert spec.normalisation == "ct-windows" and len(spec.ct_windows) == 3
    assert [c.name for c in card.channels] == ["ct"] and card.modality == "CT"
    assert card.kwargs["in_channels"] == spec.network_channels(1) == 3
    assert card_findings(card) == ("haemorrhage",) and card.kwargs["out_channels"] == 1
    assert spec.roi_size == (64, 64, 64) and spec.spacing == (3.0, 3.0, 3.0)
    assert model.network.swinViT.patch_embed.proj.weight.shape[1] == 3


def test_classify_by_name_writes_a_probability(models_dir, ct_case, tmp_path, capsys):
    out = tmp_path / "findings.json"
    assert main(["classify", str(ct_case), "--model", NAME, "--device", "cpu", "--output", str(out)]) == 0
    (result,) = json.loads(out.read_text()).values()
    p = result["probabilities"]["haemorrhage"]
    assert 0.0 <= p <= 1.0
    assert result["model"]["name"] == NAME and result["model"]["untrained"] is False
    assert "haemorrhage" in capsys.readouterr().out


def test_segment_refuses_the_classifier_in_one_line(models_dir, ct_case, tmp_path, capsys):
    assert main(["segment", str(ct_case), "--model", NAME, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "scan-level classifier" in err and "symmetryaware classify" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "case").exists()


def test_listed_by_name_and_the_default_is_still_the_segmentation_model(models_dir):
    rows = {row["name"]: row for row in list_models()}
    assert rows[NAME]["inputs"] == ["ct"]
    assert not card_findings(read_card(find_model_card("default")))


def test_slicer_model_list_shows_it_after_the_segmentation_models(models_dir):
    sys.path.insert(0, str(ROOT / "SymmetryAwareSeg"))
    try:
        from SymmetryAwareSegLib.models import find_models
    finally:
        sys.path.remove(str(ROOT / "SymmetryAwareSeg"))
    cards = find_models([models_dir, ROOT / "SymmetryAwareCore" / "data" / "models"])
    names = [c.name for c in cards]
    assert NAME in names and not cards[0].findings  # the panel's default stays a segmentation model
    ct = cards[names.index(NAME)]
    assert ct.findings == ("haemorrhage",)
    # A mean-pooling classifier gives probabilities only; Apply runs it (no map promised).
    assert "Apply gives one probability per finding, no segmentation" in ct.describe()
