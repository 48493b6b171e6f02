"""Datalists: relative paths, folds, label fractions, and the leakage check."""

from __future__ import annotations

import json

import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareTraining.cli import main
from SymmetryAwareTraining.datalist import LeakageError, check_leakage, load_datalist, subset_fraction


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _downstream(tmp_path):
    entries = [{"case": f"c{i}", "image": [f"imgs/c{i}_t1.nii.gz", f"imgs/c{i}_flair.nii.gz"],
                "label": f"labels/c{i}.nii.gz", "fold": i % 3} for i in range(9)]
    return _write(tmp_path / "down" / "brats.json", {"training": entries})


def test_paths_resolve_against_the_list_and_folds_split(tmp_path):
    dl = load_datalist(_downstream(tmp_path))
    first = dl.sections["training"][0]
    assert first["image"][1] == str((tmp_path / "down" / "imgs" / "c0_flair.nii.gz").resolve())
    train, evaluation = dl.split(1)
    assert [e["case"] for e in evaluation] == ["c1", "c4", "c7"]
    assert len(train) == 6 and not {e["case"] for e in train} & {"c1", "c4", "c7"}
    with pytest.raises(InputError, match="fold 5 has no cases"):
        dl.split(5)


def test_leakage_names_the_leaked_cases(tmp_path):
    down = load_datalist(_downstream(tmp_path))
    # c4 leaks by id, c7 by image file only (another id, same file), c3 is fold 0: allowed.
    pre = load_datalist(_write(tmp_path / "pre" / "pre.json", {"training": [
        {"case": "c4", "image": "x/other.nii.gz"},
        {"case": "renamed", "image": "../down/imgs/c7_t1.nii.gz"},
        {"case": "c3", "image": "../down/imgs/c3_t1.nii.gz"},
        {"case": "h1", "image": "h1.nii.gz"},
    ]}))
    with pytest.raises(LeakageError) as info:
        check_leakage(pre, down, fold=1)
    message = str(info.value)
    assert "c4" in message and "c7" in message and "c3" not in message and "2 case(s)" in message
    check_leakage(pre, down, fold=2)  # fold 2 = c2, c5, c8: nothing leaks


def test_pretrain_command_refuses_leakage(tmp_path, capsys):
    down = _downstream(tmp_path)
    pre = _write(tmp_path / "pre.json", {"training": [{"case": "c1", "image": "a.nii.gz"}]})
    code = main(["pretrain", "--datalist", str(pre), "--set", f"data.exclude_datalist={down}",
                 "--set", "data.exclude_fold=1", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "leakage" in err and "c1" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_label_fraction_is_reproducible(tmp_path):
    entries = [{"case": str(i)} for i in range(20)]
    a = subset_fraction(entries, 0.3, seed=0)
    assert len(a) == 6 and a == subset_fraction(entries, 0.3, seed=0)
    assert a != subset_fraction(entries, 0.3, seed=1)
    with pytest.raises(InputError):
        subset_fraction(entries, 0.0, seed=0)


def test_bad_datalists_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_datalist(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        load_datalist(bad)
    with pytest.raises(InputError, match="image"):
        load_datalist(_write(tmp_path / "noimg.json", {"training": [{"label": "x"}]}))


def test_phantom_style_entries(tmp_path):
    """The phantom generator's spelling: ``name``, flags ``healthy``/``patient``, top-level findings."""
    from SymmetryAwareTraining.datalist import case_id, finding_value, status_of

    dl = load_datalist(_write(tmp_path / "p.json", {"training": [
        {"name": "case_0000", "image": ["a.nii.gz"], "healthy": 0, "patient": 1, "haemorrhage": 1, "fold": 0},
        {"name": "case_0001", "image": ["b.nii.gz"], "healthy": 1, "patient": 0, "haemorrhage": 0, "fold": 1},
    ]}))
    a, b = dl.sections["training"]
    assert case_id(a) == "case_0000" and status_of(a) == 1 and status_of(b) == 0
    assert finding_value(a, "haemorrhage") == 1.0 and finding_value(b, "haemorrhage") == 0.0
    assert finding_value(a, "fracture") is None
    assert status_of({"image": "x", "status": "Healthy"}) == 0 and status_of({"image": "x"}) == -1


def test_leakage_holds_out_every_non_training_section(tmp_path):
    """With folds, the ``testing`` and ``validation`` sections are held out too, not only the fold."""
    entries = [{"case": f"c{i}", "image": f"c{i}.nii.gz", "fold": i % 2} for i in range(4)]
    down = load_datalist(_write(tmp_path / "down.json", {
        "training": entries, "testing": [{"case": "t0", "image": "t0.nii.gz"}],
        "validation": [{"case": "v0", "image": "v0.nii.gz"}]}))
    for leaked, where in (("t0", "testing"), ("v0", "validation"), ("c1", "fold 1")):
        pre = load_datalist(_write(tmp_path / f"pre_{leaked}.json", {"training": [{"case": leaked, "image": "p.nii.gz"}]}))
        with pytest.raises(LeakageError, match=f"{leaked} \\({where}\\)"):
            check_leakage(pre, down, fold=1)
    ok = load_datalist(_write(tmp_path / "ok.json", {"training": [{"case": "c0", "image": "p.nii.gz"}]}))
    check_leakage(ok, down, fold=1)  # c0 is a training case of fold 1's split
    # Without folds: every non-training section is held out.
    plain = load_datalist(_write(tmp_path / "plain.json", {
        "training": [{"case": "a", "image": "a.nii.gz"}], "testing": [{"case": "t0", "image": "t0.nii.gz"}]}))
    pre = load_datalist(_write(tmp_path / "pre2.json", {"training": [{"case": "t0", "image": "p.nii.gz"}]}))
    with pytest.raises(LeakageError, match="testing"):
        check_leakage(pre, plain, fold=0)


def test_paths_outside_the_list_folder_are_noticed(tmp_path, capsys):
    dl = load_datalist(_write(tmp_path / "sub" / "list.json", {"training": [
        {"case": "a", "image": ["../elsewhere/a.nii.gz", "a2.nii.gz"], "label": str(tmp_path / "abs.nii.gz")}]}))
    assert dl.sections["training"][0]["image"][0] == str((tmp_path / "elsewhere" / "a.nii.gz").resolve())
    err = capsys.readouterr().err
    assert "1 relative path(s) lie outside" in err and "../elsewhere/a.nii.gz" in err
    load_datalist(_write(tmp_path / "inside.json", {"training": [{"case": "a", "image": "x/a.nii.gz"}]}))
    assert "outside" not in capsys.readouterr().err
