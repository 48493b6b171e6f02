"""Readers on real brain images stored in RAS, LPS, PSR and oblique, in every supported format.

Geometry is checked three ways: against the affine the file was written from, against
files converted by SimpleITK's own NIfTI reader (independent of our LPS conversion), and
by where a landmark voxel (the brightest one) lands in the world.
"""

import logging

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry import move_image, reorient_to, rigid_matrix, to_ras
from SymmetryAwareCore.io import Image, read_image, read_labelmap, write_image
from SymmetryAwareCore.io.image import LPS_TO_RAS

ORIENTATIONS = ["RAS", "LPS", "PSR", "oblique"]


@pytest.fixture(scope="module")
def mni_small(mni_t1):
    """The MNI template at 4 mm (every 4th voxel: the affine scales exactly, no resampling)."""
    return Image(np.ascontiguousarray(mni_t1.array[::4, ::4, ::4]), mni_t1.affine @ np.diag([4, 4, 4, 1]), source=mni_t1.source)


def stored(image: Image, orientation: str) -> Image:
    """``image`` stored with another voxel order, or rotated and shifted by a known amount."""
    if orientation == "oblique":
        return move_image(reorient_to(image, "PSR"), rigid_matrix((10, -7, 12), (5, -3, 8)))
    return reorient_to(image, orientation)


def brightest_world(image: Image) -> np.ndarray:
    ijk = np.unravel_index(np.argmax(image.array), image.array.shape)
    return image.voxel_to_world(ijk)[0]


@pytest.mark.parametrize("fixture", ["subject_t1", "subject_epi", "mni_small"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_and_voxels(request, tmp_path, fixture, orientation, suffix):
    native = stored(request.getfixturevalue(fixture), orientation)
    back = read_image(write_image(native, tmp_path / f"img{suffix}"))
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, native.array)
    # NIfTI keeps the sform in float32: 1e-4 mm; NRRD / MetaImage keep full precision.
    np.testing.assert_allclose(back.affine, native.affine, atol=1e-4 if suffix == ".nii.gz" else 1e-9)
    np.testing.assert_allclose(brightest_world(back), brightest_world(native), atol=1e-4)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_files_converted_by_simpleitk_match_nibabel(subject_epi, tmp_path, orientation, suffix):
    """nibabel writes NIfTI, SimpleITK converts it: our reader must agree with nibabel's affine."""
    native = stored(subject_epi, orientation)
    nii_path = tmp_path / "src.nii.gz"
    nii = nib.Nifti1Image(native.array, native.affine)
    nib.save(nii, str(nii_path))
    expected_affine = nib.load(str(nii_path)).affine
    sitk.WriteImage(sitk.ReadImage(str(nii_path)), str(tmp_path / f"conv{suffix}"))
    back = read_image(tmp_path / f"conv{suffix}")
    np.testing.assert_allclose(back.affine, expected_affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, native.array)


def test_nrrd_geometry_agrees_with_slicerio(subject_t1, tmp_path):
    import slicerio

    native = stored(subject_t1, "oblique")
    path = write_image(native, tmp_path / "img.nrrd")
    volume = slicerio.read_volume(str(path))
    np.testing.assert_allclose(volume["ijkToLPS"], LPS_TO_RAS @ native.affine, atol=1e-9)
    np.testing.assert_array_equal(volume["voxels"], native.array)


def write_dicom_series(image: Image, folder, slope=2.0, intercept=-1024.0, series_uid="1.2.826.0.1.3680043.9.7433.1"):
    """Write ``image`` as a CT DICOM series, int16 with rescale slope and intercept.

    GDCM takes the real-world values and stores (value - intercept) / slope; it requires
    an integer slope for int16 output, so values come back within slope / 2 (+ rounding).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ image.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    volume = sitk.GetImageFromArray(np.rint(image.array).astype(np.int16).transpose(2, 1, 0))
    volume.SetSpacing(spacing.tolist())
    volume.SetDirection(direction.ravel().tolist())
    volume.SetOrigin(lps[:3, 3].tolist())
    orientation = np.concatenate([direction[:, 0], direction[:, 1]])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": f"{series_uid}.0",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.8f}" for v in orientation),
            "0018|0050": f"{spacing[2]:.6f}",
            "0028|1052": f"{intercept:g}",
            "0028|1053": f"{slope:g}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}_{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
def test_dicom_series_geometry(subject_epi, tmp_path, orientation):
    import pydicom

    native = stored(subject_epi, orientation)
    folder = write_dicom_series(native, tmp_path / "series")
    first = pydicom.dcmread(str(sorted(folder.iterdir())[0]))
    assert (float(first.RescaleSlope), float(first.RescaleIntercept)) == (2.0, -1024.0)
    assert first.pixel_array.dtype == np.int16

    back = read_image(folder)
    # The reader may order the slices the other way; compare on the RAS grid, in world mm.
    expected, _ = to_ras(native)
    got, _ = to_ras(back)
    assert got.spatial_shape == expected.spatial_shape
    np.testing.assert_allclose(got.affine, expected.affine, atol=1e-3)
    assert np.abs(got.array - np.rint(expected.array)).max() <= 1.0
    np.testing.assert_allclose(brightest_world(back), brightest_world(native), atol=1e-3)


def test_dicom_folder_with_two_series_reads_the_largest(subject_t1, tmp_path, caplog):
    small = Image(subject_t1.array[:, :, :5].copy(), subject_t1.affine)
    write_dicom_series(subject_t1, tmp_path / "mixed", series_uid="1.2.826.0.1.3680043.9.7433.2")
    write_dicom_series(small, tmp_path / "mixed", series_uid="1.2.826.0.1.3680043.9.7433.3")
    with caplog.at_level(logging.WARNING):
        image = read_image(tmp_path / "mixed")
    assert image.spatial_shape == subject_t1.spatial_shape
    assert "1.2.826.0.1.3680043.9.7433.2" in caplog.text and "1.2.826.0.1.3680043.9.7433.3" in caplog.text
    chosen = read_image(tmp_path / "mixed", series_uid="1.2.826.0.1.3680043.9.7433.3")
    assert chosen.spatial_shape == small.spatial_shape
    with pytest.raises(InputError, match="mixed"):
        read_image(tmp_path / "mixed", series_uid="1.2.3")


def test_4d_nifti(tmp_path):
    """The real 2-volume EPI is refused as an image but accepted as channels; 1 volume is 3D."""
    path = tmp_path / "epi4d.nii.gz"
    source = nib.load(str(nib.__path__[0] + "/tests/data/example4d.nii.gz"))
    data = np.asarray(source.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(data, source.affine), str(path))
    with pytest.raises(InputError, match="epi4d.nii.gz.*2 volumes"):
        read_image(path)
    both = read_image(path, allow_channels=True)
    assert both.array.shape == (2,) + data.shape[:3]
    np.testing.assert_array_equal(both.array[1], data[..., 1])

    single = tmp_path / "one.nii"
    nib.save(nib.Nifti1Image(data[..., :1], source.affine), str(single))
    image = read_image(single)
    assert image.array.shape == data.shape[:3]
    np.testing.assert_allclose(image.affine, source.affine, atol=1e-6)


def test_multichannel_nrrd_round_trip(subject_t1, tmp_path):
    stack = subject_t1.with_array(np.stack([subject_t1.array, -subject_t1.array, np.sqrt(np.abs(subject_t1.array))]))
    path = write_image(stored(stack, "oblique"), tmp_path / "stack.nrrd")
    with pytest.raises(InputError, match="3 volumes"):
        read_image(path)
    back = read_image(path, allow_channels=True)
    np.testing.assert_array_equal(back.array, stored(stack, "oblique").array)
    np.testing.assert_allclose(back.affine, stored(stack, "oblique").affine, atol=1e-9)


def test_labelmap_reader(subject_t1, tmp_path):
    labels = np.zeros(subject_t1.spatial_shape, np.int32)
    labels[3:9, 4:10, 5:8] = 300
    labels[10:12, 2:5, 1:3] = 2
    nib.save(nib.Nifti1Image(labels, subject_t1.affine), str(tmp_path / "lab.nii.gz"))
    back = read_labelmap(tmp_path / "lab.nii.gz")
    assert back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, labels)
    empty = tmp_path / "empty.nrrd"
    write_image(subject_t1.with_array(np.zeros(subject_t1.spatial_shape, np.uint8)), empty)
    assert read_labelmap(empty).array.dtype == np.uint8
    with pytest.raises(InputError, match="empty.nrrd"):
        read_image(empty)
    nib.save(nib.Nifti1Image(np.where(labels > 0, labels + 0.5, 0.0), subject_t1.affine), str(tmp_path / "half.nii.gz"))
    with pytest.raises(InputError, match="half.nii.gz.*non-integer"):
        read_labelmap(tmp_path / "half.nii.gz")


def test_nifti_without_orientation_is_read_with_a_warning(subject_t1, tmp_path, caplog):
    nii = nib.Nifti1Image(subject_t1.array, None)
    nii.header.set_qform(None, code=0)
    nii.header.set_sform(None, code=0)
    nib.save(nii, str(tmp_path / "analyze_like.nii"))
    with caplog.at_level(logging.WARNING):
        image = read_image(tmp_path / "analyze_like.nii")
    assert "analyze_like.nii" in caplog.text and "guess" in caplog.text
    assert image.spatial_shape == subject_t1.spatial_shape


def test_4d_metaimage(subject_t1, tmp_path):
    """ITK's 4th dimension is volumes: length 1 reads as 3D, length 2 as two channels."""
    from SymmetryAwareCore.io.writers import _to_sitk

    native = stored(subject_t1, "oblique")
    volume = _to_sitk(native.array, native.affine)
    sitk.WriteImage(sitk.JoinSeries([volume]), str(tmp_path / "one.mha"))
    sitk.WriteImage(sitk.JoinSeries([volume, volume * 2]), str(tmp_path / "two.mha"))
    one = read_image(tmp_path / "one.mha")
    np.testing.assert_array_equal(one.array, native.array)
    np.testing.assert_allclose(one.affine, native.affine, atol=1e-9)
    with pytest.raises(InputError, match="two.mha.*2 volumes"):
        read_image(tmp_path / "two.mha")
    two = read_image(tmp_path / "two.mha", allow_channels=True)
    np.testing.assert_array_equal(two.array[1], 2 * native.array)
