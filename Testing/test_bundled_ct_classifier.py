"""The shipped CT haemorrhage classifier (ct-haemorrhage-phantom-saswin-f12) on fresh phantoms.

Subjects drawn here with seeds far from the training and held-out sets: scans with a large,
dense bleed must score above healthy scans, and the lesion map, written on the input's grid
by ``classify --maps``, must peak at the bleed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.contract import finding_map_file
from SymmetryAwareCore.inference.model_source import resolve_model
from SymmetryAwareCore.io.readers import read_image
from SymmetryAwareCore.phantoms import make_subject
from SymmetryAwareCore.phantoms.dataset import write_case

NAME = "ct-haemorrhage-phantom-saswin-f12"


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    bleeds, healthy = {}, {}
    for seed in (90001, 90002):
        bleed = make_subject(seed, "haemorrhage", "ct", 3.0, "unilateral", bleed_radius_mm=(12.0, 14.0),
                             bleed_hu=(68.0, 72.0))
        bleeds[seed] = write_case(bleed, folder, f"bleed{seed}")
        healthy[seed] = write_case(make_subject(seed, "healthy", "ct", 3.0, "healthy"), folder, f"healthy{seed}")
    return bleeds, healthy


def test_the_card_is_a_lesion_map_classifier_with_its_held_out_figures():
    model = resolve_model(NAME)
    assert model.card.kwargs["pooling"] == "lesion" and model.card.kwargs["pairing"] == "mirror-pair"
    metrics = model.card.metrics
    assert metrics["auc_ci95"]["haemorrhage"][0] > 0.5  # the shipping rule, recorded in the card
    assert len(metrics["cases"]) == 100


def _classify(path, tmp_path, maps=None):
    out = tmp_path / f"{path.name}.json"
    args = ["classify", str(path), "--model", NAME, "--device", "cpu", "--output", str(out)]
    assert main(args + (["--maps", str(maps)] if maps else [])) == 0
    (case, result), = json.loads(out.read_text()).items()
    return case, result["probabilities"]["haemorrhage"]


def test_a_large_bleed_outscores_healthy_scans_and_its_map_peaks_at_it(scans, tmp_path):
    bleeds, healthy = scans
    maps = tmp_path / "maps"
    for seed in bleeds:
        case, p_bleed = _classify(bleeds[seed]["ct"], tmp_path, maps)
        _, p_healthy = _classify(healthy[seed]["ct"], tmp_path)
        assert p_bleed > p_healthy
        label = read_image(bleeds[seed]["label"]).array > 0
        heat = read_image(maps / finding_map_file(case, "haemorrhage"))
        peak = np.unravel_index(int(np.argmax(heat.array)), heat.spatial_shape)
        centre = np.argwhere(label).mean(axis=0)
        spacing = np.linalg.norm(heat.affine[:3, :3], axis=0)
        assert np.linalg.norm((np.asarray(peak) - centre) * spacing) < 20.0  # mm from the bleed's centre
