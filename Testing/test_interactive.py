"""Interactive segmentation: clicker, guidance, promptable init, session geometry, undo, worker protocol.

Fast: a tiny random-weight promptable SA-Swin (feature 12, depth 1 per stage) written to a
card in tmp, a glioma phantom at 3 mm stored LPS and tilted, and a test double network that
segments exactly its positive-click blobs (so geometry can be checked voxel for voxel).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from SymmetryAwareCore.interactive.clicker import deepest_point, dice, next_click
from SymmetryAwareCore.interactive.guidance import Guidance, guidance_volume
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.models.model_card import ModelCard, save_model
from SymmetryAwareCore.models.promptable import PromptableSASwinUNETR
from SymmetryAwareCore.phantoms.generator import make_subject

REPO = Path(__file__).resolve().parents[1]
TINY = {"image_channels": 4, "guidance_channels": 3, "out_channels": 1, "feature_size": 12,
        "depths": (1, 1, 1, 1), "use_saca": True}


# ------------------------------------------------------------------ clicker and guidance
def _ball(shape, centre, radius):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


def test_first_click_is_the_deepest_interior_point():
    truth = _ball((40, 40, 40), (12, 20, 20), 6) | _ball((40, 40, 40), (30, 20, 20), 3)
    click = next_click(None, truth)
    assert click.positive and truth[click.voxel]
    assert click.voxel == (12, 20, 20)  # the centre of the larger ball: farthest from any boundary


def test_next_clicks_land_in_the_largest_error_region_with_the_right_sign():
    truth = _ball((40, 40, 40), (20, 20, 20), 8)
    missed_part = truth & (np.arange(40)[:, None, None] >= 20)
    prediction = truth & ~missed_part  # half the ball missed
    prediction |= _ball((40, 40, 40), (5, 5, 5), 2)  # a small false positive
    click = next_click(prediction, truth)
    assert click.positive and missed_part[click.voxel]
    # Now a large false positive and nothing missed: a negative click inside it.
    false_positive = _ball((40, 40, 40), (32, 32, 32), 5) & ~truth
    click = next_click(truth | false_positive, truth)
    assert not click.positive and false_positive[click.voxel]
    assert next_click(truth, truth) is None
    assert dice(truth, truth) == 1.0


def test_deepest_point_respects_the_array_border():
    region = np.zeros((20, 31, 31), bool)
    region[:11] = True  # touches the border at x = 0
    assert deepest_point(region)[0] == 5  # midway between the border (x = -1) and the boundary (x = 11)


def test_guidance_channels_are_positive_negative_box():
    g = Guidance(positive=[(10, 10, 10)], negative=[(30, 30, 30)], box=((5, 6, 7), (15, 16, 17)))
    maps = guidance_volume((40, 40, 40), g, sigma=2.0)
    assert maps.shape == (3, 40, 40, 40) and maps.dtype == np.float32
    assert maps[0, 10, 10, 10] == pytest.approx(1.0) and maps[0, 30, 30, 30] == 0
    assert maps[1, 30, 30, 30] == pytest.approx(1.0) and maps[1, 10, 10, 10] == 0
    assert maps[2, 5, 6, 7] == 1 and maps[2, 15, 16, 17] == 1 and maps[2, 16, 16, 17] == 0 and maps[2, 4, 6, 7] == 0
    assert guidance_volume((8, 8, 8), Guidance()).max() == 0


# ------------------------------------------------------------------ model and init
def test_promptable_init_from_automatic_model_ignores_guidance_until_trained(tmp_path):
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR
    from SymmetryAwareTraining.tasks import channel_adapter, load_init_weights

    torch.manual_seed(0)
    auto = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, depths=(1, 1, 1, 1)).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in auto.state_dict().items()}, str(tmp_path / "auto.safetensors"))
    net = PromptableSASwinUNETR(**{k: v for k, v in TINY.items()}).eval()
    with pytest.raises(Exception):  # shapes differ: refused without the adapter
        load_init_weights(net, str(tmp_path / "auto.safetensors"), log=lambda _: None)
    counts = load_init_weights(net, str(tmp_path / "auto.safetensors"), adapt=channel_adapter([1]), log=lambda _: None)
    assert counts["adapted"] == 5 and counts["fresh"] == 0
    image, counterpart = torch.randn(1, 4, 64, 64, 64), torch.randn(1, 4, 64, 64, 64)
    guidance = torch.rand(1, 3, 64, 64, 64)
    with torch.inference_mode():
        expected = auto(image, counterpart)[:, 1:2]  # the WT channel
        got = net(torch.cat([image, guidance], 1), counterpart)
        cached = net(torch.cat([image, guidance], 1), counterpart_features=net.encode_counterpart(counterpart))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached, got)
    assert net.in_channels == 4 and net.network_in_channels == 7


# ------------------------------------------------------------------ session geometry and undo
@pytest.fixture(scope="module")
def tilted_lps_case(tmp_path_factory):
    """A unilateral glioma phantom at 3 mm, stored LPS and tilted by its pose; a tiny model card."""
    phantom = make_subject(11, "glioma", "mri", spacing=3.0, scenario="unilateral", orientation="LPS")
    folder = tmp_path_factory.mktemp("interactive")
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        path = folder / f"p011_{name}.nii.gz"
        write_nifti(phantom.image.channel(c), path)
        paths.append(path)
    torch.manual_seed(0)
    net = PromptableSASwinUNETR(**TINY)
    from SymmetryAwareCore.inference.model_source import brats_card_fields
    from SymmetryAwareCore.interactive.session import card_interactive_block
    from SymmetryAwareCore.models.model_card import Label

    fields = brats_card_fields()
    card = ModelCard(channels=fields["channels"], modality="MRI", labels=[Label(1, "lesion", (250, 120, 40))],
                     preprocessing={"spacing": [3.0, 3.0, 3.0], "roi_size": [64, 64, 64],
                                    "normalisation": "zscore-nonzero"},
                     postprocessing={"activation": "sigmoid", "regions": {"lesion": [1]}, "threshold": 0.5},
                     name="tiny-interactive-test", extra={"interactive": card_interactive_block(2.0)})
    card_path = save_model(net, folder / "tiny.safetensors", card)
    return phantom, paths, card_path


class ClickBlobNet(torch.nn.Module):
    """Test double: lesion = where the positive-click channel exceeds 0.5 (inside the box if any)."""

    guidance_channels = 3
    in_channels = 4

    def encode_counterpart(self, image):
        return [None]

    def forward(self, x, counterpart_features=None):
        positive = x[:, 4:5]
        return torch.where(positive > 0.5, 10.0, -10.0)


def _session(case):
    from SymmetryAwareCore.interactive.session import InteractiveSession

    phantom, paths, card_path = case
    s = InteractiveSession()
    s.load([str(p) for p in reversed(paths)], str(card_path))  # any order: matched by name
    s.model.network = ClickBlobNet()
    return s


def _ras_of(mask, affine):
    return (affine[:3, :3] @ np.argwhere(mask).T).T + affine[:3, 3]


def test_saved_mask_is_on_the_input_grid_and_left_stays_left(tilted_lps_case, tmp_path):
    phantom, paths, _ = tilted_lps_case
    s = _session(tilted_lps_case)
    truth = np.isin(phantom.label.array, (1, 2, 4))
    affine = phantom.label.affine
    target = _ras_of(truth, affine).mean(0)  # the lesion's centre, RAS mm
    plane = phantom.info["true_plane"]
    side = np.sign(np.dot(target - np.asarray(plane["point_ras"]), plane["normal_ras"]))
    assert abs(np.dot(target - np.asarray(plane["point_ras"]), plane["normal_ras"])) > 15  # clearly one-sided
    result = s.click(target.tolist(), True)
    assert result.voxels > 0 and result.changed is not None
    out = s.save(str(tmp_path / "mask.nii.gz"))
    saved = nib.load(out["path"])
    assert saved.shape == phantom.label.spatial_shape
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)
    mask = np.asarray(saved.dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask, s.mask)
    where = _ras_of(mask > 0, affine)
    # The blob sits where the click was (within a voxel), and on the same side of the plane.
    assert np.linalg.norm(where.mean(0) - target) < 3.0
    assert np.all(np.sign((where - np.asarray(plane["point_ras"])) @ np.asarray(plane["normal_ras"])) == side)
    # The changed box holds every voxel that changed.
    lo, hi = result.changed
    inside = np.zeros_like(mask, bool)
    inside[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    assert not np.any((mask > 0) & ~inside)
    # .npy of the changed block equals that block of the mask.
    s.save(str(tmp_path / "block.npy"), "changed")
    np.testing.assert_array_equal(np.load(tmp_path / "block.npy"), mask[tuple(slice(a, b) for a, b in zip(lo, hi))])
    # Saving over an input is refused.
    from SymmetryAwareCore.errors import InputError

    with pytest.raises(InputError):
        s.save(str(paths[0]))


def test_undo_restores_the_previous_mask_exactly(tilted_lps_case):
    from SymmetryAwareCore.errors import InputError

    phantom, _, _ = tilted_lps_case
    s = _session(tilted_lps_case)
    affine = phantom.label.affine
    centre = affine @ np.append((np.asarray(phantom.label.spatial_shape) - 1) / 2.0, 1.0)
    a = centre[:3] + np.array([-25.0, 0.0, 0.0])
    b = centre[:3] + np.array([25.0, 10.0, 0.0])
    s.click(a.tolist(), True)
    first = s.mask.copy()
    s.click(b.tolist(), True)
    second = s.mask.copy()
    assert np.count_nonzero(second) > np.count_nonzero(first)
    s.box((b - 8).tolist(), (b + 8).tolist())  # the box keeps only blob b
    assert 0 < np.count_nonzero(s.mask) < np.count_nonzero(second)
    undone = s.undo()
    np.testing.assert_array_equal(s.mask, second)
    assert undone.clicks == 2
    s.undo()
    np.testing.assert_array_equal(s.mask, first)
    s.reset()
    assert not s.mask.any()
    s.undo()
    np.testing.assert_array_equal(s.mask, first)
    with pytest.raises(InputError, match="outside the image"):
        s.click((centre[:3] + 1000.0).tolist(), True)
    np.testing.assert_array_equal(s.mask, first)  # a refused click changes nothing
    assert s.status()["clicks"] == 1


# ------------------------------------------------------------------ the worker, as a real subprocess
def test_worker_protocol_round_trip_and_bad_requests(tilted_lps_case, tmp_path):
    phantom, paths, card_path = tilted_lps_case
    affine = phantom.label.affine
    centre = (affine @ np.append((np.asarray(phantom.label.spatial_shape) - 1) / 2.0, 1.0))[:3]
    requests = [
        {"cmd": "click", "ras": centre.tolist(), "positive": True},                  # before load
        {"cmd": "status"},
        {"cmd": "load", "images": [str(p) for p in paths[::-1]], "model": str(card_path), "id": 7},
        "{not json",
        {"cmd": "paint"},
        {"cmd": "click", "ras": (centre + 1000).tolist(), "positive": True},          # outside the image
        {"cmd": "click", "ras": [1, 2]},                                               # malformed field
        {"cmd": "click", "ras": centre.tolist(), "positive": True},
        {"cmd": "box", "ras_min": (centre - 20).tolist(), "ras_max": (centre + 20).tolist()},
        {"cmd": "undo"},
        {"cmd": "save", "path": str(tmp_path / "out.nii.gz")},
        {"cmd": "save", "path": str(tmp_path / "out.nrrd")},
        {"cmd": "status"},
        {"cmd": "quit"},
    ]
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in requests) + "\n"
    env = {"PYTHONPATH": f"{REPO}{':' + str(REPO / 'Training')}", "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "SymmetryAwareCore", "interactive", "--threads", "2"], input=text,
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(replies) == len(requests)
    assert all("seconds" in r and "ok" in r for r in replies)
    oks = [r["ok"] for r in replies]
    assert oks == [False, True, True, False, False, False, False, True, True, True, True, True, True, True], replies
    assert "load" in replies[0]["error"] and replies[0]["cmd"] == "click"
    assert replies[1]["loaded"] is False
    load = replies[2]
    assert load["id"] == 7 and load["shape"] == list(phantom.label.spatial_shape) and load["auto_available"] is True
    assert load["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert replies[3]["cmd"] is None and "JSON" in replies[3]["error"]
    assert "unknown cmd" in replies[4]["error"]
    assert "outside the image" in replies[5]["error"]
    assert all("\n" not in r.get("error", "") for r in replies)
    click, box, undo = replies[7], replies[8], replies[9]
    for r in (click, box, undo):
        assert {"voxels", "volume_ml", "clicks", "changed"} <= set(r)
    assert click["clicks"] == 1 and box["clicks"] == 2 and undo["clicks"] == 1 and undo["voxels"] == click["voxels"]
    saved = nib.load(str(tmp_path / "out.nii.gz"))
    assert saved.shape == phantom.label.spatial_shape and np.asarray(saved.dataobj).dtype == np.uint8
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)
    assert int(np.count_nonzero(np.asarray(saved.dataobj))) == click["voxels"]
    from SymmetryAwareCore.io.readers import read_labelmap

    nrrd = read_labelmap(tmp_path / "out.nrrd")
    assert nrrd.same_grid(phantom.label) or np.allclose(nrrd.affine, affine, atol=1e-4)
    assert replies[12]["clicks"] == 1 and replies[12]["loaded"] is True


# ------------------------------------------------------------------ the training task
def test_click_training_step_reaches_the_guidance_weights():
    from SymmetryAwareTraining.config import RunConfig
    from SymmetryAwareTraining.tasks import InteractiveSegmentationTask

    config = RunConfig()
    config.model.name = "PromptableSASwinUNETR"
    config.model.kwargs = dict(TINY)
    config.interactive.no_click_fraction = 0.0
    config.interactive.max_rounds = 1
    task = InteractiveSegmentationTask(config)
    torch.manual_seed(0)
    net = PromptableSASwinUNETR(**TINY)
    with torch.no_grad():  # guidance weights zero, as after the init from an automatic model
        net.swinViT.patch_embed.proj.weight[:, 4:] = 0
    label = torch.zeros(1, 3, 64, 64, 64)
    label[:, :2, 20:40, 24:44, 18:38] = 1  # TC and WT
    batch = {"image": torch.randn(1, 4, 64, 64, 64), "counterpart": torch.randn(1, 4, 64, 64, 64), "label": label}
    losses = task.loss(net, batch)
    assert torch.isfinite(losses["loss"]) and 0 <= float(losses["rounds"]) <= 1
    losses["loss"].backward()
    grad = net.swinViT.patch_embed.proj.weight.grad
    assert grad is not None and grad[:, 4:].abs().sum() > 0  # clicks drawn into the guidance reach the weights


def test_load_without_an_installed_interactive_model_is_one_clear_line(monkeypatch, tmp_path):
    """With the default model removed, `load` without a model says so instead of 'unknown model'."""
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.inference import model_source
    from SymmetryAwareCore.interactive.session import DEFAULT_MODEL, InteractiveSession
    from SymmetryAwareCore.phantoms import sample_case_paths

    monkeypatch.setenv("SYMMETRYAWARE_MODELS", str(tmp_path))  # an empty user model folder
    shipped = model_source.list_models
    monkeypatch.setattr(model_source, "list_models",
                        lambda: [row for row in shipped() if row["name"] != DEFAULT_MODEL])
    with pytest.raises(InputError, match="no interactive model is installed") as error:
        InteractiveSession().load([str(sample_case_paths()["t1"])])
    assert DEFAULT_MODEL in str(error.value) and "\n" not in str(error.value)


def test_load_with_bias_correction_corrects_first_and_says_so(tilted_lps_case):
    """`{"cmd": "load", ..., "bias_correction": true}`: N4 on each channel before the plane, as
    `segment --bias-correction`; anything but a boolean is refused in one line."""
    from SymmetryAwareCore.interactive.worker import Worker

    phantom, paths, card_path = tilted_lps_case
    worker = Worker()
    bad = worker.handle(json.dumps({"cmd": "load", "images": [str(p) for p in paths], "model": str(card_path), "bias_correction": "yes"}))
    assert not bad["ok"] and "'bias_correction' must be true, false or null" in bad["error"]
    reply = worker.handle(json.dumps({"cmd": "load", "images": [str(p) for p in paths], "model": str(card_path), "bias_correction": True}))
    assert reply["ok"], reply
    assert any("bias field removed" in note for note in reply["notes"]) and reply["shape"] == list(phantom.label.spatial_shape)
    assert reply["bias_correction"] == "n4"
    plain = worker.handle(json.dumps({"cmd": "load", "images": [str(p) for p in paths], "model": str(card_path), "bias_correction": None}))
    assert plain["ok"] and plain["bias_correction"] is None  # null: the card's, which does not ask for it
