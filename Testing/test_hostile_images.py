"""Hostile images: decompression bombs, lying headers, broken geometry, absurd intensities,
channels that barely overlap. Each gives one line and exit 2 (or a correct result), before
the voxels are read where the header already tells."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io import load_case, read_image
from SymmetryAwareCore.io.case import MIN_CHANNEL_COVERAGE
from SymmetryAwareCore.io.readers import read_header
from SymmetryAwareCore.io.validate import DEFAULT_MAX_VOXELS, VOXEL_BUDGET_ENV

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _blob(shape=(24, 28, 24)) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    return (inside * (100 + 10 * grid[1])).astype(np.float32)


def _save(path: Path, array: np.ndarray, affine=None, slope=None) -> Path:
    nii = nib.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
    if slope is not None:
        nii.header.set_slope_inter(slope, 0)
    nib.save(nii, str(path))
    return path


def _bomb(path: Path, shape=(1024, 1024, 1024), real_bytes=4 << 20) -> Path:
    """A .nii.gz whose header claims ``shape`` uint8 and whose stream holds ``real_bytes`` of
    zeros (a few kB of gzip): as the issue's 4.7 MB file that decompresses to 1 GiB, cut short."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    header["vox_offset"] = 352
    with gzip.open(path, "wb") as out:
        out.write(header.binaryblock + b"\0" * 4)
        out.write(b"\0" * real_bytes)
    return path


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"symmetryaware {command}: error:"), err
    return lines[0]


# ------------------------------------------------------------------------- voxel budget


def test_decompression_bomb_is_refused_from_the_header(tmp_path, capsys):
    bomb = _bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(InputError, match="budget"):
        read_image(bomb)
    with pytest.raises(InputError, match="budget"):
        read_header(bomb)
    assert main(["msp", str(bomb), "--report", str(tmp_path / "plane.json")]) == 2
    line = _one_line(capsys, "msp")
    assert "1,073,741,824 voxels" in line and "--max-voxels" in line and VOXEL_BUDGET_ENV in line
    assert not (tmp_path / "plane.json").exists()


def test_nrrd_header_claiming_a_huge_size_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\n"
                     b"spacings: 1 1 1\nendian: little\nencoding: raw\n\n" + b"\0" * 1000)
    with pytest.raises(InputError, match="budget"):
        read_image(path)


def test_budget_can_be_lowered_and_raised_by_env_and_option(tmp_path, capsys, monkeypatch):
    scan = _save(tmp_path / "scan.nii.gz", _blob())
    monkeypatch.setenv(VOXEL_BUDGET_ENV, "1000")
    with pytest.raises(InputError, match="budget of 1,000"):
        read_image(scan)
    monkeypatch.setenv(VOXEL_BUDGET_ENV, "1e6")
    assert read_image(scan).spatial_shape == (24, 28, 24)
    monkeypatch.delenv(VOXEL_BUDGET_ENV)
    assert main(["msp", str(scan), "--max-voxels", "100"]) == 2
    assert "budget of 100 " in _one_line(capsys, "msp")
    monkeypatch.delenv(VOXEL_BUDGET_ENV, raising=False)
    assert main(["msp", str(scan), "--max-voxels", "lots"]) == 2
    assert "--max-voxels" in _one_line(capsys, "msp")
    monkeypatch.delenv(VOXEL_BUDGET_ENV, raising=False)
    assert DEFAULT_MAX_VOXELS == 2**28


def test_aligned_grid_beyond_the_budget_is_refused_before_the_plane_search(tmp_path, capsys, monkeypatch):
    import SymmetryAwareCore.cli.msp as msp_cli

    monkeypatch.setattr(msp_cli, "estimate_msp", lambda *a, **k: pytest.fail("plane search ran"))
    scan = _save(tmp_path / "scan.nii.gz", _blob())
    assert main(["msp", str(scan), "--aligned", str(tmp_path / "a.nii.gz"), "--spacing", "0.05", "0.05", "0.05"]) == 2
    assert "aligned scan" in _one_line(capsys, "msp")


def test_segment_refuses_a_case_whose_aligned_grid_exceeds_the_budget(tmp_path):
    from SymmetryAwareCore.cli.segment import check_frame_budget

    # 512 voxels of 20 mm: a 10 m field of view, within the voxel-size limits, that the
    # aligned grid at 1 mm would turn into 10^12 voxels.
    huge = _save(tmp_path / "huge.nii.gz", np.pad(_blob((8, 8, 8)), ((0, 504), (0, 56), (0, 56))), np.diag([20.0, 20, 20, 1]))
    with pytest.raises(InputError, match="aligned grid"):
        check_frame_budget([huge], (1.0, 1.0, 1.0))
    check_frame_budget([huge], (20.0, 20.0, 20.0))


# ---------------------------------------------------------------------- broken headers


def _zero_pixdim(path: Path) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape((20, 20, 20))
    header.set_data_dtype(np.float32)
    header["pixdim"][1:4] = [2.0, 0.0, 2.0]
    header["qform_code"], header["sform_code"] = 1, 0
    nib.save(nib.Nifti1Image(_blob((20, 20, 20)), None, header), str(path))
    return path


def _nan_affine(path: Path) -> Path:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = np.nan
    nii = nib.Nifti1Image(_blob(), None)
    nii.set_sform(affine, code=1)
    nib.save(nii, str(path))
    return path


def _truncated_gz(path: Path) -> Path:
    whole = _save(path.with_name("whole.nii"), _blob((40, 40, 40)))
    packed = gzip.compress(whole.read_bytes())
    path.write_bytes(packed[: len(packed) // 2])
    whole.unlink()
    return path


BROKEN = {
    "empty file": lambda p: (p.write_bytes(b""), p)[1],
    "truncated gzip": _truncated_gz,
    "zero pixdim": _zero_pixdim,
    "non-finite affine": _nan_affine,
    "2D image": lambda p: _save(p, np.ones((30, 30), np.float32)),
    "one value everywhere": lambda p: _save(p, np.full((10, 10, 10), 7, np.float32)),
    "huge intensities": lambda p: _save(p, _blob() * 1e28),
    "scaling that overflows float32": lambda p: _save(p, (_blob() * 100).astype(np.int16), slope=1e37),
    "zero-size axis": lambda p: _save(p, np.ones((10, 0, 10), np.float32)),
    "complex voxels": lambda p: _save(p, (_blob() + 1j * _blob()).astype(np.complex64)),
    "RGB voxels": lambda p: _save(p, np.zeros((10, 10, 10), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_image_gives_one_line_and_no_warning(tmp_path, capsys, kind):
    path = BROKEN[kind](tmp_path / "scan.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy overflow warning would leak to the user
        code = main(["msp", str(path), "--report", str(tmp_path / "plane.json")])
    assert code == 2, kind
    line = _one_line(capsys, "msp")
    assert str(path) in line
    assert not (tmp_path / "plane.json").exists()


def test_negative_pixdim_reads_as_its_absolute_value(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((20, 20, 20))
    header.set_data_dtype(np.float32)
    header["pixdim"][1:4] = [-2.0, 2.0, 2.0]
    header["qform_code"], header["sform_code"] = 1, 0
    path = tmp_path / "neg.nii"
    nib.save(nib.Nifti1Image(_blob((20, 20, 20)), None, header), str(path))
    np.testing.assert_allclose(read_image(path).spacing, [2.0, 2.0, 2.0])


@pytest.mark.skipif(ROOT, reason="root reads files whatever their mode")
def test_unreadable_input_is_one_line(tmp_path, capsys):
    scan = _save(tmp_path / "scan.nii.gz", _blob())
    scan.chmod(0)
    try:
        assert main(["msp", str(scan)]) == 2
        _one_line(capsys, "msp")
    finally:
        scan.chmod(0o644)


def test_unlistable_case_folder_is_one_line(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "cases"
    folder.mkdir()
    real = Path.iterdir

    def denied(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    assert main(["segment", str(folder), "-o", str(tmp_path / "out"), "--model", "untrained-standin", "--progress", "none"]) == 2
    assert "Permission denied" in _one_line(capsys, "segment")


# -------------------------------------------------------------------- channel coverage


def _shifted(tmp_path: Path, name: str, shift_mm: float) -> Path:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = shift_mm
    return _save(tmp_path / name, _blob((30, 30, 30)) + 1, affine)


def test_channel_covering_13_percent_is_refused(tmp_path):
    first = _shifted(tmp_path, "t1.nii.gz", 0.0)
    far = _shifted(tmp_path, "t2.nii.gz", 0.87 * 60)  # 13 % of the first grid along x
    with pytest.raises(InputError, match="covers only 1[0-9]%") as info:
        load_case([first, far], ["t1", "t2"])
    assert str(far) in str(info.value) and f"{100 * MIN_CHANNEL_COVERAGE:.0f}%" in str(info.value)


def test_channel_covering_most_of_the_grid_is_resampled(tmp_path):
    first = _shifted(tmp_path, "t1.nii.gz", 0.0)
    near = _shifted(tmp_path, "t2.nii.gz", 0.2 * 60)
    image = load_case([first, near], ["t1", "t2"])
    assert image.array.shape == (2, 30, 30, 30)
