"""``symmetryaware-train datalist``: BraTS 2021/2023, MSD Task01 and case folders -> checked datalists.

Phantom cases are the real MNI brain at 3 mm (64 x 64 x 63, aligned) with a tumour blob
(oedema, necrotic core, enhancing rim) whose place and size differ per case, written in each
layout's own spelling: file endings, channel order, label values.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareTraining.cli import main
from SymmetryAwareTraining.datalist import load_datalist
from SymmetryAwareTraining.importers import CHANNELS, assign_folds, build_datalist, detect_layout

# Project labels per case: centre (voxels) and radius of the oedema; the last case has no ET.
BLOBS = [((20, 30, 30), 7, True), ((44, 34, 28), 6, True), ((24, 22, 36), 5, True), ((40, 40, 32), 8, False)]


def phantom_cases(mni_t1):
    """``[(name, {channel: (X, Y, Z) float32}, project labels (X, Y, Z) uint8)]`` and the affine."""
    small = mni_t1.array[::3, ::3, ::3][1:65, 7:71, :].astype(np.float32)
    shift = np.eye(4)
    shift[:3, 3] = (1, 7, 0)
    affine = mni_t1.affine @ np.diag([3.0, 3.0, 3.0, 1.0]) @ shift
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in small.shape], indexing="ij"), -1)
    cases = []
    for n, (centre, radius, with_et) in enumerate(BLOBS):
        r = np.linalg.norm(grid - np.array(centre), axis=-1)
        labels = np.zeros(small.shape, np.uint8)
        labels[r < radius] = 2
        labels[r < radius * 0.6] = 4 if with_et else 1
        labels[r < radius * 0.35] = 1
        brain = small > 0
        labels[~brain] = 0
        tumour = labels > 0
        channels = {
            "t1": small * np.where(tumour, 0.7, 1.0),
            "t1ce": small + (labels == 4) * 60.0,
            "t2": small * 0.8 + tumour * 50.0,
            "flair": small * 0.6 + (labels == 2) * 70.0,
        }
        cases.append((f"{n:05d}", {k: v.astype(np.float32) for k, v in channels.items()}, labels))
    return cases, affine


def _save(array, affine, path, dtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(array if dtype is None else array.astype(dtype)), affine)
    nib.save(image, str(path))


def write_brats(root, cases, affine, year: int):
    """BraTS 2021 (``BraTS2021_00000/BraTS2021_00000_t1.nii.gz``, ET 4) or 2023
    (``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz``, ET 3)."""
    endings = ({"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"} if year == 2021 else
               {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"})
    for number, channels, labels in cases:
        name = f"BraTS2021_{number}" if year == 2021 else f"BraTS-GLI-{number}-000"
        for channel, volume in channels.items():
            _save(volume, affine, root / name / f"{name}{endings[channel]}.nii.gz")
        seg = labels if year == 2021 else np.where(labels == 4, 3, labels)
        _save(seg, affine, root / name / f"{name}{endings['seg']}.nii.gz", np.uint8)
    return root


MSD_ORDER = ("flair", "t1", "t1ce", "t2")  # Task01's channels 0..3: FLAIR, T1w, t1gd, T2w
MSD_LABEL = {0: 0, 2: 1, 1: 2, 4: 3}  # project -> MSD: oedema 1, non-enhancing 2, enhancing 3


def write_msd(root, cases, affine):
    meta = {"name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "training": []}
    for number, channels, labels in cases:
        name = f"BRATS_{number}"
        _save(np.stack([channels[c] for c in MSD_ORDER], axis=-1), affine, root / "imagesTr" / f"{name}.nii.gz")
        lookup = np.zeros(5, np.uint8)
        for project, msd in MSD_LABEL.items():
            lookup[project] = msd
        _save(lookup[labels], affine, root / "labelsTr" / f"{name}.nii.gz", np.uint8)
        meta["training"].append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def phantoms(mni_t1):
    return phantom_cases(mni_t1)


def _array(path):
    return np.asarray(nib.load(str(path)).dataobj)


def test_brats2021_folder_becomes_a_checked_datalist(tmp_path, phantoms, capsys):
    cases, affine = phantoms
    source = write_brats(tmp_path / "BraTS2021", cases, affine, 2021)
    # Two broken cases: one lacks its FLAIR, one has a T2 on another grid.
    (source / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz").unlink()
    t2 = source / "BraTS2021_00002" / "BraTS2021_00002_t2.nii.gz"
    _save(_array(t2)[:-2], affine, t2)
    for number in ("00004", "00005"):  # two more good cases, copies with other names
        write_brats(source, [(number, cases[0][1], cases[0][2])], affine, 2021)
    assert detect_layout(source) == "brats2021"
    out = tmp_path / "lists" / "brats.json"
    assert main(["datalist", str(source), "--output", str(out), "--folds", "2", "--seed", "3"]) == 0
    err = capsys.readouterr().err
    assert "4 case(s) of layout brats2021 in 2 folds" in err and "2 skipped" in err
    body = json.loads(out.read_text())
    skipped = {s["case"]: s["reason"] for s in body["import"]["skipped"]}
    assert set(skipped) == {"BraTS2021_00001", "BraTS2021_00002"}
    assert "channel flair" in skipped["BraTS2021_00001"] and "t2 is on another grid" in skipped["BraTS2021_00002"]
    assert body["channels"] == list(CHANNELS) and body["spacing_mm"] == pytest.approx(3.0)
    assert sorted(e["fold"] for e in body["training"]) == [0, 0, 1, 1]
    entry = next(e for e in body["training"] if e["case"] == "BraTS2021_00000")
    # Source outside the list's folder: absolute paths, channels in the project's order, labels as they are.
    assert [p.rsplit("_", 1)[1] for p in entry["image"]] == ["t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz", "flair.nii.gz"]
    assert entry["label"].endswith("BraTS2021_00000_seg.nii.gz") and "source_label" not in entry
    assert body["import"]["label_mapping"] == {"0": 0, "1": 1, "2": 2, "4": 4}
    loaded = load_datalist(out)
    train, evaluation = loaded.split(0)
    assert len(train) == 2 and len(evaluation) == 2
    # An existing list is not replaced silently; the source's files were only read.
    assert main(["datalist", str(source), "--output", str(out), "--folds", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_brats2023_enhancing_label_is_mapped_explicitly(tmp_path, phantoms):
    cases, affine = phantoms
    source = write_brats(tmp_path / "data" / "BraTS2023", cases, affine, 2023)
    out = tmp_path / "data" / "brats23.json"
    result = build_datalist(source, out, folds=2, log=lambda _: None)
    assert result.layout == "brats2023" and result.cases == 4 and not result.skipped
    body = json.loads(out.read_text())
    assert body["import"]["label_mapping"]["3"] == 4 and "rewritten" in body["import"]["label_mapping_note"]
    entry = body["training"][0]
    # Inside the list's folder: relative paths; the relabelled copy beside the list, the source kept.
    assert entry["image"][1] == "BraTS2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1c.nii.gz"
    assert entry["label"] == "brats23_files/BraTS-GLI-00000-000/BraTS-GLI-00000-000_seg.nii.gz"
    converted = _array(out.parent / entry["label"])
    original = _array(out.parent / entry["source_label"])
    assert set(np.unique(original)) == {0, 1, 2, 3} and set(np.unique(converted)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(converted, cases[0][2])
    # Stratified: the case without enhancing tumour is recorded as such.
    assert [e["enhancing"] for e in body["training"]] == [True, True, True, False]
    # A second import next to the first does not take the converted folder for a case.
    again = build_datalist(source, out, folds=2, overwrite=True, log=lambda _: None)
    assert again.cases == 4


def test_msd_4d_images_are_split_into_project_channels(tmp_path, phantoms):
    cases, affine = phantoms
    source = write_msd(tmp_path / "Task01_BrainTumour", cases, affine)
    out = tmp_path / "msd.json"
    result = build_datalist(source, out, folds=2, log=lambda _: None)
    assert result.layout == "msd" and result.cases == 4
    body = json.loads(out.read_text())
    entry = body["training"][0]
    for channel, path in zip(CHANNELS, entry["image"]):
        assert path == f"msd_files/BRATS_00000/BRATS_00000_{channel}.nii.gz"
        np.testing.assert_allclose(_array(tmp_path / path), cases[0][1][channel])
        assert np.allclose(nib.load(str(tmp_path / path)).affine, affine)
    np.testing.assert_array_equal(_array(tmp_path / entry["label"]), cases[0][2])  # 1<->2 swapped, 3 -> 4
    assert body["import"]["channel_order"]["flair"] == "volume 0 of the 4D image"
    assert body["import"]["label_mapping"] == {"0": 0, "1": 2, "2": 1, "3": 4}
    # A dataset.json with another channel order is refused, not guessed.
    meta = json.loads((source / "dataset.json").read_text())
    meta["modality"] = {"0": "T1w", "1": "FLAIR", "2": "t1gd", "3": "T2w"}
    (source / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="channel mapping"):
        build_datalist(source, tmp_path / "msd2.json", folds=2, log=lambda _: None)
    with pytest.raises(InputError, match="dataset.json"):
        build_datalist(source, source / "dataset.json", folds=2, overwrite=True, log=lambda _: None)


def test_plain_case_folders_and_a_bad_label(tmp_path, phantoms):
    cases, affine = phantoms
    source = tmp_path / "mine"
    for number, channels, labels in cases:
        for channel, volume in channels.items():
            _save(volume, affine, source / f"p{number}" / f"scan_{channel}.nii.gz")
        _save(labels, affine, source / f"p{number}" / "seg.nii.gz", np.uint8)
    _save(np.where(cases[0][2] == 1, 7, cases[0][2]), affine, source / "p00000" / "seg.nii.gz", np.uint8)
    result = build_datalist(source, tmp_path / "mine.json", folds=3, log=lambda _: None)
    assert result.layout == "folders" and result.cases == 3
    assert result.skipped == [{"case": "p00000", "reason": result.skipped[0]["reason"]}]
    assert "label values [7]" in result.skipped[0]["reason"]
    with pytest.raises(InputError, match="only 3 usable case"):
        build_datalist(source, tmp_path / "five.json", folds=5, log=lambda _: None)


def test_fold_file_reproduces_published_splits(tmp_path, phantoms):
    cases, affine = phantoms
    source = write_brats(tmp_path / "b21", cases, affine, 2021)
    folds = tmp_path / "splits.json"
    folds.write_text(json.dumps({"train_30pct": ["BraTS2021_00003", "BraTS2021_00000"], "rest": ["BraTS2021_00001"]}))
    out = tmp_path / "split.json"
    result = build_datalist(source, out, fold_file=folds, log=lambda _: None)
    body = json.loads(out.read_text())
    assert {e["case"]: e["fold"] for e in body["training"]} == {"BraTS2021_00000": 0, "BraTS2021_00003": 0,
                                                               "BraTS2021_00001": 1}
    assert body["import"]["fold_names"] == ["train_30pct", "rest"]
    assert result.skipped == [{"case": "BraTS2021_00002", "reason": "not in the fold file"}]
    folds.write_text(json.dumps([["BraTS2021_00000"], ["BraTS2021_09999"]]))
    with pytest.raises(InputError, match="BraTS2021_09999"):
        build_datalist(source, tmp_path / "x.json", fold_file=folds, log=lambda _: None)
    assert not (tmp_path / "x.json").exists()


def test_folds_are_seeded_balanced_and_span_tumour_sizes():
    from SymmetryAwareTraining.importers import CheckedCase

    cases = [CheckedCase(f"c{i:02d}", None, {}, wt_ml=float(i), has_et=i % 4 != 0, spacing=(1, 1, 1))
             for i in range(20)]
    a = assign_folds(cases, 5, seed=1)
    assert a == assign_folds(list(reversed(cases)), 5, seed=1)  # order of discovery does not matter
    assert a != assign_folds(cases, 5, seed=2)
    sizes = np.bincount(list(a.values()))
    assert sizes.tolist() == [4] * 5
    for fold in range(5):  # every fold has a small and a large tumour
        volumes = [c.wt_ml for c in cases if a[c.name] == fold]
        assert min(volumes) < 10 and max(volumes) >= 10
