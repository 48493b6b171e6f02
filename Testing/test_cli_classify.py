"""`symmetryaware classify`: scan-level findings from a real (small, untrained) SA-Swin classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.geometry.rigid import reorient_to
from SymmetryAwareCore.inference.classify import classify_case
from SymmetryAwareCore.inference.model_source import LoadedModel
from SymmetryAwareCore.io.readers import read_image
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.models.model_card import load_model
from SymmetryAwareCore.models.sa_swin_classifier import SASwinClassifier
from SymmetryAwareCore.phantoms import sample_case_paths

FINDINGS = ["glioma", "midline shift", "haemorrhage"]


@pytest.fixture(scope="module")
def classifier_card(tmp_path_factory, save_classifier):
    torch.manual_seed(3)
    return save_classifier(SASwinClassifier(in_channels=4, out_channels=3, feature_size=12),
                           tmp_path_factory.mktemp("c") / "cls.safetensors", FINDINGS, "tiny-classifier")


def _sample_paths():
    paths = sample_case_paths()
    return [paths[c] for c in ("t1", "t1ce", "t2", "flair")]


def test_probabilities_do_not_depend_on_storage_orientation(classifier_card, tmp_path):
    network, card = load_model(classifier_card)
    model = LoadedModel(network, card, str(classifier_card))
    ras = classify_case(_sample_paths(), model, device="cpu")
    assert list(ras["probabilities"]) == FINDINGS
    assert all(0.0 <= p <= 1.0 for p in ras["probabilities"].values())
    lps_paths = []
    for path in _sample_paths():
        out = tmp_path / path.name.replace("sample_glioma", "lps")
        write_nifti(reorient_to(read_image(path), "LPS"), out)
        lps_paths.append(out)
    lps = classify_case(lps_paths, model, device="cpu")
    # The plane is estimated afresh on each storage order and differs by ~0.07 degrees (the
    # search's sampling follows the array order), which moves a random-weight classifier's
    # output by a few thousandths; a lost or wrong flip would move it by far more.
    np.testing.assert_allclose(list(lps["probabilities"].values()), list(ras["probabilities"].values()), atol=5e-3)


def test_cli_writes_json_and_refuses_a_segmentation_model(classifier_card, tmp_path, capsys):
    out = tmp_path / "findings.json"
    assert main(["classify", *map(str, _sample_paths()), "--model", str(classifier_card), "--device", "cpu", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert list(data["sample_glioma"]["probabilities"]) == FINDINGS
    assert "glioma" in capsys.readouterr().out
    assert main(["classify", *map(str, _sample_paths()), "--model", "untrained-standin"]) == 2
    assert "not a scan-level classifier" in capsys.readouterr().err
    assert main(["classify", *map(str, _sample_paths()), "--model", str(classifier_card), "--output", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
