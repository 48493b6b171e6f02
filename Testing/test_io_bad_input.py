"""Every kind of bad input gives a one-line InputError naming the file, and leaves nothing behind."""

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io import read_image, read_labelmap, write_image, write_labelmap_nifti


def _nifti(path, array, affine=None):
    # Degenerate affines fit only the sform (the qform must decompose into a rotation).
    nii = nib.Nifti1Image(array, None)
    nii.set_sform(np.eye(4) if affine is None else affine, code=1)
    nib.save(nii, str(path))
    return path


def _volume(subject_t1):
    return subject_t1.array.copy()


def make_missing(tmp_path, t1):
    return tmp_path / "missing_scan.nii.gz"


def make_zero_bytes(tmp_path, t1):
    path = tmp_path / "zero_bytes.nii.gz"
    path.touch()
    return path


def make_not_gzip(tmp_path, t1):
    path = tmp_path / "not_gzip.nii.gz"
    path.write_bytes(b"this is not a NIfTI file at all" * 20)
    return path


def make_truncated_nifti(tmp_path, t1):
    whole = tmp_path / "whole.nii"
    _nifti(whole, _volume(t1))
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(gzip.compress(whole.read_bytes())[:3000])
    whole.unlink()
    return path


def make_corrupt_nrrd(tmp_path, t1):
    path = tmp_path / "corrupt.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\nencoding: raw\n\n" + b"\0" * 10)
    return path


def make_truncated_nrrd(tmp_path, t1):
    path = tmp_path / "truncated.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(_volume(t1)), str(path), False)
    path.write_bytes(path.read_bytes()[:-500])
    return path


def make_unsupported(tmp_path, t1):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG....")
    return path


def make_single_dicom_file(tmp_path, t1):
    path = tmp_path / "slice.dcm"
    path.write_bytes(b"\0" * 200)
    return path


def make_empty_folder(tmp_path, t1):
    path = tmp_path / "no_dicom_here"
    path.mkdir()
    (path / "notes.txt").write_text("not DICOM")
    return path


def make_2d(tmp_path, t1):
    return _nifti(tmp_path / "flat2d.nii.gz", _volume(t1)[:, :, 10])


def make_single_slice(tmp_path, t1):
    return _nifti(tmp_path / "one_slice.nii.gz", _volume(t1)[:, :, 10:11])


def make_2d_nrrd(tmp_path, t1):
    path = tmp_path / "flat2d.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(_volume(t1)[:, :, 10]), str(path))
    return path


def make_5d(tmp_path, t1):
    v = _volume(t1)
    return _nifti(tmp_path / "five_d.nii.gz", np.stack([np.stack([v, v], -1)] * 2, -1))


def make_4d(tmp_path, t1):
    v = _volume(t1)
    return _nifti(tmp_path / "four_d.nii.gz", np.stack([v, v, v], -1))


def make_constant(tmp_path, t1):
    return _nifti(tmp_path / "constant.nii.gz", np.full(t1.spatial_shape, 7.0, np.float32))


def make_zero_voxels(tmp_path, t1):
    return _nifti(tmp_path / "no_voxels.nii", np.zeros((4, 0, 3), np.float32))


def make_nan(tmp_path, t1):
    v = _volume(t1)
    v[3, 4, 5] = np.nan
    return _nifti(tmp_path / "has_nan.nii.gz", v)


def make_inf(tmp_path, t1):
    v = _volume(t1)
    v[3, 4, 5] = np.inf
    return _write_sitk(tmp_path / "has_inf.nrrd", v)


def _write_sitk(path, array_ijk, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_ijk.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def make_tiny_spacing(tmp_path, t1):
    return _nifti(tmp_path / "microns.nii.gz", _volume(t1), np.diag([0.002, 0.002, 0.002, 1]))


def make_huge_spacing(tmp_path, t1):
    return _write_sitk(tmp_path / "huge_spacing.mha", _volume(t1), spacing=(1.0, 25.0, 1.0))


def make_singular(tmp_path, t1):
    affine = np.eye(4)
    affine[:3, 1] = affine[:3, 0]  # j runs along i
    return _nifti(tmp_path / "singular.nii.gz", _volume(t1), affine)


def make_zero_axis(tmp_path, t1):
    return _nifti(tmp_path / "zero_axis.nii.gz", _volume(t1), np.diag([1.0, 0.0, 1.0, 1.0]))


CASES = {
    "missing": (make_missing, "not found"),
    "zero bytes": (make_zero_bytes, "empty"),
    "not gzip": (make_not_gzip, "cannot read"),
    "truncated nifti": (make_truncated_nifti, "cannot read"),
    "corrupt nrrd": (make_corrupt_nrrd, "cannot read"),
    "truncated nrrd": (make_truncated_nrrd, "cannot read"),
    "unsupported": (make_unsupported, "unsupported"),
    "single dicom file": (make_single_dicom_file, "folder"),
    "folder without dicom": (make_empty_folder, "no DICOM"),
    "2d": (make_2d, "2D"),
    "single slice": (make_single_slice, "single slice"),
    "2d nrrd": (make_2d_nrrd, "2D"),
    "5d": (make_5d, "5D"),
    "4d": (make_4d, "3 volumes"),
    "constant": (make_constant, "every voxel equals 7"),
    "zero voxels": (make_zero_voxels, "no voxels"),
    "nan": (make_nan, "1 NaN"),
    "inf": (make_inf, "1 infinite"),
    "tiny spacing": (make_tiny_spacing, "outside"),
    "huge spacing": (make_huge_spacing, "outside"),
    "singular": (make_singular, "singular"),
    "zero axis": (make_zero_axis, "zero axis"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_input_error_naming_the_file(subject_t1, tmp_path, case):
    make, phrase = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = make(inputs, subject_t1)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    before = sorted(p.name for p in inputs.iterdir())

    def pipeline():
        # What a command does: read, then write a result; a bad input must stop it before any write.
        image = read_image(path)
        write_labelmap_nifti(np.zeros(image.spatial_shape, np.uint8), image, outputs / "result.nii.gz")

    with pytest.raises(InputError) as info:
        pipeline()
    message = str(info.value)
    assert path.name in message, message
    assert phrase in message, message
    assert "\n" not in message
    assert not isinstance(info.value.__cause__, InputError)
    assert list(outputs.iterdir()) == []
    assert sorted(p.name for p in inputs.iterdir()) == before


def test_labelmap_reader_checks_values(subject_t1, tmp_path):
    labels = np.zeros(subject_t1.spatial_shape, np.int32)
    labels[1:3, 1:3, 1:3] = -1
    with pytest.raises(InputError, match="negative.nii.gz.*negative"):
        read_labelmap(_nifti(tmp_path / "negative.nii.gz", labels))
    labels[1:3, 1:3, 1:3] = 70000
    with pytest.raises(InputError, match="huge_label.nii.gz.*65535"):
        read_labelmap(_nifti(tmp_path / "huge_label.nii.gz", labels))


def test_failed_write_leaves_nothing(subject_t1, tmp_path):
    with pytest.raises(ValueError, match="detached"):
        write_image(subject_t1, tmp_path / "out.nhdr")
    with pytest.raises(ValueError, match="output format"):
        write_image(subject_t1, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
