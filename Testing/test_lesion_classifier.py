"""The lesion-map classifier: SASwinClassifier(pooling="lesion"), its mirror-pair training, its
token targets from the lesion masks, and its maps on the input grid (classify --maps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.contract import finding_map_file
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry.rigid import reorient_to
from SymmetryAwareCore.inference.classify import classify_case, classify_prepared
from SymmetryAwareCore.inference.model_source import LoadedModel
from SymmetryAwareCore.io.readers import read_image
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareCore.models.model_card import load_model
from SymmetryAwareCore.models.sa_swin_classifier import SASwinClassifier
from SymmetryAwareCore.phantoms import sample_case_paths
from SymmetryAwareTraining.data import WholeScanDataset, lesion_token_target, whole_scan_view
from SymmetryAwareTraining.datalist import finding_label_values
from SymmetryAwareTraining.tasks import ClassificationTask

SMALL = dict(feature_size=12, depths=(1, 1, 1, 1))


def _net(**kwargs):
    torch.manual_seed(0)
    return SASwinClassifier(1, 2, **{**SMALL, **kwargs}).eval()


def test_lesion_logits_are_the_map_maximum_and_the_map_sees_the_mirror():
    net = _net(pooling="lesion", saca_stages=(1,))
    x, xc = torch.randn(2, 1, 32, 64, 32), torch.randn(2, 1, 32, 64, 32)
    with torch.no_grad():
        logits, lesion = net(x, xc, return_map=True)
        assert lesion.shape == (2, 2, 8, 16, 8)  # Swin stage 1: 1/4 per axis
        torch.testing.assert_close(logits, lesion.flatten(2).amax(dim=2))
        torch.testing.assert_close(net(x, xc), logits)
        # SACA after stage 1: the counterpart reaches every scored token.
        assert not torch.allclose(net(x, xc + 1.0, return_map=True)[1], lesion)
        logits_a, _, attention = net(x, xc, return_map=True, return_attention=True)
        assert attention.shape == (2, 3, 8 * 16 * 8, 8 * 16 * 8)
    # The lesion head's encoder stops after stage 1: SACA deeper would never run, so it is refused.
    with pytest.raises(ValueError, match="deeper stage"):
        _net(pooling="lesion", saca_stages=(4,))
    # Without saca_stages, SACA sits where the head reads.
    assert _net(pooling="lesion").init_kwargs["saca_stages"] == (1,)
    assert _net(pooling="mean").init_kwargs["saca_stages"] == (4,)
    with pytest.raises(ValueError, match="pooling='lesion'"):
        _net(pooling="mean").lesion_map(net.forward_features(x))


def test_lesion_encoder_stops_after_stage_1_exactly_and_freezes_the_rest():
    net = _net(pooling="lesion", saca_stages=(1,)).eval()
    x = torch.randn(2, 1, 32, 64, 32)
    with torch.no_grad():
        full = net.swinViT(x, True)  # MONAI's own forward: every stage
        truncated = net.forward_features(x)
    assert truncated[3:] == [None, None, None]
    assert torch.equal(truncated[1], full[0]) and torch.equal(truncated[2], full[1])
    # Stages 2-4 are never run: frozen, so neither the optimiser nor DDP waits for their gradients.
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("swinViT.layers2", "swinViT.layers3", "swinViT.layers4")) for n in trainable)
    assert any(n.startswith("swinViT.layers1") for n in trainable)
    net.train()
    net(x, x.flip(2)).sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if p.requires_grad), "a trainable parameter got no gradient"
    # The state dict keeps every Swin key, so SwinUNETR weights and earlier files still load.
    assert any(k.startswith("swinViT.layers4") for k in net.state_dict())
    mean_net = _net(pooling="mean")
    assert all(p.requires_grad for p in mean_net.parameters())


def test_mirror_pair_is_both_scans_each_with_the_other_as_counterpart():
    for use_saca in (True, False):
        net = _net(pooling="lesion", saca_stages=(1,), use_saca=use_saca, pairing="mirror-pair")
        x = torch.randn(2, 1, 32, 32, 32)
        xc = x.flip(2)
        with torch.no_grad():
            both, maps = net(x, xc, mirror_pair=True, return_map=True)
            one, map_one = net(x, xc, return_map=True)
            other, map_other = net(xc, x, return_map=True)
        torch.testing.assert_close(both, torch.cat([one, other]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(maps, torch.cat([map_one, map_other]), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="pairing"):
        _net(pairing="both")
    with pytest.raises(ValueError, match="mirror_pair needs"):
        _net(pooling="lesion")(x, None, mirror_pair=True)


def test_token_target_marks_the_tokens_under_the_lesion_and_flips_with_the_box():
    label = np.zeros((40, 48, 36), np.uint8)
    label[3:5, 30:33, 10:12] = 2  # values 2 and 3 are the finding, 1 is not
    label[30:31, 5:6, 20:21] = 1
    target = lesion_token_target(label, [[2, 3], [1]], (8, 8, 6))
    assert target.shape == (2, 8, 8, 6)
    # box voxel i of 40 lies in token floor(i * 8 / 40): x 3-4 -> 0, y 30-32 -> 5, z 10-11 -> 1 or 2
    assert {tuple(t) for t in np.argwhere(target[0].numpy() > 0)} <= {(0, 5, 1), (0, 5, 2)}
    assert (0, 5, 1) in {tuple(t) for t in np.argwhere(target[0].numpy() > 0)}
    assert np.argwhere(target[1].numpy() > 0).tolist() == [[6, 0, 3]]  # 20 * 6 / 36 -> 3
    # the split is symmetric: the target of the flipped box is the flipped target
    torch.testing.assert_close(lesion_token_target(label[::-1].copy(), [[2, 3], [1]], (8, 8, 6)), target.flip(1))


def test_whole_scan_view_flips_the_target_as_the_image():
    volume = np.zeros((1, 40, 48, 36), np.float32)
    label = np.zeros((40, 48, 36), np.uint8)
    volume[0, 4:10, 30:38, 6:12] = 5.0
    label[4:10, 30:38, 6:12] = 1
    target = lesion_token_target(label, [[1]], (16, 16, 16))
    for seed in range(6):
        image, counterpart, t, tc = whole_scan_view(volume, (64, 64, 64), np.random.default_rng(seed), True, target)
        pooled = torch.nn.functional.max_pool3d(image[None], 4)[0, 0]
        assert torch.equal(t[0] > 0, pooled > 2.5)  # the bright block IS the lesion, wherever the flips put it
        torch.testing.assert_close(counterpart, image.flip(1))
        torch.testing.assert_close(tc, t.flip(1))


def test_finding_label_values():
    assert finding_label_values(["haemorrhage"], {}, {"haemorrhage": {"1": "haemorrhage"}}) == [[1]]
    assert finding_label_values(["a"], {"a": [3, 2, 3]}, {"a": {"1": "x"}}) == [[2, 3]]
    with pytest.raises(InputError, match="no label values for finding 'b'"):
        finding_label_values(["b"], {}, {"a": {"1": "x"}})
    with pytest.raises(InputError, match="positive"):
        finding_label_values(["a"], {"a": [0]}, None)


class _Spec:  # stands in for a Preprocessing: the dataset passes it to the store only
    pass


def test_dataset_refuses_a_flag_that_contradicts_the_mask(monkeypatch):
    entries = [{"name": "c0", "image": ["c0.nii.gz"], "label": "l0.nii.gz", "haemorrhage": 1},
               {"name": "c1", "image": ["c1.nii.gz"], "label": "l1.nii.gz", "haemorrhage": 0}]
    volume = np.zeros((3, 20, 20, 20), np.float32)
    empty = np.zeros((20, 20, 20), np.uint8)
    dataset = WholeScanDataset(entries, (64, 64, 64), ["haemorrhage"], _Spec(), ["ct"], augment=False,
                               lesion_labels=[[1]], token_grid=(16, 16, 16))
    monkeypatch.setattr(dataset, "load", lambda index: (volume, empty))
    assert dataset[(0, 1)]["lesion"].sum() == 0  # healthy and an empty mask agree
    with pytest.raises(InputError, match="c0: its findings and its label map disagree: haemorrhage=1"):
        dataset[(0, 0)]


def test_balanced_token_loss_weighs_lesion_and_background_tokens_equally():
    task = ClassificationTask.__new__(ClassificationTask)
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    target = torch.tensor([1.0, 0.0, 0.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    torch.testing.assert_close(task.balanced_bce(logits, target), 0.5 * (bce[0] + bce[1:].mean()))
    torch.testing.assert_close(task.balanced_bce(logits, torch.zeros(4)),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros(4)))


# ------------------------------------------------------------------------------ inference

FINDINGS = ["haemorrhage", "mass effect"]


@pytest.fixture(scope="module")
def lesion_card(tmp_path_factory, save_classifier):
    torch.manual_seed(5)
    net = SASwinClassifier(in_channels=4, out_channels=2, pooling="lesion", saca_stages=[1], pairing="mirror-pair",
                           **SMALL)
    return save_classifier(net, tmp_path_factory.mktemp("lc") / "lesion.safetensors", FINDINGS, "tiny-lesion-classifier")


def _sample_paths():
    paths = sample_case_paths()
    return [paths[c] for c in ("t1", "t1ce", "t2", "flair")]


def test_mirror_pair_classifier_averages_the_scan_and_its_mirror_image(lesion_card):
    network, card = load_model(lesion_card)
    model = LoadedModel(network, card, str(lesion_card))
    rng = np.random.default_rng(0)
    box = rng.normal(size=(4, 30, 36, 28)).astype(np.float32)
    probabilities, maps = classify_prepared(box, model, "cpu", return_maps=True)
    assert maps.shape == (2, 30, 36, 28) and maps.dtype == np.float32
    x = torch.nn.functional.interpolate(torch.from_numpy(box)[None], size=(64, 64, 64), mode="trilinear")
    with torch.no_grad():
        a, map_a = network.eval()(x, x.flip(2), return_map=True)
        b, map_b = network(x.flip(2), x, return_map=True)
    expected = 0.5 * (torch.sigmoid(a) + torch.sigmoid(b))[0].numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)
    token_map = 0.5 * (torch.sigmoid(map_a) + torch.sigmoid(map_b).flip(2))
    resized = torch.nn.functional.interpolate(token_map, size=(30, 36, 28), mode="trilinear")[0].numpy()
    np.testing.assert_allclose(maps, resized, rtol=1e-4, atol=1e-5)
    # A map the network does not have is refused, not invented.
    plain = LoadedModel(_net(pooling="multiscale"), card, "x")
    with pytest.raises(InputError, match="no lesion map"):
        classify_prepared(box[:1], plain, "cpu", return_maps=True)


def test_maps_land_on_the_input_grid_whatever_the_storage_order(lesion_card, tmp_path):
    network, card = load_model(lesion_card)
    model = LoadedModel(network, card, str(lesion_card))
    ras = classify_case(_sample_paths(), model, device="cpu", maps=True)
    lps_paths = []
    for path in _sample_paths():
        out = tmp_path / path.name.replace("sample_glioma", "lps")
        write_nifti(reorient_to(read_image(path), "LPS"), out)
        lps_paths.append(out)
    lps = classify_case(lps_paths, model, device="cpu", maps=True)
    native = read_image(_sample_paths()[0])
    for name in FINDINGS:
        m = ras["maps"][name]
        assert m.shape == native.spatial_shape and 0.0 <= m.min() and m.max() <= 1.0
        assert m.max() > 0.0
        # LPS storage flips axes 0 and 1: the map read back in that order is the RAS map.
        # (The plane differs by ~0.07 degrees between the two, as in test_cli_classify.)
        back = lps["maps"][name][::-1, ::-1, :]
        assert np.abs(back - m).mean() < 0.01 * m.max()
        np.testing.assert_array_equal(lps["native"].affine, reorient_to(native, "LPS").affine)


def test_cli_writes_maps_on_the_input_grid_and_refuses_before_reading(lesion_card, tmp_path, capsys, save_classifier,
                                                                      monkeypatch):
    from SymmetryAwareCore.io import writers

    maps, out = tmp_path / "maps", tmp_path / "findings.json"
    args = ["classify", *map(str, _sample_paths()), "--model", str(lesion_card), "--device", "cpu"]
    real_write_map = writers.write_map

    def write_map_and_say_so(*a, **k):
        print("<map-written/>")
        return real_write_map(*a, **k)

    monkeypatch.setattr(writers, "write_map", write_map_and_say_so)
    capsys.readouterr()
    assert main(args + ["--maps", str(maps), "--output", str(out), "--progress", "machine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # A progress bar (the Slicer module's) reaches 100 % only once the maps are on disk.
    done = lines.index("<filter-stage>done</filter-stage>")
    assert lines.count("<map-written/>") == len(FINDINGS) and lines.index("<map-written/>") < done
    assert lines[done + 1] == "<filter-progress>1.0000</filter-progress>"
    assert all("1.0000" not in line for line in lines[:done])
    data = json.loads(out.read_text())["sample_glioma"]
    native = read_image(_sample_paths()[0])
    for name in FINDINGS:
        path = maps / finding_map_file("sample_glioma", name)
        assert data["maps"][name] == str(path)
        written = read_image(path)
        np.testing.assert_allclose(written.affine, native.affine, atol=1e-5)
        assert written.spatial_shape == native.spatial_shape
    assert finding_map_file("c", "mass effect") == "c_mass_effect_map.nii.gz"
    capsys.readouterr()
    # Existing maps are not replaced without --overwrite; the check comes before any scan is read.
    assert main(args + ["--maps", str(maps)]) == 2
    assert "exists" in capsys.readouterr().err
    # A classifier without a lesion map cannot give maps: refused in one line, exit 2.
    plain = save_classifier(SASwinClassifier(in_channels=4, out_channels=2, **SMALL), tmp_path / "plain.safetensors",
                            FINDINGS, "plain")
    assert main(["classify", *map(str, _sample_paths()), "--model", str(plain), "--maps", str(tmp_path / "m2")]) == 2
    assert "gives no lesion map" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()
