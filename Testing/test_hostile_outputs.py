"""Hostile output locations: every command refuses them with one line and exit 2, before any
work, and never changes an input; write errors name the file and leave nothing behind.

Each attack runs the real command (``main([...])``) on a small image made here; the checks
come before the scan is read, so none of these runs the plane search or a network.
"""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _head(path: Path, shape=(40, 48, 40), spacing=4.0) -> Path:
    """A small ellipsoidal 'head' with a texture, as NIfTI (RAS, ``spacing`` mm)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid[0] / 0.8) ** 2 + (grid[1] / 0.9) ** 2 + (grid[2] / 0.8) ** 2 < 1
    rng = np.random.default_rng(0)
    array = (inside * (100 + 20 * np.cos(6 * grid[1]) + rng.normal(0, 2, shape))).astype(np.float32)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (np.array(shape) - 1) / 2
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"symmetryaware {command}: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture()
def scan(tmp_path) -> Path:
    return _head(tmp_path / "scan.nii.gz")


# ----------------------------------------------------------------- msp: outputs vs inputs


@pytest.mark.parametrize("option", ["--report", "--markups", "--aligned"])
def test_msp_output_equal_to_its_input_is_refused_and_the_input_kept(scan, capsys, option):
    before = scan.read_bytes()
    assert main(["msp", str(scan), option, str(scan)]) == 2
    line = _one_line_error(capsys, "msp")
    assert str(scan) in line and "input" in line
    assert scan.read_bytes() == before


def test_msp_output_through_a_symlink_or_hard_link_to_the_input_is_refused(scan, tmp_path, capsys):
    before = scan.read_bytes()
    link = tmp_path / "link.json"
    link.symlink_to(scan)
    hard = tmp_path / "hard.nii.gz"
    os.link(scan, hard)
    dotted = tmp_path / "sub" / ".." / scan.name
    (tmp_path / "sub").mkdir()
    for out, option in ((link, "--report"), (hard, "--aligned"), (dotted, "--markups")):
        assert main(["msp", str(scan), option, str(out)]) == 2
        _one_line_error(capsys, "msp")
    assert scan.read_bytes() == before


def test_msp_output_equal_to_the_mask_is_refused(scan, tmp_path, capsys):
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((nib.load(str(scan)).get_fdata() > 0).astype(np.uint8), nib.load(str(scan)).affine), str(mask))
    before = mask.read_bytes()
    assert main(["msp", str(scan), "--mask", str(mask), "--report", str(mask)]) == 2
    _one_line_error(capsys, "msp")
    assert mask.read_bytes() == before


def test_msp_two_outputs_naming_one_file_are_refused(scan, tmp_path, capsys):
    out = tmp_path / "plane.json"
    assert main(["msp", str(scan), "--report", str(out), "--markups", str(out)]) == 2
    assert "two outputs" in _one_line_error(capsys, "msp")
    assert not out.exists()


def test_msp_bad_output_places_fail_before_any_work(scan, tmp_path, capsys, monkeypatch):
    import SymmetryAwareCore.cli.msp as msp_cli

    def no_work(*args, **kwargs):
        raise AssertionError("the scan was read before the outputs were checked")

    monkeypatch.setattr(msp_cli, "read_image", no_work)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    a_folder = tmp_path / "folder"
    a_folder.mkdir()
    attacks = {
        "is a folder": ["--report", str(a_folder)],
        "is a file, so no folder": ["--report", str(a_file / "plane.json")],
        "must end in": ["--aligned", str(tmp_path / "aligned.txt")],
    }
    for expected, option in attacks.items():
        assert main(["msp", str(scan), *option]) == 2
        assert expected in _one_line_error(capsys, "msp")
    assert a_file.read_text() == "x" and not any(a_folder.iterdir())


def test_msp_aligned_spacing_out_of_range_is_refused(scan, tmp_path, capsys):
    for spacing in (["0", "1", "1"], ["nan", "1", "1"], ["1", "1", "1e9"]):
        assert main(["msp", str(scan), "--aligned", str(tmp_path / "a.nii.gz"), "--spacing", *spacing]) == 2
        assert "--spacing" in _one_line_error(capsys, "msp")


def test_unwritable_output_folder_is_refused_before_work(scan, tmp_path, capsys, monkeypatch):
    # A read-only file system is simulated where the probe creates its file, so the test
    # also holds when run as root (who may write into a chmod 555 folder).
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main(["msp", str(scan), "--report", str(tmp_path / "out" / "plane.json")]) == 2
    assert "Read-only file system" in _one_line_error(capsys, "msp")
    assert main(["segment", str(scan), "-o", str(tmp_path / "out"), "--model", "untrained-standin"]) == 2
    assert "Read-only file system" in _one_line_error(capsys, "segment")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(ROOT, reason="root may write into a read-only folder")
def test_read_only_folder_is_refused(scan, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["msp", str(scan), "--report", str(locked / "plane.json")]) == 2
        assert "cannot write" in _one_line_error(capsys, "msp")
    finally:
        locked.chmod(0o755)


# ------------------------------------------------------------ segment / attention / classify


def test_segment_output_dir_that_is_a_file_or_under_a_file(scan, tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep")
    for out, expected in ((a_file, "is a file, not a folder"), (a_file / "sub", "is a file, so no folder")):
        for command in ("segment", "attention"):
            assert main([command, str(scan), "-o", str(out), "--model", "untrained-standin", "--progress", "none"]) == 2
            assert expected in _one_line_error(capsys, command)
    assert a_file.read_text() == "keep"


def test_segment_output_inside_an_input_folder_is_refused(scan, tmp_path, capsys):
    case = tmp_path / "case"
    case.mkdir()
    for c in ("t1", "t1ce", "t2", "flair"):
        (case / f"case_{c}.nii.gz").write_bytes(scan.read_bytes())
    before = sorted(p.name for p in case.iterdir())
    for out in (case, case / "results", tmp_path / "link_to_case"):
        if out.name == "link_to_case":
            out.symlink_to(case, target_is_directory=True)
        assert main(["segment", str(case), "-o", str(out), "--model", "untrained-standin", "--progress", "none"]) == 2
        line = _one_line_error(capsys, "segment")
        assert "input" in line
    assert sorted(p.name for p in case.iterdir()) == before


def test_segment_case_folder_that_would_hold_the_inputs_is_refused(scan, tmp_path, capsys):
    # -o . with --case-id naming the folder the inputs live in: the case folder would be
    # replaced by the result.
    case = tmp_path / "mine"
    case.mkdir()
    files = []
    for c in ("t1", "t1ce", "t2", "flair"):
        files.append(case / f"x_{c}.nii.gz")
        files[-1].write_bytes(scan.read_bytes())
    code = main(["segment", *map(str, files), "-o", str(tmp_path), "--case-id", "mine", "--model", "untrained-standin",
                 "--progress", "none"])
    assert code == 2
    assert "holds the input" in _one_line_error(capsys, "segment")
    assert all(f.is_file() for f in files)


@pytest.mark.parametrize("case_id", ["../escape", ".hidden", "a/b", " padded "])
def test_case_ids_that_cannot_be_a_folder_name_are_refused(scan, tmp_path, capsys, case_id):
    files = [str(scan)] * 4
    assert main(["segment", *files, "-o", str(tmp_path / "out"), "--case-id", case_id, "--model", "untrained-standin",
                 "--progress", "none"]) == 2
    _one_line_error(capsys, "segment")
    assert not (tmp_path / "escape").exists()


def test_roi_options_out_of_range_are_refused_by_the_parser(scan, tmp_path, capsys):
    for roi in (["--roi-center", "0,0,0", "--roi-size", "1e6,1e6,1e6"], ["--roi-center", "nan,0,0", "--roi-size", "10,10,10"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["segment", str(scan), "-o", str(tmp_path / "o"), *roi])
        assert exit_info.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_classify_output_equal_to_an_input_or_existing(scan, tmp_path, capsys):
    before = scan.read_bytes()
    assert main(["classify", str(scan), "--model", "untrained-standin", "--output", str(scan)]) == 2
    assert "input" in _one_line_error(capsys, "classify")
    assert scan.read_bytes() == before
    existing = tmp_path / "findings.json"
    existing.write_text("{}")
    assert main(["classify", str(scan), "--model", "untrained-standin", "--output", str(existing)]) == 2
    assert "--overwrite" in _one_line_error(capsys, "classify")
    assert existing.read_text() == "{}"


def test_phantom_output_dir_that_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "phantoms"
    a_file.write_text("keep")
    assert main(["phantom", "--output-dir", str(a_file), "--cases", "1"]) == 2
    assert "is a file" in _one_line_error(capsys, "phantom")
    assert main(["phantom", "--output-dir", str(a_file / "sub"), "--cases", "1"]) == 2
    _one_line_error(capsys, "phantom")
    assert a_file.read_text() == "keep"


def test_models_import_into_a_model_folder_that_is_a_file(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    store.write_text("not a folder")
    monkeypatch.setenv("SYMMETRYAWARE_MODELS", str(store))
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m.json", "{}")
    assert main(["models", "import", str(archive)]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys, "models")


# ------------------------------------------------------------------------- write faults


def test_disk_full_while_writing_names_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "plane.json"
    with pytest.raises(InputError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value).startswith(str(target)) and "No space left on device" in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_disk_full_during_msp_is_one_line_and_no_partial_file(scan, tmp_path, capsys, monkeypatch):
    import SymmetryAwareCore.cli.msp as msp_cli

    class FakePlane:  # the plane search is not what this test is about
        confident, message, tilt_deg, symmetry_score, method = True, "", 0.0, 0.9, "test"
        normal, point = np.array([1.0, 0, 0]), np.zeros(3)

        def to_dict(self):
            return {"normal": [1, 0, 0]}

    monkeypatch.setattr(msp_cli, "estimate_msp", lambda *a, **k: FakePlane())
    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith("plane.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "out"
    assert main(["msp", str(scan), "--report", str(out / "plane.json")]) == 2
    line = _one_line_error(capsys, "msp")
    assert str(out / "plane.json") in line and "No space left" in line
    assert list(out.iterdir()) == []


def test_device_or_link_loop_as_output_is_refused(scan, tmp_path, capsys):
    loop = tmp_path / "loop.json"
    loop.symlink_to(tmp_path / "loop.json")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for out in (loop, fifo, Path(os.devnull)):
        assert main(["msp", str(scan), "--report", str(out)]) == 2
        _one_line_error(capsys, "msp")
    assert fifo.exists() and loop.is_symlink()


def test_case_folder_that_is_a_symlink_elsewhere_is_refused(scan, tmp_path, capsys):
    elsewhere = tmp_path / "important"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "scan").symlink_to(elsewhere, target_is_directory=True)
    code = main(["segment", *[str(scan)] * 4, "-o", str(out), "--overwrite", "--model", "untrained-standin",
                 "--progress", "none"])
    assert code == 2
    assert "symbolic link" in _one_line_error(capsys, "segment")
    assert (elsewhere / "keep.txt").read_text() == "keep"


def test_case_ids_differing_only_in_case_are_refused(scan, tmp_path, capsys):
    table = tmp_path / "cases.csv"
    table.write_text(f"case_id,t1,t1ce,t2,flair\nCase1,{scan},{scan},{scan},{scan}\ncase1,{scan},{scan},{scan},{scan}\n")
    assert main(["segment", str(table), "-o", str(tmp_path / "out"), "--model", "untrained-standin", "--progress", "none"]) == 2
    assert "letter case" in _one_line_error(capsys, "segment")
