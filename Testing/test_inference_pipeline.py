"""The main job end to end: outputs on the input's own grid, left stays left, atomic case folders.

The network here is a transparent test double with the SA-Swin inference contract
(forward_features / forward_head): it calls "lesion" wherever the FLAIR channel is very bright,
so the true answer is known on a phantom and any geometric slip (a flip, a shift, a wrong
orientation on the way back) shows up as a mismatch with the phantom's own labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.inference.model_source import LoadedModel, standin_card
from SymmetryAwareCore.inference.pipeline import OUTPUT_FILES, SegmentOptions, brain_box, segment_case
from SymmetryAwareCore.io.image import Image
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.phantoms import make_subject


class BrightFlairNet(torch.nn.Module):
    """Logits of the three BraTS regions = 8 * (z-scored FLAIR - 2): bright FLAIR is lesion."""

    use_saca = False

    def forward_features(self, x):
        return [x]

    def forward_head(self, features, features_counterpart, return_attention=False):
        flair = features[0][:, 3:4]
        logits = 8.0 * (flair - 2.0)
        return logits.repeat(1, 3, 1, 1, 1)


def _model(spacing=3.0) -> LoadedModel:
    card = standin_card()
    card.name = "bright-flair-test-double"
    card.preprocessing = {"spacing": [spacing] * 3, "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    return LoadedModel(BrightFlairNet(), card, "test")


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    """A glioma phantom stored in LPS (not RAS), tilted by its random pose, as four files."""
    phantom = make_subject(7, "glioma", "mri", spacing=3.0, orientation="LPS")
    folder = tmp_path_factory.mktemp("case")
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        path = folder / f"p007_{name}.nii.gz"
        write_nifti(phantom.image.channel(c), path)
        paths.append(path)
    return phantom, paths


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def test_outputs_land_on_the_input_grid_and_left_stays_left(phantom_case, tmp_path):
    phantom, paths = phantom_case
    result = segment_case(paths, tmp_path, _model(), SegmentOptions(device="cpu", overlap=0.25))
    assert result.case_id == "p007"
    for key, name in OUTPUT_FILES.items():
        if key not in ("attention", "attention_from", "zero_shot"):  # no SACA, no symmetry head here
            assert (tmp_path / "p007" / name).is_file(), name
    seg = nib.load(str(tmp_path / "p007" / OUTPUT_FILES["labelmap"]))
    assert seg.shape == phantom.label.spatial_shape
    np.testing.assert_allclose(seg.affine, phantom.label.affine, atol=1e-5)
    predicted = np.asarray(seg.dataobj) > 0
    truth_oedema = np.isin(phantom.label.array, (1, 2, 4))
    # Bright FLAIR is the lesion: the prediction must overlap the true lesion voxel for voxel.
    assert _dice(predicted, truth_oedema) > 0.6
    # Left stays left: the predicted lesion lies on the same side of the true plane as the truth.
    plane = phantom.info["true_plane"]
    n, p = np.asarray(plane["normal_ras"]), np.asarray(plane["point_ras"])
    side = lambda mask: np.sign(np.mean((phantom.label.voxel_to_world(np.argwhere(mask)) - p) @ n))
    assert side(predicted) == side(truth_oedema) != 0
    report = json.loads((tmp_path / "p007" / "report.json").read_text())
    voxel_ml = abs(np.linalg.det(seg.affine[:3, :3])) / 1000.0
    assert report["total"]["volume_ml"] == pytest.approx(predicted.sum() * voxel_ml, rel=1e-6)
    hemis = "right_ml" if side(truth_oedema) > 0 else "left_ml"
    assert report["total"][hemis] > 0.9 * report["total"]["volume_ml"]
    # The estimated plane is the true one (the phantom records it).
    assert np.degrees(np.arccos(min(1.0, abs(np.dot(report["msp"]["normal"], n))))) < 1.5


def test_seg_nrrd_geometry_read_back_by_slicerio(phantom_case, tmp_path):
    import slicerio

    phantom, paths = phantom_case
    segment_case(paths, tmp_path, _model(), SegmentOptions(device="cpu", overview=False))
    seg = slicerio.read_segmentation(str(tmp_path / "p007" / OUTPUT_FILES["segmentation"]))
    ijk_to_lps = np.asarray(seg["ijkToLPS"])
    ras = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_lps[:3, :3]
    # The segmentation's voxel axes may be re-based by slicerio; compare world positions of the lesion.
    voxels = np.asarray(seg["voxels"])
    origin = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_lps[:3, 3]
    world = np.argwhere(voxels > 0) @ ras.T + origin
    nifti = nib.load(str(tmp_path / "p007" / OUTPUT_FILES["labelmap"]))
    reference = Image(np.asarray(nifti.dataobj), nifti.affine).voxel_to_world(np.argwhere(np.asarray(nifti.dataobj) > 0))
    np.testing.assert_allclose(np.sort(world, axis=0), np.sort(reference, axis=0), atol=1e-3)
    names = [s["name"] for s in seg["segments"]]
    assert "enhancing tumour" in names[-1] or any("enhancing" in n for n in names)


def test_finished_case_is_skipped_and_failed_case_leaves_nothing(phantom_case, tmp_path, monkeypatch):
    phantom, paths = phantom_case
    first = segment_case(paths, tmp_path, _model(), SegmentOptions(device="cpu", overview=False))
    again = segment_case(paths, tmp_path, _model(), SegmentOptions(device="cpu", overview=False))
    assert again.skipped and not first.skipped

    import SymmetryAwareCore.inference.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "write_overview_png", broken)
    with pytest.raises(RuntimeError):
        segment_case(paths, tmp_path / "other", _model(), SegmentOptions(device="cpu"))
    assert list((tmp_path / "other").iterdir()) == []  # no half-written case folder


def test_output_inside_input_folder_is_refused(phantom_case, tmp_path):
    phantom, paths = phantom_case
    with pytest.raises(InputError, match="would hold"):
        segment_case(paths, paths[0].parent.parent, _model(), case_id=paths[0].parent.name)


def test_roi_mode_keeps_labels_inside_the_box(phantom_case, tmp_path):
    phantom, paths = phantom_case
    truth = np.argwhere(phantom.label.array > 0)
    centre = phantom.label.voxel_to_world(truth).mean(axis=0)
    size = (30.0, 30.0, 30.0)
    segment_case(paths, tmp_path, _model(), SegmentOptions(device="cpu", roi_center_ras=centre, roi_size_mm=size, overview=False))
    seg = nib.load(str(tmp_path / "p007" / OUTPUT_FILES["labelmap"]))
    assert seg.shape == phantom.label.spatial_shape
    found = np.argwhere(np.asarray(seg.dataobj) > 0)
    assert len(found) > 0
    world = phantom.label.voxel_to_world(found)
    assert np.all(np.abs(world - centre) <= np.asarray(size) / 2 + 1e-6)
    report = json.loads((tmp_path / "p007" / "report.json").read_text())
    assert report["roi"]["size_mm"] == list(size)


def test_brain_box_is_symmetric_about_the_plane():
    volume = np.zeros((1, 40, 30, 20), np.float32)
    volume[0, 5:12, 10:20, 3:9] = 1.0  # signal on the left only
    box = brain_box(volume, margin=0)
    assert box[0].start == 5 and box[0].stop == 35  # mirror of [5, 12) is [28, 35)
    assert (box[1].start, box[1].stop) == (10, 20)
