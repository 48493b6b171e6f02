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


def test_clicks_build_the_lesion_and_change_it_where_they_say(session):
    s, _, label, truth = session
    s.reset()
    first = deepest_point(truth)
    s.click(_ras(label, first), True)
    after_one = dice(s.mask, truth)
    assert after_one > 0.80, after_one
    before = s.mask.copy()
    # A negative click at the lesion's deepest point must carve out a region around it (a model
    # that ignored its clicks would leave the mask as it was).
    s.click(_ras(label, first), False)
    removed = before.astype(bool) & ~s.mask.astype(bool)
    assert not s.mask[first] and removed.sum() > 50
    s.undo()
    np.testing.assert_array_equal(s.mask, before)


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
