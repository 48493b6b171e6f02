"""The `symmetryaware segment` and `models` commands, as a user runs them.

A small real SA-Swin (feature size 12, 4 mm, one 64^3 window) is saved with its model card,
so the commands go through loading, hash and key checks and the real network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.inference.model_source import standin_card
from SymmetryAwareCore.models.model_card import save_model
from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR
from SymmetryAwareCore.phantoms import sample_case_paths


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    card = standin_card()
    card.name = "tiny-test-model"
    card.description = "random weights, for command-line tests"
    card.preprocessing = {"spacing": [4.0, 4.0, 4.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    folder = tmp_path_factory.mktemp("model")
    return save_model(network, folder / "tiny.safetensors", card)


def _sample(channel: str) -> str:
    return str(sample_case_paths()[channel])


def test_segment_writes_every_output_on_the_input_grid(small_model, tmp_path, capsys):
    inputs = [_sample(c) for c in ("flair", "t1", "t2", "t1ce")]  # order on purpose: matched by name
    code = main(["segment", *inputs, "-o", str(tmp_path), "--model", str(small_model), "--device", "cpu", "--progress", "none"])
    assert code == 0
    case = tmp_path / "sample_glioma"
    expected = {"segmentation.nii.gz", "segmentation.seg.nrrd", "attention.nii.gz", "asymmetry.nii.gz",
                "msp.mrk.json", "overview.png", "report.json"}
    assert expected <= {p.name for p in case.iterdir()}
    reference = nib.load(_sample("t1"))
    for name in ("segmentation.nii.gz", "attention.nii.gz", "asymmetry.nii.gz"):
        out = nib.load(str(case / name))
        assert out.shape == reference.shape
        np.testing.assert_allclose(out.affine, reference.affine, atol=1e-5)
    attention = np.asarray(nib.load(str(case / "attention.nii.gz")).get_fdata())
    assert attention.min() >= 0 and attention.max() <= 1 + 1e-6 and attention.max() > 0
    report = json.loads((case / "report.json").read_text())
    assert report["model"]["name"] == "tiny-test-model" and len(report["model"]["sha256"]) == 64
    assert report["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert set(report["runtime_s"]) >= {"loading", "aligning", "inference", "writing", "total"}
    assert report["device"] == "cpu"
    assert (case / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = capsys.readouterr().err
    assert "1 ok, 0 failed" in summary


def test_bad_inputs_give_one_line_and_exit_2(small_model, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    base = [sys.executable, "-m", "SymmetryAwareCore", "segment", "-o", str(tmp_path / "out"), "--model", str(small_model), "--progress", "none"]
    cases = {
        "missing": [str(tmp_path / "nope.nii.gz")],
        "channels": [_sample("t1"), _sample("t2")],
    }
    (tmp_path / "broken_t1.nii.gz").write_bytes(b"not an image")
    cases["unreadable"] = [str(tmp_path / "broken_t1.nii.gz"), _sample("t1ce"), _sample("t2"), _sample("flair")]
    for name, inputs in cases.items():
        done = subprocess.run(base + inputs, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, (name, done.stderr)
        lines = [l for l in done.stderr.strip().splitlines() if l]
        assert len(lines) == 1 and lines[0].startswith("symmetryaware segment: error:"), (name, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_batch_goes_on_after_a_failed_case(small_model, tmp_path, capsys):
    root = tmp_path / "cases"
    good = root / "good"
    good.mkdir(parents=True)
    for c in ("t1", "t1ce", "t2", "flair"):
        (good / f"good_{c}.nii.gz").write_bytes(Path(_sample(c)).read_bytes())
    bad = root / "bad"
    bad.mkdir()
    for c in ("t1", "t1ce", "t2", "flair"):
        image = nib.load(_sample(c))
        data = np.asarray(image.dataobj, dtype=np.float32)
        data[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(data, image.affine), str(bad / f"bad_{c}.nii.gz"))
    code = main(["segment", str(root), "-o", str(tmp_path / "out"), "--model", str(small_model), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad: error:" in err and "NaN" in err
    assert (tmp_path / "out" / "good" / "report.json").is_file()
    assert not (tmp_path / "out" / "bad").exists()
    assert "2 case(s): 1 ok, 1 failed" in err
    # Run again: the finished case is skipped, not recomputed.
    main(["segment", str(root / "good"), "-o", str(tmp_path / "out"), "--model", str(small_model), "--progress", "none"])
    assert "skipped" in capsys.readouterr().err


def test_machine_progress_lines(small_model, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "SymmetryAwareCore", "segment", "--sample", "-o", str(tmp_path), "--model", str(small_model),
         "--progress", "machine", "--no-overview"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    values = [float(l[len("<filter-progress>"):-len("</filter-progress>")]) for l in done.stdout.splitlines() if l.startswith("<filter-progress>")]
    stages = [l for l in done.stdout.splitlines() if l.startswith("<filter-stage>")]
    assert values == sorted(values) and values[-1] == 1.0 and len(values) > 5
    assert "<filter-stage>inference</filter-stage>" in stages


def test_models_import_verify_and_zip_traversal(small_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYMMETRYAWARE_MODELS", str(tmp_path / "store"))
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(small_model, "tiny/tiny.json")
        zf.write(small_model.with_suffix(".safetensors"), "tiny/tiny.safetensors")
    assert main(["models", "import", str(archive)]) == 0
    assert main(["models", "verify", "tiny-test-model"]) == 0
    assert main(["models", "list"]) == 0
    assert "tiny-test-model" in capsys.readouterr().out
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.json", "{}")
    assert main(["models", "import", str(evil)]) == 2
    assert "outside the model folder" in capsys.readouterr().err
    assert not (tmp_path / "escaped.json").exists()
    # A weights file that no longer matches its card's hash is refused.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "tiny.json").write_bytes(small_model.read_bytes())
    data = bytearray(small_model.with_suffix(".safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "tiny.safetensors").write_bytes(bytes(data))
    assert main(["models", "verify", str(tampered / "tiny.json")]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err


def test_attention_command_writes_only_maps_plane_and_report(small_model, tmp_path):
    code = main(["attention", "--sample", "-o", str(tmp_path), "--model", str(small_model), "--device", "cpu", "--progress", "none"])
    assert code == 0
    written = {p.name for p in (tmp_path / "sample_glioma").iterdir()}
    assert written == {"attention.nii.gz", "asymmetry.nii.gz", "msp.mrk.json", "report.json"}
    reference = nib.load(_sample("t1"))
    attention = nib.load(str(tmp_path / "sample_glioma" / "attention.nii.gz"))
    assert attention.shape == reference.shape
    np.testing.assert_allclose(attention.affine, reference.affine, atol=1e-5)
