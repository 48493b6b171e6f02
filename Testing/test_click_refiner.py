"""The two-stage interactive model: ClickRefiner, its backbone card, the session, the click training.

Fast: a tiny random-weight backbone SA-Swin (feature 12, depth 1 per stage) and a tiny refiner
written as cards in tmp; a glioma phantom at 3 mm stored LPS and tilted; a refiner test double
that segments exactly its positive-click blobs (so geometry is checked voxel for voxel).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.models.click_refiner import ClickRefiner
from SymmetryAwareCore.models.model_card import Label, ModelCard, save_model
from SymmetryAwareCore.phantoms.generator import make_subject

REPO = Path(__file__).resolve().parents[1]
PREPROCESSING = {"spacing": [3.0, 3.0, 3.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}


def test_refiner_input_is_image_mirror_prior_guidance_in_that_order():
    net = ClickRefiner(4, channels=(4, 8), strides=(2,))
    parts = [torch.full((1, n, 16, 16, 16), float(v)) for n, v in ((4, 1), (4, 2), (3, 3), (3, 4))]
    x = net.assemble(*parts)
    assert x.shape == (1, 14, 16, 16, 16) and net.network_in_channels == 14
    assert x[0, :, 0, 0, 0].tolist() == [1] * 4 + [2] * 4 + [3] * 3 + [4] * 3
    assert net(x).shape == (1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="counterpart"):
        net.assemble(parts[0], None, parts[2], parts[3])
    with pytest.raises(ValueError, match="spatial"):
        net.assemble(parts[0], parts[1][..., :8], parts[2], parts[3])
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 14, 16, 16, 15))
    alone = ClickRefiner(4, mirror=False, channels=(4, 8), strides=(2,))
    assert alone.assemble(parts[0], None, parts[2], parts[3]).shape[1] == 10 == alone.network_in_channels


@pytest.fixture(scope="module")
def two_stage_case(tmp_path_factory):
    """A unilateral glioma phantom at 3 mm, LPS and tilted; tiny backbone + refiner cards side by side."""
    from SymmetryAwareCore.inference.model_source import brats_card_fields
    from SymmetryAwareCore.interactive.session import BACKBONE_KEY, card_interactive_block
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR

    phantom = make_subject(12, "glioma", "mri", spacing=3.0, scenario="unilateral", orientation="LPS")
    folder = tmp_path_factory.mktemp("two_stage")
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        path = folder / f"p012_{name}.nii.gz"
        write_nifti(phantom.image.channel(c), path)
        paths.append(path)
    fields = brats_card_fields()
    torch.manual_seed(0)
    backbone = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, depths=(1, 1, 1, 1), use_saca=True)
    save_model(backbone, folder / "tiny_backbone.safetensors",
               ModelCard(channels=fields["channels"], modality="MRI", labels=fields["labels"],
                         preprocessing=PREPROCESSING, postprocessing=fields["postprocessing"], name="tiny-backbone"))
    refiner = ClickRefiner(4, channels=(4, 8, 16, 32), strides=(2, 2, 2))

    def refiner_card(backbone_name):
        return ModelCard(channels=fields["channels"], modality="MRI", labels=[Label(1, "lesion", (250, 120, 40))],
                         preprocessing=PREPROCESSING,
                         postprocessing={"activation": "sigmoid", "regions": {"lesion": [1]}, "threshold": 0.5},
                         name="tiny-refiner",
                         extra={"interactive": {**card_interactive_block(2.0), BACKBONE_KEY: backbone_name}})

    card_path = save_model(refiner, folder / "tiny_refiner.safetensors", refiner_card("tiny_backbone.json"))
    missing = save_model(refiner, folder / "orphan_refiner.safetensors", refiner_card("absent.json"))
    return phantom, paths, card_path, missing


def test_a_refiner_trained_on_other_backbone_weights_is_refused_and_the_right_ones_load(two_stage_case):
    """Same backbone file name, other weights (e.g. a re-bundled default): the refiner would read
    priors it never saw, so loading names both hashes in one line; the recorded hash loads."""
    from SymmetryAwareCore.inference.model_source import brats_card_fields, resolve_model
    from SymmetryAwareCore.interactive.session import (BACKBONE_KEY, BACKBONE_SHA_KEY, card_interactive_block,
                                                       load_backbone)
    from SymmetryAwareCore.models.model_card import load_model

    _, _, card_path, _ = two_stage_case
    folder = Path(card_path).parent
    backbone_sha = load_model(folder / "tiny_backbone.json")[1].sha256
    refiner = ClickRefiner(4, channels=(4, 8, 16, 32), strides=(2, 2, 2))
    fields = brats_card_fields()

    def saved(name, sha):
        card = ModelCard(channels=fields["channels"], modality="MRI", labels=[Label(1, "lesion", (250, 120, 40))],
                         preprocessing=PREPROCESSING,
                         postprocessing={"activation": "sigmoid", "regions": {"lesion": [1]}, "threshold": 0.5},
                         name=name, extra={"interactive": {**card_interactive_block(2.0),
                                                           BACKBONE_KEY: "tiny_backbone.json", BACKBONE_SHA_KEY: sha}})
        return resolve_model(str(save_model(refiner, folder / f"{name}.safetensors", card)), "cpu")

    assert load_backbone(saved("matching_refiner", backbone_sha)).card.sha256 == backbone_sha
    with pytest.raises(InputError, match="trained on backbone weights") as info:
        load_backbone(saved("stale_refiner", "0" * 64))
    assert "\n" not in str(info.value) and "000000000000" in str(info.value)


def test_two_stage_session_caches_the_backbone_prior_once(two_stage_case, tmp_path):
    from SymmetryAwareCore.inference.pipeline import predict_box
    from SymmetryAwareCore.interactive.session import InteractiveSession

    phantom, paths, card_path, _ = two_stage_case
    s = InteractiveSession()
    reply = s.load([str(p) for p in reversed(paths)], str(card_path))
    assert reply["timing"]["backbone"] > 0 and s._backbone.card.name == "tiny-backbone"
    # The prior is the pipeline's own mirror-paired prediction of the brain box, padded like the volume.
    expected = predict_box(s.prepared.cropped, s._backbone)
    inner = tuple(slice(b.start - o, b.stop - o) for b, o in zip(s.prepared.box, s._origin))
    np.testing.assert_allclose(s._prior[(slice(None),) + inner].numpy(), expected, atol=1e-5)
    assert s._prior.shape[1:] == s._volume.shape[1:]
    # A click runs the refiner only; its counterpart input is cached per window.
    truth = np.isin(phantom.label.array, (1, 2, 4))
    target = (phantom.label.affine[:3, :3] @ np.argwhere(truth).mean(0)) + phantom.label.affine[:3, 3]
    result = s.click(target.tolist(), True)
    assert set(result.seconds) >= {"forward", "mask_update"} and s.status()["cached_windows"] >= 1
    saved = nib.load(s.save(str(tmp_path / "m.nii.gz"))["path"])
    assert saved.shape == phantom.label.spatial_shape
    np.testing.assert_allclose(saved.affine, phantom.label.affine, atol=1e-5)
    s.undo()
    assert s.mask.sum() == 0


class RefinerBlobDouble(torch.nn.Module):
    """Test double of a ClickRefiner: lesion = where the positive-click channel exceeds 0.5."""

    guidance_channels = 3
    in_channels = 4

    def assemble(self, image, counterpart, prior, guidance):
        assert counterpart.shape == image.shape and prior.shape[1] == 3
        return torch.cat([image, counterpart, prior, guidance], 1)

    def forward(self, x):
        return torch.where(x[:, 11:12] > 0.5, 10.0, -10.0)


def test_two_stage_mask_is_on_the_input_grid_and_left_stays_left(two_stage_case):
    from SymmetryAwareCore.interactive.session import InteractiveSession

    phantom, paths, card_path, _ = two_stage_case
    s = InteractiveSession()
    s.load([str(p) for p in paths], str(card_path))
    s.model.network = RefinerBlobDouble()
    affine = phantom.label.affine
    truth = np.isin(phantom.label.array, (1, 2, 4))
    target = (affine[:3, :3] @ np.argwhere(truth).mean(0)) + affine[:3, 3]
    plane = phantom.info["true_plane"]
    side = np.sign(np.dot(target - np.asarray(plane["point_ras"]), plane["normal_ras"]))
    s.click(target.tolist(), True)
    where = (affine[:3, :3] @ np.argwhere(s.mask > 0).T).T + affine[:3, 3]
    assert len(where) > 0 and np.linalg.norm(where.mean(0) - target) < 3.0
    assert np.all(np.sign((where - np.asarray(plane["point_ras"])) @ np.asarray(plane["normal_ras"])) == side)


def test_a_refiner_whose_backbone_is_missing_is_refused_in_one_line(two_stage_case):
    from SymmetryAwareCore.interactive.session import InteractiveSession

    _, paths, _, orphan = two_stage_case
    with pytest.raises(InputError, match="backbone card named by") as info:
        InteractiveSession().load([str(p) for p in paths], str(orphan))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ click training
def _case():
    from SymmetryAwareTraining.click_refiner import CachedCase

    rng = np.random.default_rng(0)
    volume = rng.normal(size=(4, 40, 40, 40)).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), -1)
    truth = np.linalg.norm(grid - np.array([12, 20, 20]), axis=-1) <= 5
    volume[:, truth] += 3.0
    prior = np.zeros((3, 40, 40, 40), np.float32)
    prior[1][truth] = 0.9
    return CachedCase("synthetic", volume, prior, truth)


def test_training_samples_pair_each_crop_with_its_mirror_crop():
    from SymmetryAwareTraining.click_refiner import make_sample

    case = _case()
    image, counterpart, prior, truth = make_sample(case, 16, np.random.default_rng(3), corrupt=0.0)
    assert image.shape == counterpart.shape == (4, 16, 16, 16) and prior.shape == (3, 16, 16, 16) and truth.any()
    # Find the crop's start and check the counterpart is the mirror crop, flipped (left-right = axis 0).
    starts = [tuple(s) for s in np.argwhere(np.all(np.lib.stride_tricks.sliding_window_view(
        case.volume[0], (16, 16, 16)) == image[0], axis=(3, 4, 5)))]
    (x, y, z), = starts
    mirror = case.volume[:, 40 - x - 16: 40 - x, y: y + 16, z: z + 16][:, ::-1]
    np.testing.assert_array_equal(counterpart, mirror)


def test_training_step_is_reproducible_and_updates_the_refiner():
    import argparse

    from SymmetryAwareTraining.click_refiner import training_step

    args = argparse.Namespace(seed=1, crop=16, batch=2, corrupt=0.3, ablation=None, no_click=0.1, box=0.2,
                              rounds=2, sigma=2.0)
    losses, weights = [], []
    for _ in range(2):
        torch.manual_seed(0)
        net = ClickRefiner(4, channels=(4, 8), strides=(2,))
        before = [p.detach().clone() for p in net.parameters()]
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
        losses.append([training_step(net, [_case()], step, args, optimizer) for step in range(3)])
        weights.append([p.detach().clone() for p in net.parameters()])
    assert losses[0] == losses[1] and all(np.isfinite(losses[0]))
    assert any(not torch.equal(a, b) for a, b in zip(before, weights[0]))
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b)


def test_training_cli_refuses_a_missing_datalist_in_one_line(tmp_path):
    import os

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'Training'}"}
    run = subprocess.run([sys.executable, "-m", "SymmetryAwareTraining.click_refiner", "--datalist",
                          str(tmp_path / "absent.json"), "--output-dir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "datalist not found" in run.stderr


# ------------------------------------------------------------------ the fast exact mask update
def test_threshold_to_native_gives_the_general_mappings_labels(two_stage_case):
    import scipy.ndimage as ndi

    from SymmetryAwareCore.inference.pipeline import probabilities_to_native, threshold_to_native
    from SymmetryAwareCore.interactive.session import InteractiveSession

    _, paths, card_path, _ = two_stage_case
    s = InteractiveSession()
    s.load([str(p) for p in paths], str(card_path))
    shape, native = s.prepared.frame.shape, s.prepared.native.spatial_shape
    rng = np.random.default_rng(5)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    blob = 1 / (1 + np.exp(np.linalg.norm(grid - np.asarray(shape) / 2, axis=-1) - 8))
    noise = ndi.gaussian_filter(rng.random(shape), 2)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    near = np.full(shape, 0.5 - 2.0 ** -12)  # below 0.5, but float16 rounds it to 0.5: label 1
    for p in (blob, noise, near):
        p = p.astype(np.float32)
        for region in (((0, 0, 0), tuple(native)), ((3, 5, 7), tuple(n // 2 + 4 for n in native))):
            expected = probabilities_to_native(p[None], s.prepared, s.model.card, region)[0] >= 0.5
            np.testing.assert_array_equal(threshold_to_native(p, s.prepared, 0.5, 0.0, region), expected)


class LocalDouble(torch.nn.Module):
    """Test double: the image's first channel (z-scored: borders all over the head), moved far
    up by positive and down by negative click blobs, so a click changes only its neighbourhood."""

    guidance_channels = 3
    in_channels = 4

    def assemble(self, image, counterpart, prior, guidance):
        return torch.cat([image, counterpart, prior, guidance], 1)

    def forward(self, x):
        return 2.0 * x[:, 0:1] + 20.0 * x[:, 11:12] - 20.0 * x[:, 12:13]


def test_incremental_mask_updates_equal_the_whole_grid_mapping(two_stage_case):
    from SymmetryAwareCore.inference.pipeline import outside_head_native, probabilities_to_native
    from SymmetryAwareCore.interactive.session import InteractiveSession

    phantom, paths, card_path, _ = two_stage_case
    s = InteractiveSession()
    s.load([str(p) for p in paths], str(card_path))
    s.model.network = LocalDouble()
    s.auto()  # no clicks: the base field over every window
    affine = phantom.label.affine
    centre = np.argwhere(np.isin(phantom.label.array, (1, 2, 4))).mean(0)
    outside = outside_head_native(s.prepared, s.spec)
    for k, (offset, positive) in enumerate((((0, 0, 0), True), ((4, 2, 0), True), ((-5, 0, 3), False),
                                            ((2, -3, 1), False))):
        result = s.click((affine[:3, :3] @ (centre + offset) + affine[:3, 3]).tolist(), positive)
        lo, hi = result.changed
        assert np.prod(np.subtract(hi, lo)) < 0.2 * s.mask.size  # a local update
        whole = probabilities_to_native(s._prob, s.prepared, s.model.card)[0] >= 0.5
        if outside is not None:
            whole[outside] = False
        assert 0 < whole.sum() < 0.5 * whole.size
        np.testing.assert_array_equal(s.mask, whole.astype(np.uint8), err_msg=f"after click {k + 1}")
