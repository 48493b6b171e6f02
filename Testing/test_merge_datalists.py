"""Training/scripts/merge_datalists.py: one list from several, paths rebased, held-out fold kept."""

from __future__ import annotations

import json

import pytest

from conftest import import_training_script


def _merge_module():
    return import_training_script("merge_datalists")


def _datalist(folder, prefix, folds, sections=("training",)):
    folder.mkdir(parents=True)
    entries = []
    for i, fold in enumerate(folds):
        name = f"{prefix}_{i:04d}"
        for suffix in ("t1", "label"):
            (folder / f"{name}_{suffix}.nii.gz").write_bytes(b"x")
        entry = {"name": name, "image": [f"{name}_t1.nii.gz"], "label": f"{name}_label.nii.gz"}
        if fold is not None:
            entry["fold"] = fold
        entries.append(entry)
    data = {"channels": 1, "modality": "mri", "seed": 7, "training": entries[:len(entries) - 1 if len(sections) > 1 else None]}
    if len(sections) > 1:
        data["validation"] = entries[-1:]
    path = folder / "datalist.json"
    path.write_text(json.dumps(data))
    return path


def test_merged_list_keeps_folds_sends_train_only_sets_to_folds_1_to_4_and_paths_resolve(tmp_path):
    from SymmetryAwareTraining.datalist import load_datalist

    kept = _datalist(tmp_path / "a", "a", [0, 1, 0, 2])
    extra = _datalist(tmp_path / "deep" / "b", "b", [None] * 6, sections=("training", "validation"))
    output = tmp_path / "merged" / "datalist.json"
    assert _merge_module().main(["--output", str(output), str(kept), f"{extra}:train"]) == 0

    merged = load_datalist(output)
    train, held = merged.split(0)
    assert sorted(e["name"] for e in held) == ["a_0000", "a_0002"]  # only the kept list's fold 0
    folds = {e["name"]: e["fold"] for e in json.loads(output.read_text())["training"]}
    assert [folds[f"b_{i:04d}"] for i in range(6)] == [1, 2, 3, 4, 1, 2]  # the validation entry too
    for entry in train + held:
        prefix = entry["name"].split("_")[0]
        source = tmp_path / ("a" if prefix == "a" else "deep/b")
        assert entry["image"] == [str((source / f"{entry['name']}_t1.nii.gz").resolve())]
        assert entry["label"] == str((source / f"{entry['name']}_label.nii.gz").resolve())


def test_merging_refuses_repeated_case_names_and_unknown_suffixes(tmp_path):
    first = _datalist(tmp_path / "a", "a", [0, 1])
    module = _merge_module()
    with pytest.raises(SystemExit, match="appears twice"):
        module.main(["--output", str(tmp_path / "m.json"), str(first), str(first)])
    with pytest.raises(SystemExit, match="suffix"):
        module.main(["--output", str(tmp_path / "m.json"), f"{first}:test"])
    with pytest.raises(SystemExit, match="cannot read the datalist"):
        module.main(["--output", str(tmp_path / "m.json"), str(tmp_path / "absent.json")])
    assert not (tmp_path / "m.json").exists()
    before = first.read_bytes()
    with pytest.raises(SystemExit, match="is one of the inputs"):
        module.main(["--output", str(first), str(first)])
    assert first.read_bytes() == before
