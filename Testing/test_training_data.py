"""Datasets read from datalists of real files, and the real SA-Swin models driven by the engine.

Files are written in LPS order on purpose: the datasets must bring them to RAS (left-right
= axis X) before pairing crops. The expected values are computed here independently, with
nibabel's ``as_closest_canonical``, for an unaligned run at the files' own spacing (where
preparation is an exact permutation).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from SymmetryAwareCore.geometry.rigid import reorient_to
from SymmetryAwareCore.io.image import Image
from SymmetryAwareCore.io.writers import write_nifti
from SymmetryAwareTraining.cli import main
from SymmetryAwareCore.preprocessing import Preprocessing, prepare_case
from SymmetryAwareTraining.data import PairedCropDataset, WholeScanDataset
from SymmetryAwareTraining.datalist import load_datalist

ROI = (24, 24, 24)
NAMES = ["t1", "flair"]
# Unaligned at the files' own 4 mm: the frame is the RAS grid itself (no resampling).
RAS_4MM = Preprocessing(spacing=(4, 4, 4), roi_size=(24, 24, 24), normalisation="zscore-nonzero", alignment="none")


@pytest.fixture(autouse=True)
def _prepared_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMMETRYAWARE_CACHE", str(tmp_path / "prepared"))


def _zscore(volume):
    out = np.zeros_like(volume)
    for c in range(volume.shape[0]):
        inside = volume[c] != 0
        values = volume[c][inside].astype(np.float64)
        out[c][inside] = (values - values.mean()) / values.std()
    return out


@pytest.fixture(scope="module")
def cases(tmp_path_factory, mni_t1):
    """Three 4 mm brains (50, 59, 48 in RAS) stored as LPS, each with a BraTS-style label blob."""
    root = tmp_path_factory.mktemp("cases")
    small = Image(np.ascontiguousarray(mni_t1.array[::4, ::4, ::4]), mni_t1.affine @ np.diag([4, 4, 4, 1]))
    entries = []
    for n, centre in enumerate([(15, 30, 25), (35, 25, 20), (20, 35, 30)]):
        label = np.zeros(small.spatial_shape, np.uint8)
        x, y, z = centre
        label[x - 4 : x + 4, y - 4 : y + 4, z - 4 : z + 4] = 2
        label[x - 2 : x + 2, y - 2 : y + 2, z - 2 : z + 2] = 1
        label[x - 1 : x + 1, y - 1 : y + 1, z - 1 : z + 1] = 4
        image = small.with_array(small.array * (1.0 + 0.1 * n) + (label > 0) * 30.0)
        write_nifti(reorient_to(image, "LPS"), root / f"c{n}_t1.nii.gz")
        write_nifti(reorient_to(small.with_array(image.array * 0.5 + 5.0 * (image.array > 0)), "LPS"),
                    root / f"c{n}_flair.nii.gz")
        write_nifti(reorient_to(small.with_array(label), "LPS"), root / f"c{n}_seg.nii.gz", dtype=np.uint8)
        entries.append({"case": f"c{n}", "image": [f"c{n}_t1.nii.gz", f"c{n}_flair.nii.gz"],
                        "label": f"c{n}_seg.nii.gz", "fold": n % 2, "status": "patient",
                        "findings": {"bleed": n % 2, "fracture": int(n == 2)}})
    path = root / "list.json"
    path.write_text(json.dumps({"training": entries}))
    return path


def _canonical(path):
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, dtype=np.float32)


def test_paired_crops_from_lps_files_are_ras_mirror_pairs(cases):
    entries = load_datalist(cases).sections["training"]
    ds = PairedCropDataset(entries, ROI, RAS_4MM, NAMES, seed=4, segmentation=True, pos_fraction=1.0, augment=False)
    full = _zscore(np.stack([_canonical(p) for p in entries[1]["image"]]))
    full_label = _canonical(entries[1]["label"])
    prepared = prepare_case(entries[1]["image"], NAMES, RAS_4MM, label_path=entries[1]["label"])
    np.testing.assert_allclose(prepared.volume, full, atol=1e-5)  # an exact permutation, then z-scores
    volume, label = full[(slice(None),) + prepared.box], full_label[prepared.box]
    width = volume.shape[1]
    for epoch in range(3):
        sample = ds[(epoch, 1)]
        a, b, c = sample["start"].tolist()
        box = np.s_[:, a : a + ROI[0], b : b + ROI[1], c : c + ROI[2]]
        np.testing.assert_allclose(sample["image"].numpy(), volume[box], atol=1e-5)
        mirror = volume[:, width - a - ROI[0] : width - a, b : b + ROI[1], c : c + ROI[2]][:, ::-1]
        np.testing.assert_allclose(sample["counterpart"].numpy(), mirror, atol=1e-5)
        regions = sample["label"].numpy().astype(bool)
        crop = label[box[1:]]
        np.testing.assert_array_equal(regions[1], crop > 0)  # WT
        np.testing.assert_array_equal(regions[2], crop == 4)  # ET
        assert regions[2].any()  # pos_fraction 1: centred on tumour
    # Same key, same sample (whatever the worker); another epoch, another crop.
    assert torch.equal(ds[(0, 1)]["image"], ds[(0, 1)]["image"])
    assert not torch.equal(ds[(0, 1)]["start"], ds[(1, 1)]["start"]) or not torch.equal(ds[(0, 1)]["image"], ds[(1, 1)]["image"])


def test_whole_scan_counterpart_is_the_flip(cases):
    entries = load_datalist(cases).sections["training"]
    ds = WholeScanDataset(entries, (32, 32, 32), ["fracture", "bleed"], RAS_4MM, NAMES, augment=True)
    sample = ds[(2, 2)]
    assert sample["image"].shape == (2, 32, 32, 32)
    assert torch.equal(sample["counterpart"], sample["image"].flip(1))
    assert sample["target"].tolist() == [1.0, 0.0]


def _seg_args(cases, out, *extra):
    return ["finetune-seg", "--datalist", str(cases), "--fold", "1", "--output-dir", str(out), "--device", "cpu",
            "--steps", "1", "--set", "data.roi_size=[64,64,64]", "--set", "optim.warmup_steps=0",
            "--set", "model.kwargs={in_channels: 2, out_channels: 3, feature_size: 12}", *extra]


@pytest.mark.slow
def test_finetune_seg_one_step_with_sa_swin_unetr(cases, tmp_path):
    pytest.importorskip("SymmetryAwareCore.models.sa_swin_unetr")
    from SymmetryAwareCore.models.model_card import load_model

    out = tmp_path / "seg"
    assert main(_seg_args(cases, out)) == 0
    # The model library's own loader rebuilds it (hash and keys checked).
    model, card = load_model(out / "model.json")
    assert card.architecture == "SASwinUNETR" and card.extra["regions"] == ["TC", "WT", "ET"]
    assert [c.name for c in card.channels] == ["channel0", "channel1"] and card.kwargs["feature_size"] == 12
    assert [label.value for label in card.labels] == [1, 2, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["final_losses"]["loss"])

    # evaluate --model: mirror-paired inference on the evaluation fold (c1), then scores.
    report = tmp_path / "report"
    assert main(["evaluate", "--datalist", str(cases), "--fold", "1", "--model", str(out), "--output", str(report),
                 "--device", "cpu", "--overlap", "0"]) == 0
    prediction = nib.load(str(report / "predictions" / "c1.nii.gz"))
    # The deployed path: labels on the case file's own (LPS) grid, like `segment`.
    reference = nib.load(str(load_datalist(cases).sections["training"][1]["image"][0]))
    assert prediction.shape == reference.shape and np.allclose(prediction.affine, reference.affine, atol=1e-5)
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 4}
    rows = json.loads((report / "metrics.json").read_text())["cases"]
    assert [r["case"] for r in rows] == ["c1"] and 0.0 <= rows[0]["WT_dice"] <= 1.0


def test_finetune_refuses_leaky_pretraining_list(cases, tmp_path, capsys):
    pre = tmp_path / "pre.json"
    pre.write_text(json.dumps({"training": [{"case": "c1", "image": "x.nii.gz"}]}))
    assert main(_seg_args(cases, tmp_path / "seg", "--set", f"data.pretrain_datalist={pre}")) == 2
    err = capsys.readouterr().err
    assert "leakage" in err and "c1" in err


@pytest.mark.slow
def test_finetune_cls_one_step_with_sa_swin_classifier(cases, tmp_path):
    pytest.importorskip("SymmetryAwareCore.models.sa_swin_classifier")
    out = tmp_path / "cls"
    args = ["finetune-cls", "--datalist", str(cases), "--fold", "1", "--output-dir", str(out), "--device", "cpu",
            "--steps", "1", "--set", "data.roi_size=[64,64,64]", "--set", "data.findings=[bleed, fracture]",
            "--set", "model.name=SASwinClassifier",
            "--set", "model.kwargs={in_channels: 2, out_channels: 2, feature_size: 12}"]
    assert main(args) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["extra"]["findings"] == ["bleed", "fracture"] and card["architecture"] == "SASwinClassifier"



@pytest.mark.slow
def test_finetune_cls_lesion_map_mirror_pair_trains_the_map_on_the_masks(cases, tmp_path, capsys):
    """pooling=lesion with mirror pairs: the token loss is computed from the label maps and
    each step supervises the scan and its mirror image; a finding flag that contradicts a
    case's mask stops the run with one line naming the case."""
    listed = json.loads(cases.read_text())
    for entry in listed["training"]:  # every case holds a blob: 'lesion' (labels 1, 2, 4) is 1
        entry["findings"]["lesion"] = 1
        entry["image"] = [str(cases.parent / p) for p in entry["image"]]
        entry["label"] = str(cases.parent / entry["label"])
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps(listed))
    out = tmp_path / "cls_lesion"
    args = ["finetune-cls", "--datalist", str(datalist), "--fold", "1", "--device", "cpu", "--steps", "1",
            "--set", "data.roi_size=[64,64,64]", "--set", "data.findings=[lesion]",
            "--set", "data.finding_labels={lesion: [1, 2, 4]}", "--set", "model.name=SASwinClassifier",
            "--set", "model.kwargs={in_channels: 2, out_channels: 1, feature_size: 12, depths: [1, 1, 1, 1], "
                     "pooling: lesion, saca_stages: [1], pairing: mirror-pair}"]
    assert main(args + ["--output-dir", str(out)]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["kwargs"]["pooling"] == "lesion" and card["kwargs"]["pairing"] == "mirror-pair"
    assert card["extra"]["lesion_map"].startswith("token logits of Swin stage 1 (roi/4")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["supervised_samples_per_step"] == 2  # batch 1: the scan and its mirror image
    assert summary["final_losses"]["token_bce"] > 0.0
    listed["training"][0]["findings"]["lesion"] = 0
    datalist.write_text(json.dumps(listed))
    capsys.readouterr()
    assert main(args + ["--output-dir", str(tmp_path / "bad")]) == 2
    assert "c0: its findings and its label map disagree: lesion=0 (label map: 1)" in capsys.readouterr().err


def test_align_puts_tilted_phantoms_into_their_symmetric_frame(tmp_path):
    """Phantoms are posed (tilted, shifted). Aligned preparation puts the true plane's normal
    along the frame's left-right axis, through the array's central column, so the mirror
    relation of the crops is the anatomical one; unaligned preparation does not."""
    pytest.importorskip("SymmetryAwareCore.phantoms.dataset")
    from SymmetryAwareCore.phantoms.dataset import write_dataset

    path = write_dataset(tmp_path / "ph", cases=2, seed=3, kind="glioma", spacing=4.0, folds=2,
                         healthy_fraction=0.5, progress=lambda text: None)
    aligned_spec = Preprocessing(spacing=(4, 4, 4), roi_size=(64, 64, 64), normalisation="zscore-nonzero")
    for entry in load_datalist(path).sections["training"]:
        truth = json.loads((path.parent / f"{entry['name']}.json").read_text())["true_plane"]
        normal, point = np.asarray(truth["normal_ras"]), np.asarray(truth["point_ras"])

        def plane_error(frame):
            affine, shape = frame.affine, frame.shape
            axis = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
            angle = np.degrees(np.arccos(min(1.0, abs(float(axis @ normal)))))
            centre = affine @ np.array([(shape[0] - 1) / 2, shape[1] / 2, shape[2] / 2, 1.0])
            return angle, abs(float((centre[:3] - point) @ normal))

        plain = prepare_case(entry["image"], ["t1", "t1ce", "t2", "flair"], aligned_spec.replace(alignment="none"),
                             label_path=entry["label"])
        aligned = prepare_case(entry["image"], ["t1", "t1ce", "t2", "flair"], aligned_spec, label_path=entry["label"])
        assert aligned.label.shape == aligned.volume.shape[1:]
        angle, offset = plane_error(aligned.frame)
        assert angle < 4.0 and offset < 4.0, (angle, offset)
        angle, offset = plane_error(plain.frame)
        assert angle > 4.0 or offset > 4.0  # the posed phantom really was off
