"""Multi-modal cases: channels stacked on the first grid, mismatched grids resampled or refused."""

import logging

import numpy as np
import pytest
import SimpleITK as sitk

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry import move_image, reorient_to, rigid_matrix
from SymmetryAwareCore.io import GRID_TOLERANCE_MM, Image, grid_distance_mm, load_case, resample_to, write_image
from SymmetryAwareCore.io.writers import _to_sitk


def test_same_grid_stacks_exactly(subject_epi, tmp_path):
    a = write_image(subject_epi, tmp_path / "t1.nii.gz")
    b = write_image(subject_epi.with_array(np.sqrt(subject_epi.array)), tmp_path / "flair.nrrd")
    case = load_case([a, b], ["t1", "flair"], on_grid_mismatch="error")
    assert case.array.shape == (2,) + subject_epi.spatial_shape
    assert case.channel_names == ("t1", "flair")
    assert case.array.dtype == np.float32
    np.testing.assert_array_equal(case.array[0], subject_epi.array)
    np.testing.assert_allclose(case.array[1], np.sqrt(subject_epi.array), rtol=1e-6)
    np.testing.assert_allclose(case.affine, subject_epi.affine, atol=1e-4)


def test_grid_tolerance(subject_t1):
    nudged = move_image(subject_t1, rigid_matrix((0, 0, 0), (GRID_TOLERANCE_MM / 2, 0, 0)))
    assert grid_distance_mm(subject_t1, nudged) == pytest.approx(GRID_TOLERANCE_MM / 2)
    assert grid_distance_mm(subject_t1, reorient_to(subject_t1, "LPS")) > 1.0


def test_other_voxel_order_resamples_to_identical_values(subject_t1, tmp_path, caplog):
    """Same anatomy stored as PSR: every output voxel centre is an input voxel centre."""
    a = write_image(subject_t1, tmp_path / "t1.nii.gz")
    b = write_image(reorient_to(subject_t1, "PSR"), tmp_path / "t2_psr.nrrd")
    with caplog.at_level(logging.WARNING):
        case = load_case([a, b], ["t1", "t2"])
    assert "t2_psr.nrrd" in caplog.text and "t1.nii.gz" in caplog.text
    np.testing.assert_allclose(case.array[1], subject_t1.array, rtol=1e-5, atol=1e-2)


def test_known_shifts(subject_t1, tmp_path):
    """Anatomy moved by 2 voxels and by half a voxel along i: resampling must undo it exactly."""
    a = write_image(subject_t1, tmp_path / "ref.nii.gz")
    step = subject_t1.affine[:3, 0]  # one voxel along i, in RAS mm
    whole = write_image(move_image(subject_t1, rigid_matrix((0, 0, 0), 2 * step)), tmp_path / "whole.nrrd")
    half = write_image(move_image(subject_t1, rigid_matrix((0, 0, 0), 0.5 * step)), tmp_path / "half.nrrd")
    case = load_case([a, whole, half], ["ref", "whole", "half"])
    x = subject_t1.array
    # Content moved by +2 voxels: output voxel i shows input voxel i - 2.
    np.testing.assert_allclose(case.array[1][2:], x[:-2], rtol=1e-5, atol=1e-2)
    # Half a voxel: trilinear gives the mean of voxels i - 1 and i.
    np.testing.assert_allclose(case.array[2][1:], (x[1:] + x[:-1]) / 2, rtol=1e-5, atol=1e-2)
    # Outside the moved image's field of view: its minimum, not 0.
    np.testing.assert_allclose(case.array[1][:2], x.min())


def test_oblique_resampling_agrees_with_simpleitk(subject_epi, tmp_path):
    reference = subject_epi
    oblique = move_image(reorient_to(subject_epi, "PSR"), rigid_matrix((8, -5, 6), (3.3, -2.1, 4.7)))
    ours = resample_to(oblique, reference).array
    # SimpleITK's own physical-space resampler, on the LPS images built from the same affines.
    expected = sitk.Resample(
        _to_sitk(oblique.array, oblique.affine),
        _to_sitk(reference.array, reference.affine),
        sitk.Transform(),
        sitk.sitkLinear,
        float(oblique.array.min()),
    )
    expected = sitk.GetArrayFromImage(expected).transpose(2, 1, 0)
    # Compare away from the field-of-view border, where the two treat edge voxels differently.
    ijk = np.argwhere(np.ones(reference.spatial_shape, bool))
    src = oblique.world_to_voxel(reference.voxel_to_world(ijk))
    inside = np.all((src >= 1) & (src <= np.array(oblique.spatial_shape) - 2), axis=1).reshape(reference.spatial_shape)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(ours[inside], expected[inside], rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    assert np.corrcoef(ours[inside], reference.array[inside])[0, 1] < 0.99  # it did move


def test_error_mode_names_both_files(subject_t1, tmp_path):
    a = write_image(subject_t1, tmp_path / "t1.nii.gz")
    b = write_image(reorient_to(subject_t1, "LPS"), tmp_path / "flair.mha")
    with pytest.raises(InputError, match=r"flair\.mha.*t1\.nii\.gz"):
        load_case([a, b], ["t1", "flair"], on_grid_mismatch="error")


def test_bad_case_arguments(subject_t1, tmp_path):
    a = write_image(subject_t1, tmp_path / "t1.nii.gz")
    far = write_image(move_image(subject_t1, rigid_matrix((0, 0, 0), (500, 0, 0))), tmp_path / "far.nii.gz")
    with pytest.raises(InputError, match="far.nii.gz.*overlap"):
        load_case([a, far], ["t1", "t2"])
    with pytest.raises(InputError, match="2 images .* 1 channels"):
        load_case([a, a], ["t1"])
    with pytest.raises(InputError, match="repeat"):
        load_case([a, a], ["t1", "t1"])
    with pytest.raises(InputError, match="missing.nii"):
        load_case([a, tmp_path / "missing.nii"], ["t1", "t2"])
    with pytest.raises(ValueError):
        load_case([a], ["t1"], on_grid_mismatch="ignore")
