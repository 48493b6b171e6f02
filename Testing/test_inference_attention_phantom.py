"""Attention maps end to end on a tilted LPS phantom with a one-sided lesion.

The network is a real SA-Swin (feature size 12, one block per stage) with SACA at stage 2,
random weights from a fixed seed, made to attend in an anatomically readable way
(``SACABlock.set_mirror_prior``): a token's attention peaks at its own mirror token and
otherwise follows content. That is a test double of a trained model whose answer is known:
point attention must peak at the query's mirror position, across the true mid-sagittal
plane, on the input's grid.
One ``segment_case`` run (about a minute on 2 shared cores) feeds every test here.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry.mirror import mirror_points_ras
from SymmetryAwareCore.inference.model_source import LoadedModel, standin_card
from SymmetryAwareCore.inference.pipeline import OUTPUT_FILES, SegmentOptions, segment_case
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.models import SASwinUNETR
from SymmetryAwareCore.phantoms import make_subject


def _model(saca: bool = True) -> LoadedModel:
    torch.manual_seed(0)
    net = SASwinUNETR(
        4, 3, feature_size=12, depths=(1, 1, 1, 1), use_saca=saca, saca_stages=(2, 4), saca_position_encoding="learned"
    ).eval()
    if saca:
        net.saca["stage2"].set_mirror_prior(sharpness=10.0, content=0.5)
    card = standin_card()
    card.name = "saca-stage2-test-double"
    card.preprocessing = {"spacing": [3.0] * 3, "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    return LoadedModel(net, card, "test")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The phantom (LPS, tilted), the query point (RAS, the lesion's centre) and the outputs."""
    phantom = make_subject(7, "glioma", "mri", spacing=3.0, orientation="LPS", scenario="unilateral")
    folder = tmp_path_factory.mktemp("case")
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        path = folder / f"a017_{name}.nii.gz"
        write_nifti(phantom.image.channel(c), path)
        paths.append(path)
    lesion = phantom.label.array > 0
    query = phantom.label.voxel_to_world(np.argwhere(lesion)).mean(axis=0)
    out = tmp_path_factory.mktemp("out")
    result = segment_case(paths, out, _model(), SegmentOptions(device="cpu", overview=False, attention_from_ras=list(query)))
    return phantom, paths, query, result


def _side(points, plane) -> np.ndarray:
    return (np.atleast_2d(points) - np.asarray(plane["point_ras"])) @ np.asarray(plane["normal_ras"])


def test_maps_lie_on_the_input_grid(run):
    phantom, _, _, result = run
    for key in ("attention", "attention_from"):
        image = nib.load(str(result.output_dir / OUTPUT_FILES[key]))
        assert image.shape == phantom.image.spatial_shape
        np.testing.assert_allclose(image.affine, phantom.image.affine, atol=1e-5)  # LPS, as the input


def test_mirror_focus_varies_inside_the_head_and_is_zero_outside(run):
    phantom, _, _, result = run
    focus = np.asarray(nib.load(str(result.output_dir / OUTPUT_FILES["attention"])).get_fdata())
    head = np.any(phantom.image.array != 0, axis=0)
    assert np.all(focus[~head] == 0)
    inside = focus[head]
    assert inside.min() >= 0 and inside.max() <= 1 + 1e-6
    assert inside.std() / inside.mean() > 0.05  # not a constant map (about 0.1 here)
    summary = result.report["attention"]
    assert summary["saca_stage"] == 2 and summary["token_voxels"] == 8 and summary["radius_tokens"] == 0
    assert summary["chance_level"] == pytest.approx(1 / 512, abs=1e-5)


def test_mirror_focus_differs_between_the_lesion_and_its_mirror(run):
    phantom, _, _, result = run
    focus = np.asarray(nib.load(str(result.output_dir / OUTPUT_FILES["attention"])).get_fdata())
    lesion = phantom.label.array > 0
    head = np.any(phantom.image.array != 0, axis=0)
    plane = phantom.info["true_plane"]
    mirrored = mirror_points_ras(phantom.label.voxel_to_world(np.argwhere(lesion)), np.asarray(plane["normal_ras"]), np.asarray(plane["point_ras"]))
    ijk = np.round(phantom.label.world_to_voxel(mirrored)).astype(int)
    ijk = ijk[np.all((ijk >= 0) & (ijk < lesion.shape), axis=1)]
    mirror = np.zeros_like(lesion)
    mirror[tuple(ijk.T)] = True
    mirror &= head & ~lesion
    assert lesion.sum() > 500 and mirror.sum() > 500
    assert abs(focus[lesion].mean() - focus[mirror].mean()) > 0.01  # about 0.03 here


def test_point_attention_lands_across_the_plane_at_the_mirror_position(run):
    phantom, _, query, result = run
    image = nib.load(str(result.output_dir / OUTPUT_FILES["attention_from"]))
    density = np.asarray(image.get_fdata())
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
    share = density.sum() * voxel_ml
    point = result.report["attention"]["point"]
    assert share == pytest.approx(point["share_on_input_grid"], abs=2e-3) and 0.8 < share <= 1.0 + 1e-3
    peak = phantom.image.voxel_to_world(np.argwhere(density == density.max()))
    plane = phantom.info["true_plane"]
    # Left stays left: the query is on the lesion's side, where it attends most on the other
    # side, at the query's mirror image to within a token (24 mm, 42 mm across the diagonal).
    assert np.all(_side(query, plane)[0] * _side(peak, plane) < 0)
    mirror = mirror_points_ras(query[None], np.asarray(plane["normal_ras"]), np.asarray(plane["point_ras"]))[0]
    to_mirror = np.linalg.norm(peak - mirror, axis=1)
    assert np.all(to_mirror < np.linalg.norm(peak - query, axis=1)) and to_mirror.max() < 24.0 * np.sqrt(3)
    assert point["peak_to_mirror_mm"] < 24.0 * np.sqrt(3)
    np.testing.assert_allclose(point["mirror_ras"], mirror, atol=6.0)  # the frame voxel nearest to it


def test_attention_point_errors_come_before_inference(run, tmp_path):
    _, paths, _, _ = run
    with pytest.raises(InputError, match="outside the head"):
        segment_case(paths, tmp_path, _model(), SegmentOptions(device="cpu", attention_from_ras=[500.0, 0.0, 0.0]))
    with pytest.raises(InputError, match="SACA"):
        segment_case(paths, tmp_path, _model(saca=False), SegmentOptions(device="cpu", attention_from_ras=[0.0, 0.0, 0.0]))
    assert not any(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--sample", "-o", str(tmp_path), "--attention-from", "1,2"])
    assert exit_info.value.code == 2
