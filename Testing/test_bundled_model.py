"""The bundled glioma model on the bundled sample, as `symmetryaware segment --sample` runs it.

One ``segment_case`` run (the README's main job, about half a minute on 2 cores) feeds every
test: the segmentation is good, and the mirror-focus map is made of a SACA stage fine enough
to show anatomy (issue #17: with SACA only at the bottleneck the map was one value
everywhere).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.geometry.mirror import mirror_points_ras
from SymmetryAwareCore.inference.model_source import resolve_model
from SymmetryAwareCore.inference.pipeline import OUTPUT_FILES, SegmentOptions, segment_case
from SymmetryAwareCore.phantoms import sample_case_paths

CHANNELS = ("t1", "t1ce", "t2", "flair")


@pytest.fixture(scope="module")
def model():
    return resolve_model(None)


@pytest.fixture(scope="module")
def run(model, tmp_path_factory):
    paths = sample_case_paths()
    out = tmp_path_factory.mktemp("sample")
    result = segment_case([paths[c] for c in CHANNELS], out, model, SegmentOptions(device="cpu", overview=False),
                          case_id="sample_glioma")
    return paths, result


def test_bundled_model_has_a_saca_stage_finer_than_the_bottleneck(model):
    network = model.network
    assert network.attention_stage is not None and network.attention_stage < 4
    extra = model.card.extra
    assert extra["attention"]["map_stage"] == network.attention_stage
    assert extra["attention"]["token_voxels"] == network.attention_token_stride


def test_sample_segmentation_is_good(run):
    paths, result = run
    pred = np.asarray(nib.load(str(result.output_dir / OUTPUT_FILES["labelmap"])).dataobj)
    truth = np.asarray(nib.load(str(paths["label"])).dataobj)
    whole = lambda a: a > 0  # noqa: E731
    dice = 2 * np.sum(whole(pred) & whole(truth)) / (np.sum(whole(pred)) + np.sum(whole(truth)))
    assert dice > 0.85, dice


def test_the_default_corrects_the_bias_field_first_because_its_card_asks(model, run):
    """The default's card asks for N4 (0.6.0): `segment` without any option runs it, and says so."""
    _, result = run
    assert model.card.preprocessing.get("bias_correction") == "n4"
    assert result.report["inference"]["bias_correction"] == "n4"
    assert any("as the model card's preprocessing asks" in note for note in result.report["notes"])


def test_mirror_focus_varies_in_the_head_is_zero_outside_and_sides_differ(run):
    paths, result = run
    image = nib.load(str(paths["flair"]))
    focus_image = nib.load(str(result.output_dir / OUTPUT_FILES["attention"]))
    assert focus_image.shape == image.shape
    np.testing.assert_allclose(focus_image.affine, image.affine, atol=1e-5)
    focus = np.asarray(focus_image.get_fdata())
    head = np.asarray(image.dataobj) != 0
    assert np.all(focus[~head] == 0)
    inside = focus[head]
    assert inside.std() / inside.mean() > 0.05  # not one value everywhere (0 with the bottleneck-only model)

    # The lesion against its contralateral mirror region, through the plane the run wrote.
    truth = np.asarray(nib.load(str(paths["label"])).dataobj) > 0
    report = json.loads((result.output_dir / OUTPUT_FILES["report"]).read_text())
    plane = report["msp"]
    assert plane["confident"] and plane["channel"] == 0  # fitted on t1, the first channel
    lesion_ijk = np.argwhere(truth)
    lesion_ras = nib.affines.apply_affine(image.affine, lesion_ijk)
    mirror_ras = mirror_points_ras(lesion_ras, np.asarray(plane["normal"]), np.asarray(plane["point"]))
    mirror_ijk = np.round(nib.affines.apply_affine(np.linalg.inv(image.affine), mirror_ras)).astype(int)
    keep = np.all((mirror_ijk >= 0) & (mirror_ijk < np.array(image.shape)), axis=1)
    mirror = np.zeros_like(truth)
    mirror[tuple(mirror_ijk[keep].T)] = True
    mirror &= head & ~truth
    assert mirror.sum() > 100
    lesion_mean, mirror_mean = focus[truth & head].mean(), focus[mirror].mean()
    spread = inside.std()
    assert abs(lesion_mean - mirror_mean) > 0.25 * spread, (lesion_mean, mirror_mean, spread)
    summary = report["attention"]
    assert summary["saca_stage"] < 4
    assert report["inference"]["pairing"] == "input"  # the bundled model predates mirror-pair training


def test_bundled_model_writes_a_zero_shot_score_and_map_on_the_input_grid(model, run):
    """The bundled model carries a trained symmetry head (docs/asymmetry_benchmark.md), so the
    report has a score and the map lies on the input's grid, 0 outside the head."""
    from SymmetryAwareCore.inference.zero_shot import SYMMETRY_HEAD_KEY

    paths, result = run
    assert model.card.extra.get(SYMMETRY_HEAD_KEY)
    report = json.loads((result.output_dir / OUTPUT_FILES["report"]).read_text())
    zero_shot = report["zero_shot_asymmetry"]
    assert zero_shot is not None, report.get("zero_shot_asymmetry_reason")
    assert 0.0 <= zero_shot["score"] <= 1.0
    assert zero_shot["map"] == OUTPUT_FILES["zero_shot"] and zero_shot["head"]["sha256"]
    # The head was trained on uncorrected scans; the default prepares with N4: the report says
    # so and points to the head's figures measured on N4-corrected scans (its card).
    assert "bias correction none, this scan with n4" in zero_shot["head"]["note"]
    assert "metrics.zero_shot_by_bias_correction.n4" in zero_shot["head"]["note"]
    image = nib.load(str(paths["flair"]))
    zs_image = nib.load(str(result.output_dir / OUTPUT_FILES["zero_shot"]))
    assert zs_image.shape == image.shape
    np.testing.assert_allclose(zs_image.affine, image.affine, atol=1e-5)
    values = np.asarray(zs_image.get_fdata())
    head = np.asarray(image.dataobj) != 0
    assert np.all(values[~head] == 0)
    assert np.all((values >= 0) & (values <= 1)) and values[head].max() > 0
