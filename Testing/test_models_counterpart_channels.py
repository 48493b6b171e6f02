"""The counterpart as input channels (``SASwinUNETR(counterpart_channels=True)``): a plain Swin
UNETR whose encoder reads each crop stacked with its mirrored counterpart, the symmetry
study's thirteenth-amendment arm. The network, its sliding window against a written-out
reference, its card, its config and the study's scoring.

Feature size 12, one block per stage, crops of 64 x 32 x 32: seconds on 2 shared cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry.mirror import extract_counterpart, flip_lr
from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window
from SymmetryAwareCore.inference.window_grid import window_starts
from SymmetryAwareCore.models import SASwinUNETR
from SymmetryAwareTraining.config import RunConfig, apply_overrides, check_config

SMALL = dict(feature_size=12, depths=(1, 1, 1, 1))


def _net(seed=0, **kwargs):
    torch.manual_seed(seed)
    return SASwinUNETR(2, 3, use_saca=False, counterpart_channels=True, **SMALL, **kwargs).eval()


class CountingEncoder:
    """The crops given to a network's Swin encoder."""

    def __init__(self, net):
        self.inputs = []
        net.swinViT.register_forward_hook(lambda module, args, output: self.inputs.append(args[0].detach().clone()))

    @property
    def crops(self):
        return sum(x.shape[0] for x in self.inputs)


def test_the_encoder_reads_the_crop_then_its_counterpart_and_both_matter():
    net = _net()
    assert (net.in_channels, net.encoder_in_channels) == (2, 4)
    assert net.counterpart_feature_indices == ()  # the head reads nothing from a second pass
    assert net.counterpart_use == "input channels"
    assert SASwinUNETR(2, 3, **SMALL).counterpart_use == "saca"
    assert SASwinUNETR(2, 3, use_saca=False, **SMALL).counterpart_use == "none"
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(1, 2, 64, 32, 32, generator=g), torch.randn(1, 2, 64, 32, 32, generator=g)
    counter = CountingEncoder(net)
    with torch.no_grad():
        out = net(x, c)
        other = net(x, torch.randn(1, 2, 64, 32, 32, generator=g))
        direct = net.forward_head(net.forward_features(torch.cat([x, c], 1)))
    assert out.shape == (1, 3, 64, 32, 32)
    assert counter.inputs[0].shape == (1, 4, 64, 32, 32)  # one encoder call, counterpart on the channel axis
    assert torch.equal(counter.inputs[0][:, :2], x) and torch.equal(counter.inputs[0][:, 2:], c)
    torch.testing.assert_close(out, direct)
    assert (out - other).abs().max() > 1e-4  # the counterpart changes the answer


def test_bad_settings_and_inputs_are_value_errors():
    with pytest.raises(ValueError, match="use_saca=False"):
        SASwinUNETR(2, 3, counterpart_channels=True, **SMALL)  # SACA on by default
    with pytest.raises(ValueError, match="pairing='input'"):
        SASwinUNETR(2, 3, use_saca=False, counterpart_channels=True, pairing="mirror-pair", **SMALL)
    net = _net()
    x = torch.zeros(1, 2, 64, 32, 32)
    with pytest.raises(ValueError, match="needs x_counterpart"):
        net(x)
    with pytest.raises(ValueError, match="needs x_counterpart"):
        net(x, torch.zeros(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="mirror_pair"):
        net(x, x, mirror_pair=True)
    with pytest.raises(ValueError, match="channels"):
        net(torch.zeros(1, 4, 64, 32, 32), torch.zeros(1, 4, 64, 32, 32))  # already stacked: refused


def _reference(volume, net, roi, overlap):
    """One ``net(window, its counterpart crop)`` per window, Gaussian blending."""
    vol = torch.from_numpy(volume)
    shape = tuple(vol.shape[1:])
    importance = compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=0.125, device="cpu").float()
    out, weight = torch.zeros((3,) + shape), torch.zeros(shape)
    for s in window_starts(shape, roi, overlap):
        box = (slice(None),) + tuple(slice(a, a + r) for a, r in zip(s, roi))
        with torch.no_grad():
            out[box] += importance * net(vol[box][None], extract_counterpart(vol, s, roi, 1)[None])[0]
        weight[box[1:]] += importance
    return out / weight


def test_sliding_window_is_the_reference_at_one_encoder_pass_per_window_and_left_stays_left():
    net = _net(seed=2)
    # Windows at x = 0, 32, 64: a mirror pair and a window on the plane; the volume is asymmetric.
    volume = np.random.default_rng(0).standard_normal((2, 128, 32, 32)).astype(np.float32)
    roi = (64, 32, 32)
    counter = CountingEncoder(net)
    with torch.no_grad():
        result = mirror_paired_sliding_window(volume, net, roi, overlap=0.5, sw_batch_size=2)
    assert result.n_windows == 3 and result.n_encoded == counter.crops == 3
    torch.testing.assert_close(result.logits, _reference(volume, net, roi, 0.5), atol=1e-4, rtol=1e-4)
    # Flip TTA: the flipped view of a window is the direct view of its mirror window in the
    # flipped volume, flipped back, so the TTA result is the mean of the two plain runs (the
    # Gaussian weights and the window grid are mirror-symmetric). Its own crop is a counterpart
    # crop, stacked with that crop's counterpart, the window: 2 passes per window.
    counter.inputs.clear()
    with torch.no_grad():
        tta = mirror_paired_sliding_window(volume, net, roi, overlap=0.5, sw_batch_size=2, tta_flip=True)
        assert tta.n_encoded == counter.crops == 6
        mirrored = mirror_paired_sliding_window(np.ascontiguousarray(volume[:, ::-1]), net, roi, 0.5, 2)
    torch.testing.assert_close(tta.logits, (result.logits + flip_lr(mirrored.logits, 1)) / 2, atol=1e-4, rtol=1e-4)
    assert (result.logits - flip_lr(mirrored.logits, 1)).abs().max() > 1e-3  # the network is not symmetric


def test_the_setting_travels_in_the_model_card_and_is_checked(tmp_path):
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, load_model, save_model

    card = ModelCard(channels=[InputChannel("a"), InputChannel("b")], modality="mri")
    path = save_model(_net(), tmp_path / "m.safetensors", card)
    model, card = load_model(path)
    assert model.counterpart_channels is True and card.kwargs["counterpart_channels"] is True
    assert model.in_channels == len(card.channels) == 2 and model.encoder_in_channels == 4
    path.write_text(path.read_text().replace('"counterpart_channels": true', '"counterpart_channels": "yes"'))
    with pytest.raises(InputError, match="counterpart_channels"):
        load_model(path)


@pytest.mark.parametrize("overrides, words", [
    (["model.kwargs.counterpart_channels=true"], "use_saca=false"),
    (["model.kwargs.use_saca=false", "model.kwargs.counterpart_channels=true", "model.kwargs.pairing=mirror-pair"],
     "pairing=input"),
    (["model.name=SASwinClassifier", "model.kwargs.counterpart_channels=true"], "setting of SASwinUNETR"),
])
def test_bad_configs_are_one_line_errors(overrides, words):
    config = apply_overrides(RunConfig(), ["data.roi_size=[64, 64, 64]", "model.kwargs.feature_size=12", *overrides])
    with pytest.raises(InputError, match=words):
        check_config(config)


def test_the_study_arm_is_swin_unetr_with_the_counterpart_and_is_scored_with_it(tmp_path):
    from conftest import import_training_script
    from SymmetryAwareCore.models.model_card import InputChannel, ModelCard, save_model

    study = import_training_script("symmetry_study")
    arm = dict(item.split("=") for item in study.ARMS["swin_unetr_mirror_channels"])
    swin = dict(item.split("=") for item in study.ARMS["swin_unetr"])
    assert arm.pop("model.kwargs.counterpart_channels") == "true" and arm == swin  # only the channels differ
    check_config(apply_overrides(RunConfig(), ["data.roi_size=[64, 64, 64]", "model.kwargs.feature_size=12",
                                               *study.ARMS["swin_unetr_mirror_channels"]]))
    # score_run hands the window's counterpart to the network (without it the call fails).
    run = tmp_path / "swin_unetr_mirror_channels_n8_s0"
    run.mkdir()
    torch.manual_seed(0)
    net = SASwinUNETR(1, 3, use_saca=False, counterpart_channels=True, **SMALL)
    save_model(net, run / "model.safetensors", ModelCard(channels=[InputChannel("flair")], modality="mri"))
    rng = np.random.default_rng(0)
    label = np.zeros((64, 64, 64), np.uint8)
    label[20:30, 20:30, 20:30] = 2
    windows = {"case": {"image": rng.standard_normal((1, 64, 64, 64)).astype(np.float32),
                        "counterpart": rng.standard_normal((1, 64, 64, 64)).astype(np.float32), "label": label}}
    scores = study.score_run(run, windows)
    assert set(scores["case"]) == {"TC", "WT", "ET"}
    assert json.loads((run / "study_scores.json").read_text()) == scores


class MirrorDifferenceNet(torch.nn.Module):
    """A transparent stand-in with ``counterpart_channels``: lesion wherever the crop's z-scored
    FLAIR exceeds its counterpart's by more than 1.5 (the voxel mirror-difference score as a
    network). A slip in which crop is stacked with which, or a counterpart from the wrong side,
    puts the lesion in the other hemisphere or nowhere."""

    use_saca, counterpart_channels, counterpart_use = False, True, "input channels"
    counterpart_feature_indices = ()

    def forward_features(self, x):
        assert x.shape[1] == 8  # 4 channels of the crop, then 4 of its counterpart
        return [x]

    def forward_head(self, features, features_counterpart=None, return_attention=False):
        x = features[0]
        return (8.0 * (x[:, 3:4] - x[:, 7:8] - 1.5)).repeat(1, 3, 1, 1, 1)


def test_segment_with_the_counterpart_as_channels_lands_on_the_lesion_side(tmp_path):
    import nibabel as nib

    from SymmetryAwareCore.inference.model_source import LoadedModel, standin_card
    from SymmetryAwareCore.inference.pipeline import OUTPUT_FILES, SegmentOptions, segment_case
    from SymmetryAwareCore.io.writers import write_nifti
    from SymmetryAwareCore.phantoms import make_subject

    phantom = make_subject(7, "glioma", "mri", spacing=3.0, orientation="LPS")  # tilted, stored LPS
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        paths.append(tmp_path / "in" / f"p007_{name}.nii.gz")
        paths[-1].parent.mkdir(exist_ok=True)
        write_nifti(phantom.image.channel(c), paths[-1])
    card = standin_card()
    card.preprocessing = {"spacing": [3.0] * 3, "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    segment_case(paths, tmp_path / "out", LoadedModel(MirrorDifferenceNet(), card, "test"),
                 SegmentOptions(device="cpu", overlap=0.25, overview=False))
    seg = nib.load(str(tmp_path / "out" / "p007" / OUTPUT_FILES["labelmap"]))
    np.testing.assert_allclose(seg.affine, phantom.label.affine, atol=1e-5)
    predicted = np.asarray(seg.dataobj) > 0
    truth = np.isin(phantom.label.array, (1, 2, 4))
    assert 2.0 * (predicted & truth).sum() / (predicted.sum() + truth.sum()) > 0.5
    plane = phantom.info["true_plane"]
    n, p = np.asarray(plane["normal_ras"]), np.asarray(plane["point_ras"])
    side = np.sign((phantom.label.voxel_to_world(np.argwhere(predicted)) - p) @ n)
    truth_side = np.sign(np.mean((phantom.label.voxel_to_world(np.argwhere(truth)) - p) @ n))
    assert truth_side != 0 and np.mean(side == truth_side) > 0.95  # left stays left, no mirror image
    report = json.loads((tmp_path / "out" / "p007" / "report.json").read_text())
    assert report["inference"]["counterpart"] == "input channels"
    assert report["inference"]["encoded_crops"] == report["inference"]["windows"]


def test_the_promptable_network_refuses_the_setting_and_a_counterpart_channels_init(tmp_path):
    from safetensors.torch import save_file

    from SymmetryAwareCore.models.promptable import PromptableSASwinUNETR
    from SymmetryAwareTraining.tasks import channel_adapter, load_init_weights

    with pytest.raises(ValueError, match="counterpart_channels"):
        PromptableSASwinUNETR(1, use_saca=False, counterpart_channels=True, **SMALL)
    with pytest.raises(ValueError, match="True or False"):
        SASwinUNETR(1, 3, use_saca=False, counterpart_channels="false", **SMALL)
    # One image channel: the checkpoint reads 2 (image, counterpart), the promptable network
    # 1 + 3 guidance. Widening would put the counterpart's weights on the positive clicks.
    torch.manual_seed(0)
    checkpoint = SASwinUNETR(1, 3, use_saca=False, counterpart_channels=True, **SMALL)
    save_file({k: v.contiguous() for k, v in checkpoint.state_dict().items()}, str(tmp_path / "c.safetensors"))
    net = PromptableSASwinUNETR(1, use_saca=False, **SMALL)
    with pytest.raises(InputError, match="reads 2 input channels, the network's image has 1"):
        load_init_weights(net, str(tmp_path / "c.safetensors"), adapt=channel_adapter([1], net.in_channels),
                          log=lambda _: None)
    plain = SASwinUNETR(1, 3, use_saca=False, **SMALL)
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(tmp_path / "p.safetensors"))
    counts = load_init_weights(net, str(tmp_path / "p.safetensors"), adapt=channel_adapter([1], net.in_channels),
                               log=lambda _: None)
    assert counts["adapted"] > 0  # an image-only checkpoint is still widened


@pytest.mark.parametrize("flag", ["use_saca", "counterpart_channels"])
def test_a_flag_given_as_a_string_is_a_config_error(flag):
    config = apply_overrides(RunConfig(), ["data.roi_size=[64, 64, 64]", "model.kwargs.feature_size=12"])
    config.model.kwargs[flag] = "false"  # a YAML string, not a boolean: would mean True
    with pytest.raises(InputError, match=f"model.kwargs.{flag} must be true or false"):
        check_config(config)
