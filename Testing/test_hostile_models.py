"""Hostile model files for ``models import`` / ``verify`` / ``list``: zip bombs, too many
members, cards with absurd values, names that cannot be folders, half-imported models.
Each is refused with one line naming the user's file, before anything is built, and leaves
no staging folder behind."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

import SymmetryAwareCore.cli.models as models_cli
from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.inference.model_source import list_models, resolve_model, standin_card
from SymmetryAwareCore.models.model_card import save_model
from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A saved SA-Swin (feature size 12, one block per stage) with its card."""
    torch.manual_seed(0)
    network = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, depths=(1, 1, 1, 1))
    card = standin_card()
    card.name = "tiny-test-model"
    return save_model(network, tmp_path_factory.mktemp("model") / "tiny.safetensors", card)


@pytest.fixture()
def store(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "store"
    monkeypatch.setenv("SYMMETRYAWARE_MODELS", str(folder))
    return folder


def _zip(path: Path, members: dict, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _model_zip(tmp_path: Path, tiny: Path, card_edit=None, weights: bytes = None, name="model.zip") -> Path:
    card = json.loads(tiny.read_text())
    if card_edit:
        card_edit(card)
    weights = tiny.with_suffix(".safetensors").read_bytes() if weights is None else weights
    return _zip(tmp_path / name, {"tiny/tiny.json": json.dumps(card), "tiny/tiny.safetensors": weights})


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("symmetryaware models: error:"), err
    assert "Traceback" not in err
    return lines[0]


def _hidden(store: Path) -> list:
    return [p.name for p in store.iterdir() if p.name.startswith(".")] if store.is_dir() else []


def test_a_good_model_imports_and_lists(tiny, tmp_path, store, capsys):
    assert main(["models", "import", str(_model_zip(tmp_path, tiny))]) == 0
    assert (store / "tiny-test-model" / "tiny.json").is_file()
    assert "tiny-test-model" in [row["name"] for row in list_models()]
    assert _hidden(store) == []


def test_import_errors_name_the_users_file_not_the_staging_copy(tiny, tmp_path, store, capsys):
    data = bytearray(tiny.with_suffix(".safetensors").read_bytes())
    data[-1] ^= 0xFF
    archive = _model_zip(tmp_path, tiny, weights=bytes(data))
    assert main(["models", "import", str(archive)]) == 2
    line = _one_line(capsys)
    assert f"{archive}: tiny/tiny.safetensors:" in line and "sha256 mismatch" in line
    assert ".partial" not in line and ".import" not in line
    assert not (store / "tiny-test-model").exists() and _hidden(store) == []


def test_zip_bomb_member_is_refused_before_extraction(tmp_path, store, capsys):
    bomb = _zip(tmp_path / "bomb.zip", {"m/m.json": "{}", "m/weights.safetensors": b"\0" * (64 << 20)})
    assert bomb.stat().st_size < 1 << 20
    assert main(["models", "import", str(bomb)]) == 2
    assert "compressed" in _one_line(capsys)
    assert _hidden(store) == []
    assert not store.exists() or not any(store.rglob("*.safetensors"))


def test_member_and_count_bounds(tmp_path, store, capsys, monkeypatch):
    monkeypatch.setattr(models_cli, "MAX_MEMBER_BYTES", 1 << 20)
    big = _zip(tmp_path / "big.zip", {"m/w.safetensors": os.urandom(2 << 20)}, zipfile.ZIP_STORED)
    assert main(["models", "import", str(big)]) == 2
    assert "allowed for one file" in _one_line(capsys)
    many = _zip(tmp_path / "many.zip", {f"m/{i}.txt": "x" for i in range(models_cli.MAX_MEMBERS + 1)})
    assert main(["models", "import", str(many)]) == 2
    assert "entries" in _one_line(capsys)


def test_not_a_zip_and_a_truncated_zip(tiny, tmp_path, store, capsys):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"PK\x03\x04 not really")
    whole = _model_zip(tmp_path, tiny, name="whole.zip").read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    for archive in (fake, cut):
        assert main(["models", "import", str(archive)]) == 2
        assert str(archive) in _one_line(capsys)


CARD_ATTACKS = {
    "feature_size": lambda c: c["kwargs"].update(feature_size=12000),
    "roi_size": lambda c: c["preprocessing"].update(roi_size=[1000000] * 3),
    "spacing": lambda c: c["preprocessing"].update(spacing=[0.001, 0.001, 0.001]),
    "depths": lambda c: c["kwargs"].update(depths=[2, 2, 2, 1000]),
    "in_channels": lambda c: c["kwargs"].update(in_channels=True),
    "weights_file": lambda c: c.update(weights_file="../../elsewhere.safetensors"),
    "control character": lambda c: c.update(name="evil\u0000name"),
    "sha256": lambda c: c.update(sha256="abc"),
    "threshold": lambda c: c["postprocessing"].update(threshold=7),
}


@pytest.mark.parametrize("attack", sorted(CARD_ATTACKS))
def test_card_values_out_of_range_are_refused_before_building(tiny, tmp_path, store, capsys, monkeypatch, attack):
    import SymmetryAwareCore.models.model_card as model_card

    monkeypatch.setattr(model_card, "build_model", lambda *a, **k: pytest.fail("a network was built"))
    archive = _model_zip(tmp_path, tiny, CARD_ATTACKS[attack])
    assert main(["models", "import", str(archive)]) == 2
    line = _one_line(capsys)
    assert attack in line and str(archive) in line
    assert _hidden(store) == [] and not (store / "tiny-test-model").exists()


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "con:", "x" * 300, " pad"])
def test_model_names_that_cannot_be_folders_are_refused(tiny, tmp_path, store, capsys, name):
    archive = _model_zip(tmp_path, tiny, lambda c: c.update(name=name))
    assert main(["models", "import", str(archive)]) == 2
    assert "name" in _one_line(capsys)
    assert not (tmp_path / "up").exists() and _hidden(store) == []


def test_resolving_a_name_with_a_nul_byte_is_a_clean_error():
    with pytest.raises(InputError, match="control character"):
        resolve_model("tiny\x00model")


def test_folder_import_refuses_links_to_outside_files(tiny, tmp_path, store, capsys):
    folder = tmp_path / "folder_model"
    folder.mkdir()
    (folder / "tiny.json").write_bytes(tiny.read_bytes())
    (folder / "tiny.safetensors").symlink_to("/dev/zero")
    assert main(["models", "import", str(folder)]) == 2
    assert "link" in _one_line(capsys)


def test_half_imported_models_are_never_listed_and_are_swept(tiny, tmp_path, store, capsys):
    # What killed imports leave: an older version's .import.* folder and a staging folder.
    for stale in (store / ".import.k3j2h1" / "model", store / ".tiny-test-model.a1b2c3d4.partial"):
        stale.mkdir(parents=True)
        (stale / "tiny.json").write_bytes(tiny.read_bytes())
        (stale / "tiny.safetensors").write_bytes(tiny.with_suffix(".safetensors").read_bytes())
    (store / ".tiny-test-model.lock").write_text("999999")
    assert "tiny-test-model" not in [row["name"] for row in list_models()]
    assert main(["models", "list"]) == 0
    assert "tiny-test-model" not in capsys.readouterr().out
    assert main(["models", "import", str(_model_zip(tmp_path, tiny))]) == 0
    assert _hidden(store) == []
    assert [row["name"] for row in list_models()].count("tiny-test-model") == 1


def test_deeply_nested_or_huge_json_does_not_break_listing(tiny, tmp_path, store, capsys):
    store.mkdir()
    (store / "deep.json").write_text("[" * 100000 + "]" * 100000)
    assert main(["models", "list"]) == 0
    archive = _zip(tmp_path / "deep.zip", {"m/deep.json": "[" * 100000 + "]" * 100000})
    assert main(["models", "import", str(archive)]) == 2
    assert "model card" in _one_line(capsys)


def test_existing_model_is_kept_without_overwrite(tiny, tmp_path, store, capsys):
    archive = _model_zip(tmp_path, tiny)
    assert main(["models", "import", str(archive)]) == 0
    card = store / "tiny-test-model" / "tiny.json"
    before = card.read_bytes()
    assert main(["models", "import", str(archive)]) == 2
    assert "--overwrite" in _one_line(capsys)
    assert main(["models", "import", str(archive), "--overwrite"]) == 0
    assert card.read_bytes() == before and _hidden(store) == []
