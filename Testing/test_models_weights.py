"""Model cards (safetensors + JSON), safe weight reading, and MONAI weights in SA-Swin."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SwinUNETR

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.models import (
    InputChannel,
    Label,
    ModelCard,
    SASwinClassifier,
    SASwinUNETR,
    load_model,
    load_monai_weights,
    save_model,
)
from SymmetryAwareCore.models.checkpoints import read_state_dict
from SymmetryAwareCore.models.registry import architecture_names, build_model

SMALL = dict(feature_size=12, depths=(1, 1, 1, 1))


def _card() -> ModelCard:
    return ModelCard(
        channels=[InputChannel("t1c", ("*t1c*",)), InputChannel("flair", ("*flair*", "*t2f*"))],
        modality="MR",
        labels=[Label(1, "necrotic core", (255, 0, 0)), Label(2, "oedema", (0, 255, 0))],
        preprocessing={"orientation": "RAS", "spacing_mm": [1, 1, 1], "roi_size": [96, 96, 96]},
        name="test", version="0.1.0", licence="Apache-2.0", training_data="phantoms", metrics={"dice_wt": 0.5}, extra={"run": {"steps": 1}},
    )  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = SASwinUNETR(2, 3, saca_position_encoding="learned", **SMALL)
    path = tmp_path_factory.mktemp("card") / "model.safetensors"
    card_path = save_model(model, path, _card())
    return model, path, card_path


def test_saving_the_same_weights_gives_the_same_bytes(saved, tmp_path):
    """A bundled file's SHA-256 depends on its tensors only, so a model scored once and bundled
    again is recognised (safetensors wrote a two-key metadata map in a random order)."""
    model, path, _ = saved
    hashes = {json.loads(save_model(model, tmp_path / f"again{i}.safetensors", _card()).read_text())["sha256"]
              for i in range(8)}
    assert hashes == {json.loads(path.with_suffix(".json").read_text())["sha256"]}


def _copy(saved, tmp_path):
    _, path, card_path = saved
    (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / card_path.name).write_bytes(card_path.read_bytes())
    return tmp_path / path.name, tmp_path / card_path.name


def test_round_trip_rebuilds_the_same_network(saved):
    model, path, card_path = saved
    assert card_path.name == "model.json" and sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.safetensors"]
    data = json.loads(card_path.read_text())
    assert data["architecture"] == "SASwinUNETR" and data["kwargs"]["saca_position_encoding"] == "learned"
    assert data["channels"] == [{"name": "t1c", "patterns": ["*t1c*"]}, {"name": "flair", "patterns": ["*flair*", "*t2f*"]}]
    assert len(data["sha256"]) == 64 and data["extra"] == {"run": {"steps": 1}}
    for source in (card_path, path):
        loaded, card = load_model(source)
        assert card.labels[1] == Label(2, "oedema", (0, 255, 0)) and card.metrics == {"dice_wt": 0.5}
        assert not loaded.training
        for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert k == k2 and torch.equal(a, b)
    assert loaded.init_kwargs["depths"] == (1, 1, 1, 1)


def test_tampered_weights_fail_the_hash(saved, tmp_path):
    path, card_path = _copy(saved, tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 mismatch") as info:
        load_model(card_path)
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_missing_and_unexpected_keys_are_named(saved, tmp_path):
    from safetensors.torch import save_file

    from SymmetryAwareCore.models.checkpoints import sha256_file

    path, card_path = _copy(saved, tmp_path)
    state = read_state_dict(path)
    card = json.loads(card_path.read_text())

    def rewrite(new_state):
        save_file(new_state, str(path))
        card["sha256"] = sha256_file(path)
        card_path.write_text(json.dumps(card))

    dropped = dict(state)
    del dropped["saca.stage4.pos_proj.weight"]
    rewrite(dropped)
    with pytest.raises(InputError, match=r"missing key.*saca\.stage4\.pos_proj\.weight"):
        load_model(card_path)
    extra = dict(state, **{"decoder0.bogus.weight": torch.zeros(2)})
    rewrite(extra)
    with pytest.raises(InputError, match=r"unexpected key.*decoder0\.bogus\.weight"):
        load_model(card_path)
    wrong = dict(state, **{"out.conv.conv.bias": torch.zeros(5)})
    rewrite(wrong)
    with pytest.raises(InputError, match=r"shape mismatch.*out\.conv\.conv\.bias"):
        load_model(card_path)


def test_missing_files_bad_cards_and_pickles_are_refused(saved, tmp_path):
    path, card_path = _copy(saved, tmp_path)
    with pytest.raises(InputError, match="model card not found"):
        load_model(tmp_path / "other.safetensors")
    card = json.loads(card_path.read_text())
    card["channels"] = card["channels"][:1]
    card_path.write_text(json.dumps(card))
    with pytest.raises(InputError, match="1 input channel"):
        load_model(card_path)
    card_path.write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        load_model(card_path)
    path.unlink()
    with pytest.raises(InputError, match="not found"):
        read_state_dict(path)
    # A pickle carrying an arbitrary object is refused by weights_only loading.
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Arbitrary()}, evil)
    with pytest.raises(InputError, match="weights_only"):
        read_state_dict(evil)
    with pytest.raises(ValueError):
        save_model(SASwinUNETR(2, 3, **SMALL), tmp_path / "model.pt", _card())
    with pytest.raises(ValueError):
        build_model("SwinUNETRv9", {})
    assert "SASwinUNETR" in architecture_names()


class _Arbitrary:
    pass


def _monai_checkpoint(tmp_path, monai_net):
    """A MONAI SwinUNETR checkpoint as DDP training writes it: wrapped, ``module.`` keys."""
    path = tmp_path / "swin_unetr.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in monai_net.state_dict().items()}}, path)
    return path


def test_monai_swinunetr_checkpoint_loads_into_sa_swin(tmp_path):
    torch.manual_seed(0)
    monai_net = SwinUNETR(in_channels=1, out_channels=2, **SMALL).eval()
    net = SASwinUNETR(1, 2, **SMALL).eval()
    report = load_monai_weights(net, _monai_checkpoint(tmp_path, monai_net))
    assert set(report.fresh) == {k for k in net.state_dict() if k.startswith("saca.")}
    assert report.ignored == () and len(report.loaded) == len(monai_net.state_dict())
    x = torch.randn(1, 1, 64, 32, 32)
    with torch.no_grad():
        for a, b in zip(net.forward_features(x)[1:], monai_net.swinViT(x, True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        plain = SASwinUNETR(1, 2, use_saca=False, **SMALL).eval()
        load_monai_weights(plain, monai_net.state_dict())
        torch.testing.assert_close(plain(x), monai_net(x), rtol=0, atol=0)


def test_monai_ssl_encoder_layout_loads_like_monai_load_from(tmp_path):
    torch.manual_seed(0)
    source = SwinUNETR(in_channels=1, out_channels=2, **SMALL)
    # The self-supervised checkpoint layout read by SwinUNETR.load_from: "module." +
    # encoder keys without "swinViT.", MLP layers named fc1/fc2; plus pretraining heads.
    ssl = {
        "module." + k[len("swinViT."):].replace("mlp.linear1", "mlp.fc1").replace("mlp.linear2", "mlp.fc2"): v
        for k, v in source.state_dict().items()
        if k.startswith("swinViT.")
    }
    ssl["module.rotation_head.weight"] = torch.zeros(4, 96)
    ssl["module.contrastive_head.weight"] = torch.zeros(8, 96)
    checkpoint = {"state_dict": ssl}
    reference = SwinUNETR(in_channels=1, out_channels=2, **SMALL)
    reference.load_from(checkpoint)  # MONAI's own reader of this layout
    path = tmp_path / "model_swinvit.pt"
    torch.save(checkpoint, path)
    classifier = SASwinClassifier(1, 3, **SMALL)
    report = load_monai_weights(classifier, path)
    assert set(report.ignored) == {"rotation_head.weight", "contrastive_head.weight"}
    assert all(k.startswith("swinViT.") for k in report.loaded)
    assert not any(k.startswith("swinViT.") for k in report.fresh)
    x = torch.randn(1, 1, 64, 32, 32)
    with torch.no_grad():
        for a, b in zip(classifier.forward_features(x)[1:], reference.swinViT(x, True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_monai_weights_with_missing_or_foreign_keys_are_refused(tmp_path):
    torch.manual_seed(0)
    state = SwinUNETR(in_channels=1, out_channels=2, **SMALL).state_dict()
    net = SASwinUNETR(1, 2, **SMALL)
    broken = {k: v for k, v in state.items() if k != "swinViT.layers2.0.blocks.0.attn.qkv.weight"}
    with pytest.raises(InputError, match=r"missing.*swinViT\.layers2\.0\.blocks\.0\.attn\.qkv\.weight"):
        load_monai_weights(net, broken)
    with pytest.raises(InputError, match=r"unexpected.*encoder1\.layer\.conv9\.weight"):
        load_monai_weights(net, dict(state, **{"encoder1.layer.conv9.weight": torch.zeros(1)}))
    half = {k: v for k, v in state.items() if not k.startswith("decoder1.")}
    with pytest.raises(InputError, match=r"missing.*decoder1\."):
        load_monai_weights(net, half)
    with pytest.raises(InputError, match="shape mismatch"):
        load_monai_weights(SASwinUNETR(1, 5, **SMALL), state)
    report = load_monai_weights(SASwinUNETR(1, 5, **SMALL), state, encoder_only=True)
    assert "out.conv.conv.weight" in report.ignored and "out.conv.conv.weight" in report.fresh


def test_pretrained_sa_swin_encoder_and_saca_move_to_the_segmentation_network():
    from SymmetryAwareCore.models import SASwinPretrainer

    torch.manual_seed(0)
    pretrained = SASwinPretrainer(1, **SMALL)
    net = SASwinUNETR(1, 2, **SMALL)
    report = load_monai_weights(net, pretrained.state_dict())
    assert {k.split(".")[0] for k in report.loaded} == {"swinViT", "saca"}
    assert report.ignored and all(k.startswith("head.") for k in report.ignored)
    assert torch.equal(net.saca["stage4"].attn.in_proj_weight, pretrained.saca["stage4"].attn.in_proj_weight)


def test_update_card_changes_fields_not_weights_and_leaves_a_broken_change_undone(tmp_path):
    """models.model_card.update_card (used to add measured figures or a bias correction to a
    shipped card): atomic, validated, never touching what gives the weights their meaning."""
    import shutil

    from SymmetryAwareCore.contract import BUNDLED_MODELS_DIR
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.models.model_card import read_card, update_card, verify_weights

    for f in ("interactive_glioma_saswin_f12.json", "interactive_glioma_saswin_f12.safetensors"):
        shutil.copy(BUNDLED_MODELS_DIR / f, tmp_path / f)
    path = tmp_path / "interactive_glioma_saswin_f12.json"
    before = path.read_text()
    with pytest.raises(InputError, match="may not change sha256"):
        update_card(path, lambda d: d.update(sha256="0" * 64))
    with pytest.raises(InputError, match="may not change kwargs"):
        update_card(path, lambda d: d["kwargs"].update(feature_size=24))
    with pytest.raises(InputError):  # an invalid preprocessing value: refused by the card's own checks
        update_card(path, lambda d: d["preprocessing"].update(bias_correction="n5"))
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["interactive_glioma_saswin_f12.json", "interactive_glioma_saswin_f12.safetensors"])
    card = update_card(path, lambda d: d.update(version="9.9.9"))
    assert card.version == "9.9.9" and read_card(path).version == "9.9.9" and verify_weights(path)
