"""The ``symmetryaware phantom`` command and the bundled sample case."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.phantoms import make_subject, sample_case_paths, write_dataset
from SymmetryAwareCore.phantoms.sample import SAMPLE_ARGS

ARGS = ["--seed", "1", "--spacing", "4"]  # 4 mm keeps each case well under a second


def _load(path: Path) -> nib.Nifti1Image:
    assert path.is_file(), path
    return nib.load(str(path))


def test_command_writes_images_labels_truth_and_datalist(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["phantom", "--output-dir", str(out), "--cases", "4", "--kind", "glioma", "--modality", "mri",
               "--folds", "2", "--healthy-fraction", "0.5", *ARGS])
    assert rc == 0
    captured = capsys.readouterr()
    assert "phantom 4/4" in captured.err  # progress goes to stderr
    datalist = json.loads((out / "datalist.json").read_text())
    entries = datalist["training"]
    assert len(entries) == 4 and datalist["validation"] == []
    assert sorted({e["fold"] for e in entries}) == [0, 1]
    assert datalist["channels"] == ["t1", "t1ce", "t2", "flair"]
    assert datalist["labels"]["glioma"] == {"1": "necrotic core", "2": "oedema", "4": "enhancing tumour"}
    for entry in entries:
        name = entry["name"]
        assert entry["image"] == [f"{name}_{c}.nii.gz" for c in ("t1", "t1ce", "t2", "flair")]
        for rel in entry["image"] + [entry["label"], entry["case_json"]]:
            assert not Path(rel).is_absolute()
        images = [_load(out / rel) for rel in entry["image"]]
        label = _load(out / entry["label"])
        for img in images:
            assert img.shape == label.shape
            np.testing.assert_allclose(img.affine, label.affine)
        case = json.loads((out / entry["case_json"]).read_text())
        assert entry["healthy"] == int(case["status"] == "healthy") == 1 - entry["patient"]
        assert entry["glioma"] == int("glioma" in case["findings"])
        labels = np.asarray(label.dataobj)
        assert labels.any() == bool(entry["patient"])
        assert np.linalg.norm(case["true_plane"]["normal_ras"]) == pytest.approx(1.0)
        assert np.asarray(case["pose"]["world_from_head"]).shape == (4, 4)
        # The case seed rebuilds this very case.
        again = make_subject(case["seed"], case["kind"], "mri", 4.0, case["scenario"])
        np.testing.assert_array_equal(again.label.array, labels)
    assert {e["healthy"] for e in entries} == {0, 1}


def test_ct_dataset_with_train_validation_split(tmp_path):
    out = tmp_path / "ct"
    rc = main(["phantom", "--output-dir", str(out), "--cases", "3", "--kind", "haemorrhage", "--modality", "ct",
               "--folds", "0", "--healthy-fraction", "0", *ARGS])
    assert rc == 0
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["training"]) == 2 and len(datalist["validation"]) == 1
    entry = datalist["validation"][0]
    assert entry["image"] == [f"{entry['name']}_ct.nii.gz"] and entry["haemorrhage"] == 1
    ct = np.asarray(_load(out / entry["image"][0]).dataobj)
    label = np.asarray(_load(out / entry["label"]).dataobj)
    assert 50 <= np.median(ct[label == 1]) <= 80


def test_bleed_ranges_reach_every_case_and_the_datalist(tmp_path, capsys):
    out = tmp_path / "ct"
    rc = main(["phantom", "--output-dir", str(out), "--cases", "2", "--kind", "haemorrhage", "--modality", "ct",
               "--folds", "0", "--healthy-fraction", "0", "--bleed-radius-mm", "3,4", "--bleed-hu", "45,47", *ARGS])
    assert rc == 0
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["bleed_radius_mm"] == [3.0, 4.0] and datalist["bleed_hu"] == [45.0, 47.0]
    for entry in datalist["training"] + datalist["validation"]:
        for lesion in json.loads((out / entry["case_json"]).read_text())["lesions"]:
            assert 3.0 <= lesion["radius_mm"] <= 4.0 and 45.0 <= lesion["value_hu"] <= 47.0
    # MRI has no bleeds to shape; a malformed range is an argparse error. Nothing is written.
    assert main(["phantom", "--output-dir", str(tmp_path / "mri"), "--cases", "1", "--folds", "0", "--bleed-hu", "45,47", *ARGS]) == 2
    assert "--modality ct" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phantom", "--output-dir", str(tmp_path / "bad"), "--cases", "1", "--modality", "ct",
              "--bleed-hu", "45", *ARGS])
    assert "LOW,HIGH" in capsys.readouterr().err
    assert not (tmp_path / "mri").exists() and not (tmp_path / "bad").exists()


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    rc = main(["phantom", "--output-dir", str(tmp_path), "--cases", "1", "--kind", "wml", "--folds", "0", *ARGS])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(tmp_path) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert main(["phantom", "--output-dir", str(tmp_path), "--cases", "1", "--kind", "wml", "--folds", "0", "--overwrite", *ARGS]) == 0
    assert (tmp_path / "datalist.json").is_file() and (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--cases", "0"], "--cases"),
        (["--cases", "2", "--kind", "wml", "--modality", "ct"], "--modality mri"),
        (["--cases", "2", "--kind", "haemorrhage"], "--modality ct"),
        (["--cases", "3", "--folds", "5"], "--folds"),
        (["--cases", "2", "--spacing", "0"], "--spacing"),
        (["--cases", "2", "--healthy-fraction", "1.5"], "--healthy-fraction"),
        (["--cases", "2", "--lesion-contrast", "2"], "--lesion-contrast"),
        (["--cases", "2", "--variation", "-1"], "--variation"),
        (["--cases", "2", "--patient-asymmetry", "1.5"], "--patient-asymmetry"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, extra, words):
    out = tmp_path / "never"
    with pytest.raises(InputError, match=words.replace("-", r"\-")):
        kwargs = dict(zip([a.lstrip("-").replace("-", "_") for a in extra[::2]], extra[1::2]))
        write_dataset(
            out,
            int(kwargs.get("cases", 2)),
            kind=kwargs.get("kind", "mixed"),
            modality=kwargs.get("modality", "mri"),
            spacing=float(kwargs.get("spacing", 4.0)),
            folds=int(kwargs.get("folds", 2)),
            healthy_fraction=float(kwargs.get("healthy_fraction", 0.2)),
            lesion_contrast=float(kwargs.get("lesion_contrast", 1.0)),
            variation=float(kwargs.get("variation", 1.0)),
            patient_asymmetry=float(kwargs.get("patient_asymmetry", 0.0)),
        )
    assert not out.exists()


def test_patient_asymmetry_keeps_each_subject_and_lifts_the_confound(tmp_path):
    # By default only healthy subjects are naturally asymmetric (asymmetry signals health);
    # --patient-asymmetry gives patients the same asymmetry without changing anything else.
    plain = make_subject(5, "haemorrhage", "ct", 6.0, "unilateral")
    lifted = make_subject(5, "haemorrhage", "ct", 6.0, "unilateral", patient_asymmetry=1.0)
    assert plain.info["natural_asymmetry"]["hemisphere_scale"] == 0.0
    assert 0.02 <= abs(lifted.info["natural_asymmetry"]["hemisphere_scale"]) <= 0.04
    assert lifted.info["natural_asymmetry"]["ventricle_inflation_mm"] is not None
    assert lifted.info["lesions"] == plain.info["lesions"] and lifted.info["pose"] == plain.info["pose"]
    assert not np.array_equal(lifted.image.array, plain.image.array)
    healthy = make_subject(5, "healthy", "ct", 6.0, "healthy", patient_asymmetry=1.0)
    assert np.array_equal(healthy.image.array, make_subject(5, "healthy", "ct", 6.0, "healthy").image.array)

    out = tmp_path / "ct"
    assert main(["phantom", "--output-dir", str(out), "--cases", "2", "--kind", "haemorrhage", "--modality", "ct",
                 "--folds", "0", "--healthy-fraction", "0", "--patient-asymmetry", "1", *ARGS]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    entries = datalist["training"] + datalist["validation"]
    assert datalist["patient_asymmetry"] == 1.0 and all(e["patient"] == 1 and e["asymmetric"] == 1 for e in entries)


def test_bundled_sample_case_is_small_complete_and_reproducible():
    paths = sample_case_paths()
    assert set(paths) == {"t1", "t1ce", "t2", "flair", "label", "case_json"}
    assert sum(p.stat().st_size for p in paths.values()) < 3_000_000
    case = json.loads(paths["case_json"].read_text())
    assert case["kind"] == "glioma" and case["status"] == "patient" and case["spacing_mm"] in (1.5, 2.0)
    label = _load(paths["label"])
    for channel in ("t1", "t1ce", "t2", "flair"):
        img = _load(paths[channel])
        assert img.shape == label.shape and np.allclose(img.affine, label.affine)
    stored = np.asarray(label.dataobj)
    assert set(np.unique(stored)) == {0, 1, 2, 4}
    rebuilt = make_subject(**SAMPLE_ARGS)
    np.testing.assert_array_equal(rebuilt.label.array, stored)
    np.testing.assert_array_equal(rebuilt.image.array[1].astype(np.int16), np.asarray(_load(paths["t1ce"]).dataobj))


def test_prefix_names_cases_so_separate_sets_pass_the_leakage_check(tmp_path):
    """A pretraining set beside a labelled set: same generator, other prefix, no false leak."""
    from SymmetryAwareTraining.datalist import LeakageError, check_leakage, load_datalist

    labelled = write_dataset(tmp_path / "labelled", 2, seed=1, kind="glioma", spacing=4.0, folds=2)
    other = write_dataset(tmp_path / "pre", 2, seed=2, kind="glioma", spacing=4.0, folds=0, prefix="pre")
    same = write_dataset(tmp_path / "same", 2, seed=2, kind="glioma", spacing=4.0, folds=0)
    names = [e["name"] for e in json.loads(other.read_text())["training"] + json.loads(other.read_text())["validation"]]
    assert sorted(names) == ["pre_0000", "pre_0001"] and (other.parent / "pre_0000_flair.nii.gz").is_file()
    check_leakage(load_datalist(other), load_datalist(labelled), fold=0)
    with pytest.raises(LeakageError):  # "case_0000" in both lists reads as the same case
        check_leakage(load_datalist(same), load_datalist(labelled), fold=0)
    with pytest.raises(InputError, match="prefix"):
        write_dataset(tmp_path / "bad", 1, spacing=4.0, folds=0, prefix="../x")
    assert not (tmp_path / "bad").exists()
