"""The bundled interactive model (interactive-glioma-saswin-f12) on the bundled sample case.

What a user gets from `symmetryaware interactive` with no model named: the two-stage model
(the bundled automatic SA-Swin as backbone, its SHA-256 pinned in the card, and the trained
click refiner). The assertions are on behaviour that a model ignoring its clicks would fail.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.interactive.clicker import deepest_point, dice
from SymmetryAwareCore.phantoms import sample_case_paths


@pytest.fixture(scope="module")
def session():
    from SymmetryAwareCore.interactive.session import InteractiveSession

    paths = sample_case_paths()
    s = InteractiveSession(threads=2)
    reply = s.load([str(paths[c]) for c in ("flair", "t1", "t1ce", "t2")])  # no model: the bundled one
    label = nib.load(str(paths["label"]))
    return s, reply, label, np.asarray(label.dataobj) > 0


def _ras(label, voxel):
    return (label.affine @ np.append(voxel, 1.0))[:3].tolist()


def test_the_default_interactive_model_is_the_bundled_two_stage_model(session):
    from SymmetryAwareCore.inference.model_source import resolve_model

    s, reply, _, _ = session
    assert reply["model"] == "interactive-glioma-saswin-f12" and reply["plane_confidence"]
    block = s.model.card.extra["interactive"]
    backbone = resolve_model("glioma-phantom-saswin-f12")
    assert block["backbone"] == "glioma_phantom_saswin_f12.json" and block["backbone_sha256"] == backbone.card.sha256
    assert s._backbone.card.sha256 == backbone.card.sha256
    assert s.model.card.metrics, "the card must carry its benchmark figures"
    # Its card asks for N4 first (0.3.0, docs/interactive.md), as the default segmentation model's.
    assert s.model.card.preprocessing["bias_correction"] == "n4" and reply["bias_correction"] == "n4"
    assert s.model.card.metrics["bias_correction_n4"]["sets"]


def test_one_click_from_an_empty_mask_gives_the_lesion(session):
    s, _, label, truth = session
    s.reset()
    assert s.mask.sum() == 0
    s.click(_ras(label, deepest_point(truth)), True)
    assert dice(s.mask, truth) > 0.80


def test_clicks_repair_a_low_contrast_lesion_the_automatic_pass_misses(tmp_path):
    """Lesion contrast 0.4 (a phantom of the kind held out in the benchmark, seed 7): loaded
    without bias correction the automatic pass is poor; five clicks of the simulated annotator
    must raise Dice by > 0.1 (a model that ignored its clicks would stay where the automatic
    pass is). With N4 first, as the card asks, the automatic pass is better."""
    from SymmetryAwareCore.interactive.clicker import next_click
    from SymmetryAwareCore.interactive.session import InteractiveSession
    from SymmetryAwareCore.io.writers import write_nifti
    from SymmetryAwareCore.phantoms.generator import make_subject

    phantom = make_subject(7, "glioma", "mri", spacing=3.0, scenario="unilateral", lesion_contrast=0.4, variation=2.0)
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        path = tmp_path / f"low_{name}.nii.gz"
        write_nifti(phantom.image.channel(c), path)
        paths.append(str(path))
    truth, affine = np.isin(phantom.label.array, (1, 2, 4)), phantom.label.affine
    s = InteractiveSession(threads=2)
    s.load(paths)  # the card asks for N4 first: the automatic pass finds this lesion
    s.auto()
    corrected = dice(s.mask, truth)
    # Without N4 (load's bias_correction false) the automatic pass is poor: the clicks must repair it.
    s.load(paths, bias_correction=False)
    s.auto()
    scores = [dice(s.mask, truth)]
    assert corrected > scores[0] + 0.1, (corrected, scores[0])
    for _ in range(5):
        click = next_click(s.mask, truth)
        s.click((affine @ np.append(click.voxel, 1.0))[:3].tolist(), click.positive)
        scores.append(dice(s.mask, truth))
    assert scores[0] < 0.75 and scores[-1] > scores[0] + 0.1, scores


def test_auto_then_clicks_does_not_get_worse(session):
    from SymmetryAwareCore.interactive.clicker import next_click

    s, _, label, truth = session
    s.auto()
    scores = [dice(s.mask, truth)]
    assert scores[0] > 0.85
    for _ in range(3):
        click = next_click(s.mask, truth)
        s.click(_ras(label, click.voxel), click.positive)
        scores.append(dice(s.mask, truth))
    assert max(scores[1:]) >= scores[0] - 0.01, scores
