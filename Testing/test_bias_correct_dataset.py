"""Benchmarks/bias_correct_dataset.py: N4 removes a known left-right bias field, on a copy."""

import json
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import import_benchmark


def test_n4_copy_evens_out_the_hemispheres_and_leaves_the_input(tmp_path, monkeypatch):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij")
    head = x**2 + y**2 + z**2 < 0.8
    tissue = np.where(np.sin(6 * y) > 0, 100.0, 60.0)  # two tissues, symmetric about x = 0
    field = np.exp(0.25 * x)  # right 28 % brighter than left at the edges
    data = tmp_path / "data"
    data.mkdir()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.where(head, tissue * field, 0).astype(np.float32), affine), data / "c_t1.nii.gz")
    (data / "datalist.json").write_text(json.dumps({"training": [{"name": "c", "image": ["c_t1.nii.gz"], "fold": 0}]}))
    before = (data / "c_t1.nii.gz").read_bytes()
    out = tmp_path / "n4"
    monkeypatch.setattr(sys, "argv", ["bias_correct_dataset", str(data / "datalist.json"), str(out), "--shrink", "2"])
    import_benchmark("bias_correct_dataset").main()
    corrected = nib.load(str(out / "c_t1.nii.gz"))
    np.testing.assert_allclose(corrected.affine, affine)
    a = np.asarray(corrected.dataobj)
    ratio = lambda v: np.median(v[head & (x > 0.2)]) / np.median(v[head & (x < -0.2)])
    assert ratio(np.where(head, tissue * field, 0)) > 1.2
    assert abs(ratio(a) - 1.0) < 0.05 and np.all(a[~head] == 0)
    assert (data / "c_t1.nii.gz").read_bytes() == before and (out / "datalist.json").exists()
    for inside_data in (data, data / "n4"):
        monkeypatch.setattr(sys, "argv", ["bias_correct_dataset", str(data / "datalist.json"), str(inside_data)])
        with pytest.raises(SystemExit):
            import_benchmark("bias_correct_dataset").main()
    # A list that points at a sibling dataset ("../"): its copy stays inside the output.
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "l.json").write_text(json.dumps({"training": [{"name": "c", "image": ["../data/c_t1.nii.gz"], "fold": 0}]}))
    monkeypatch.setattr(sys, "argv", ["bias_correct_dataset", str(lists / "l.json"), str(tmp_path / "n4b")])
    import_benchmark("bias_correct_dataset").main()
    entry = json.loads((tmp_path / "n4b" / "l.json").read_text())["training"][0]
    assert entry["image"] == ["_up/data/c_t1.nii.gz"] and (tmp_path / "n4b" / "_up" / "data" / "c_t1.nii.gz").exists()
    assert (data / "c_t1.nii.gz").read_bytes() == before
