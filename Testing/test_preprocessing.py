"""The one preprocessing path: the card's block, training = inference, labels decided on the
input grid, CT outside-the-scan as air, anti-aliasing when downsampling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.image import Image
from SymmetryAwareCore.io.readers import read_labelmap
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.preprocessing import Preprocessing, prepare_case, prepare_image
from SymmetryAwareCore.preprocessing.prepare import unaligned_plane

SAMPLE = Path(__file__).resolve().parents[1] / "SymmetryAwareCore" / "data" / "sample"
CHANNELS = ["t1", "t1ce", "t2", "flair"]


def _sample_paths():
    return [SAMPLE / f"sample_glioma_{c}.nii.gz" for c in CHANNELS]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


@pytest.fixture(autouse=True)
def _prepared_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMMETRYAWARE_CACHE", str(tmp_path / "prepared"))


# -- the card's block --------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["spacing", "roi_size", "normalisation"])
def test_card_without_what_preparation_needs_is_refused(missing):
    block = {"spacing": [3, 3, 3], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    del block[missing]
    with pytest.raises(InputError, match=f"lacks preprocessing.{missing}"):
        Preprocessing.from_card(block, source="m")


@pytest.mark.parametrize("block, words", [
    ({"spacing": [3, 3, 1e6], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}, "spacing"),
    ({"spacing": [3, 3, 3], "roi_size": [1e6] * 3, "normalisation": "zscore-nonzero"}, "roi_size"),
    ({"spacing": [3, 3, 3], "roi_size": [64, 64, 64], "normalisation": "ct-windows"}, "ct_windows"),
    ({"spacing": [3, 3, 3], "roi_size": [64, 64, 64], "normalisation": "magic"}, "normalisation"),
    ({"spacing": [3, 3, 3], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero", "alignment": "tilt"}, "alignment"),
    ({"spacing": [3, 3, 3], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero", "bias_correction": "n3"}, "bias_correction"),
    ({"spacing": [3, 3, 3], "roi_size": [64, 64, 64], "normalisation": "ct-windows", "ct_windows": [[0, 80]],
      "bias_correction": "n4"}, "bias_correction is for MRI"),
])
def test_absurd_card_values_are_one_line_errors(block, words):
    with pytest.raises(InputError, match=words):
        Preprocessing.from_card(block)


def test_card_block_round_trips_and_reads_older_cards():
    spec = Preprocessing(spacing=(3, 3, 3), roi_size=(64, 64, 64), normalisation="ct-windows",
                         ct_windows=((0, 80), (-800, 2000)))
    assert Preprocessing.from_card(spec.to_card()) == spec
    assert spec.network_channels(1) == 2 and spec.fill == -1024.0
    old = Preprocessing.from_card({"spacing": [2, 2, 2], "roi_size": [64] * 3, "normalisation": "ct-window", "align_to_msp": False})
    assert old.ct_windows == ((-100.0, 200.0),) and old.alignment == "none"


def test_bias_correction_in_the_card_block_only_when_asked_for():
    """A card that asks for N4 says so and reads back; one that does not has no key (cards and
    preparation caches from before the field keep their content), and reads as "none"."""
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard

    plain = Preprocessing(spacing=(3, 3, 3), roi_size=(64, 64, 64), normalisation="zscore-nonzero")
    assert plain.bias_correction == "none" and "bias_correction" not in plain.to_card()
    n4 = plain.replace(bias_correction="n4")
    assert n4.to_card()["bias_correction"] == "n4" and Preprocessing.from_card(n4.to_card()) == n4
    card = ModelCard(channels=[InputChannel("t1")], modality="MRI", preprocessing={**n4.to_card(), "bias_correction": "n5"})
    with pytest.raises(InputError, match="unknown preprocessing.bias_correction 'n5'"):
        card.check()


def test_segment_refuses_a_card_without_spacing_before_reading_the_scan(tmp_path):
    from SymmetryAwareCore.inference.model_source import resolve_model
    from SymmetryAwareCore.inference.pipeline import segment_case

    model = resolve_model("untrained-standin")
    model.card = dataclasses.replace(model.card, preprocessing={"roi_size": [64] * 3, "normalisation": "zscore-nonzero"})
    with pytest.raises(InputError, match="lacks preprocessing.spacing"):
        segment_case([tmp_path / "does_not_exist.nii.gz"] * 4, tmp_path / "out", model)
    assert not (tmp_path / "out").exists()


# -- training prepares exactly what inference prepares --------------------------------------


def test_training_and_inference_prepare_identical_arrays():
    """The dataset's cached case and ``segment``'s prepared case: one code path, equal arrays."""
    from SymmetryAwareCore.inference.model_source import resolve_model
    from SymmetryAwareCore.inference.pipeline import model_preprocessing, prepare_for_model
    from SymmetryAwareTraining.data import PreparedCases

    model = resolve_model("untrained-standin")
    model.card = dataclasses.replace(model.card, preprocessing={**model.card.preprocessing, "spacing": [4.0, 4.0, 4.0]})
    inference = prepare_for_model(_sample_paths(), model)
    entry = {"image": [str(p) for p in _sample_paths()], "label": str(SAMPLE / "sample_glioma_label.nii.gz")}
    training = PreparedCases([entry], True, model_preprocessing(model), [c.name for c in model.card.channels])
    volume, label = training(0)
    assert volume.dtype == np.float32 and volume.shape == inference.cropped.shape
    np.testing.assert_array_equal(np.asarray(volume), inference.cropped)
    # ... and a second read comes from the disk cache, still equal.
    volume2, _ = PreparedCases([entry], True, model_preprocessing(model), [c.name for c in model.card.channels])(0)
    np.testing.assert_array_equal(np.asarray(volume2), inference.cropped)
    assert label.shape == volume.shape[1:] and set(np.unique(label)) <= {0, 1, 2, 4} and (np.asarray(label) > 0).any()


def _mirror_correlations(entries, spec, samples=6):
    from SymmetryAwareTraining.data import PairedCropDataset

    ds = PairedCropDataset(entries, (32, 32, 32), spec, CHANNELS, seed=1, augment=False)
    values = []
    for k in range(samples):
        s = ds[(k, 0)]
        a, b = s["image"][3].numpy().ravel(), s["counterpart"][3].numpy().ravel()  # FLAIR
        keep = (a != 0) | (b != 0)
        if keep.sum() > 1000:
            values.append(float(np.corrcoef(a[keep], b[keep])[0, 1]))
    return values


def test_tilted_phantom_crops_and_counterparts_are_mirror_images(tmp_path):
    """A healthy phantom tilted by a known pose: in the aligned frame every training crop
    matches its counterpart (the flipped mirror box); without alignment it does not."""
    from SymmetryAwareCore.phantoms.generator import make_subject

    phantom = make_subject(11, "healthy", "mri", spacing=4.0, scenario="healthy", max_rotation_deg=15.0)
    assert max(abs(a) for a in phantom.info["pose"]["angles_deg"]) > 5.0  # really tilted
    paths = []
    for c, name in enumerate(CHANNELS):
        paths.append(tmp_path / f"h_{name}.nii.gz")
        write_nifti(phantom.image.channel(c), paths[-1])
    entries = [{"image": [str(p) for p in paths]}]
    spec = Preprocessing(spacing=(4, 4, 4), roi_size=(32, 32, 32), normalisation="zscore-nonzero")
    aligned = _mirror_correlations(entries, spec)
    unaligned = _mirror_correlations(entries, spec.replace(alignment="none"))
    assert len(aligned) >= 4 and min(aligned) > 0.85, aligned
    assert np.median(unaligned) < np.median(aligned) - 0.1, (aligned, unaligned)


# -- labels decided on the input's grid --------------------------------------------------------


def test_perfect_frame_probabilities_come_back_with_dice_above_0_9():
    """Feed the bundled card's postprocessing perfect 3 mm probabilities of the sample's true
    labels (each region's indicator, resampled into the frame) and bring them back: per
    label Dice >= 0.9 on the 2 mm grid. Taking the argmax in the frame and copying labels
    by nearest neighbour (the old route) stays below 0.9 for some label."""
    from SymmetryAwareCore.inference.model_source import resolve_model
    from SymmetryAwareCore.inference.pipeline import Prediction, model_preprocessing, outputs_on_native, prepare_for_model
    from SymmetryAwareCore.inference.postprocess import labels_from_probabilities

    model = resolve_model(None)  # the bundled glioma model's card: TC, WT, ET at 3 mm
    assert model_preprocessing(model).spacing == (3.0, 3.0, 3.0)
    truth = read_labelmap(SAMPLE / "sample_glioma_label.nii.gz").array.astype(np.int64)
    prepared = prepare_for_model(_sample_paths(), model)
    regions = model.card.postprocessing["regions"]
    probabilities = np.stack([prepared.frame.to_frame(np.isin(truth, v).astype(np.float32), "linear") for v in regions.values()])
    prediction = Prediction(probabilities, None, None, 0, 0, "cpu")
    labels = outputs_on_native(prepared, prediction, model).labels
    assert labels.shape == truth.shape
    new = {v: _dice(labels == v, truth == v) for v in (1, 2, 4)}
    assert min(new.values()) >= 0.9, new
    old_labels = prepared.frame.to_native(labels_from_probabilities(probabilities, model.card), "nearest")
    old = {v: _dice(old_labels == v, truth == v) for v in (1, 2, 4)}
    assert min(old.values()) < 0.9 and sum(new.values()) > sum(old.values()), (new, old)


# -- CT and anti-aliasing --------------------------------------------------------------------------


def test_ct_outside_the_scan_is_air_and_the_brain_is_not_constant():
    from SymmetryAwareCore.phantoms.generator import make_subject

    phantom = make_subject(5, "haemorrhage", "ct", spacing=4.0, scenario="unilateral", max_rotation_deg=20.0)
    spec = Preprocessing(spacing=(4, 4, 4), roi_size=(64, 64, 64), normalisation="ct-windows",
                         ct_windows=((0, 80), (-20, 180), (-800, 2000)))
    image = phantom.image
    plane = unaligned_plane(image)  # any oblique-enough frame has voxels outside the scan
    rotated = plane.__class__(np.array([0.94, 0.34, 0.0]), plane.point, plane.symmetry_score, False, "test", plane.center)
    prepared = prepare_image(image, spec, plane=rotated)
    outside = prepared.frame.to_frame(np.ones(image.spatial_shape, np.uint8), "nearest") == 0
    assert outside.mean() > 0.05
    assert np.all(prepared.volume[:, outside] == 0)  # air in every window, not 0 HU (brain-grey)
    soft_tissue = ((image.array[0] > 15) & (image.array[0] < 60)).astype(np.uint8)  # brain HU, no blood or bone
    brain = prepared.frame.to_frame(soft_tissue, "nearest") > 0
    assert brain.sum() > 500
    values = prepared.volume[0][brain]  # brain window
    assert values.std() > 0.05 and 0.2 < values.mean() < 0.8
    assert prepared.volume.shape[0] == 3 and prepared.head[outside].sum() == 0


def test_downsampling_is_anti_aliased():
    """White noise on a 1 mm grid prepared at 3 mm: without a pre-filter its standard
    deviation survives almost whole; with it, it drops to about a sixth (area averaging of
    27 voxels would give 1/sqrt(27) = 0.19)."""
    rng = np.random.default_rng(0)
    shape = (60, 60, 60)
    image = Image((100.0 + rng.normal(0, 10, shape)).astype(np.float32), np.eye(4))
    spec = Preprocessing(spacing=(3, 3, 3), roi_size=(16, 16, 16), normalisation="none", alignment="none")
    plane = unaligned_plane(image)
    inner = (slice(None), slice(4, -4), slice(4, -4), slice(4, -4))
    filtered = prepare_image(image, spec, plane=plane).volume[inner].std() / 10.0
    plain = prepare_image(image, spec.replace(anti_alias=False), plane=plane).volume[inner].std() / 10.0
    assert plain > 0.6 and filtered < 0.3, (plain, filtered)
