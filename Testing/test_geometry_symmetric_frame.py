"""The symmetric frame: the MSP at the array centre, and exact trips back to the native grid."""

import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry import (
    MidSagittalPlane,
    align_to_msp,
    estimate_msp,
    extract_counterpart,
    flip_lr,
    move_image,
    reorient_to,
    resample_to_grid,
    rigid_matrix,
)
from SymmetryAwareCore.geometry.symmetric_frame import regrid_isotropic
from SymmetryAwareCore.io.image import Image

MNI_TRUTH = MidSagittalPlane([1.0, 0.0, 0.0], [0.0, -18.0, 18.0], 1.0, True, "truth")


@pytest.fixture(scope="module")
def tilted_mni(mni_t1):
    """MNI at 3 mm, tilted by a known rotation and shift and resampled axis-aligned, with its true plane."""
    small = regrid_isotropic(mni_t1, 3.0)
    shape = np.array(small.spatial_shape)
    centre = small.voxel_to_world((shape - 1) / 2.0)[0]
    world = rigid_matrix((8.0, -12.0, 15.0), (6.0, -9.0, 4.0), centre)
    moved = move_image(small, world)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = moved.voxel_to_world((shape - 1) / 2.0)[0] - 3.0 * (shape - 1) / 2.0
    volume = Image(resample_to_grid(moved.array, moved.affine, affine, shape), affine)
    return volume, MNI_TRUTH.moved(world)


def _corr(a, b):
    keep = (a > 0) | (b > 0)
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def test_plane_is_exactly_the_central_sagittal_plane(tilted_mni):
    volume, truth = tilted_mni
    aligned, frame = align_to_msp(volume, truth, spacing=(2.0, 2.0, 2.0))
    width = aligned.spatial_shape[0]
    assert width % 2 == 0  # default shape: the plane falls between the two central columns
    # Points of the plane, anywhere on it, sit at i = (W - 1) / 2 of the aligned grid.
    rng = np.random.default_rng(0)
    in_plane = truth.point + rng.normal(size=(20, 3)) * 50.0
    in_plane -= truth.signed_distance(in_plane)[:, None] * truth.normal[None, :]
    np.testing.assert_allclose(truth.signed_distance(in_plane), 0.0, atol=1e-9)
    ijk = aligned.world_to_voxel(in_plane)
    np.testing.assert_allclose(ijk[:, 0], (width - 1) / 2.0, atol=1e-9)
    # Axis 0 runs along the normal (left -> right), with the spacing asked for.
    np.testing.assert_allclose(aligned.affine[:3, 0] / 2.0, truth.normal, atol=1e-12)
    np.testing.assert_allclose(aligned.spacing, [2.0, 2.0, 2.0], atol=1e-12)
    assert np.allclose(frame.affine, aligned.affine)


def test_mirror_helper_is_the_anatomical_mirror_in_the_frame(tilted_mni):
    volume, truth = tilted_mni
    aligned, _ = align_to_msp(volume, estimate_msp(volume), spacing=(3.0, 3.0, 3.0))
    a = aligned.array
    # The whole-volume counterpart (geometry.mirror) is the anatomical mirror: the template
    # is symmetric, so it matches itself; before alignment it does not.
    counterpart = extract_counterpart(a, (0, 0, 0), a.shape)
    assert _corr(a, counterpart) > 0.97
    assert _corr(volume.array, flip_lr(volume.array)) < 0.9


def test_untilted_grid_is_the_identity_for_images_and_labels(mni_t1):
    small = regrid_isotropic(mni_t1, 3.0)
    centre = small.voxel_to_world((np.array(small.spatial_shape) - 1) / 2.0)[0]
    plane = MidSagittalPlane([1.0, 0.0, 0.0], centre, 1.0, True, "given")
    stored = reorient_to(small, "LPS")  # a permutation/flip of axes must not matter
    for order in ("linear", "nearest"):
        aligned, frame = align_to_msp(stored, plane, spacing=None, shape=small.spatial_shape, center=centre, order=order)
        np.testing.assert_allclose(aligned.affine, small.affine, atol=1e-9)
        np.testing.assert_array_equal(aligned.array, small.array)
        np.testing.assert_array_equal(frame.to_native(aligned.array, order=order), stored.array)


def test_to_native_samples_the_aligned_cell_containing_each_native_centre(subject_t1):
    """Guarantee 1: a labelmap defined in the aligned frame, read at native voxel centres."""
    n = np.array([1.0, 0.2, -0.15])
    plane = MidSagittalPlane(n, [1.0, -3.0, 8.0], 1.0, True, "given")
    aligned, frame = align_to_msp(subject_t1, plane, spacing=(3.0, 2.5, 3.5))
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 200, size=aligned.spatial_shape).astype(np.uint8)
    native = frame.to_native(labels)
    assert native.shape == subject_t1.spatial_shape and native.dtype == np.uint8
    # Independent check through world coordinates: native centre -> world -> aligned cell.
    ijk = np.indices(subject_t1.spatial_shape).reshape(3, -1).T
    cont = aligned.world_to_voxel(subject_t1.voxel_to_world(ijk))
    frac = np.abs(cont - np.round(cont))
    clear = np.all(np.abs(frac - 0.5) > 1e-6, axis=1)  # not on a cell boundary (ties)
    cell = np.floor(cont + 0.5).astype(int)
    inside = np.all((cell >= 0) & (cell < np.array(aligned.spatial_shape)), axis=1)
    expected = np.zeros(len(ijk), np.uint8)
    expected[inside] = labels[tuple(cell[inside].T)]
    got = native.reshape(-1)
    assert clear.mean() > 0.99 and inside.mean() > 0.99
    np.testing.assert_array_equal(got[clear], expected[clear])


def test_native_labelmap_survives_the_round_trip(subject_t1):
    """Guarantee 2: native -> frame -> native is exact when norm(aligned spacing) < min native spacing."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, size=subject_t1.spatial_shape).astype(np.uint8)  # one-voxel structures
    plane = MidSagittalPlane([1.0, -0.25, 0.3], [2.0, 0.0, 10.0], 1.0, True, "given")
    # subject voxels are 2 mm: 1.1 mm aligned voxels have norm 1.91 < 2.
    _, frame = align_to_msp(subject_t1, plane, spacing=(1.1, 1.1, 1.1))
    back = frame.to_native(frame.to_frame(labels))
    np.testing.assert_array_equal(back, labels)
    # Too coarse a frame cannot keep one-voxel structures (documented, not hidden).
    _, coarse = align_to_msp(subject_t1, plane, spacing=(2.0, 2.0, 2.0))
    assert not np.array_equal(coarse.to_native(coarse.to_frame(labels)), labels)


def test_frame_labelmap_survives_the_round_trip(subject_t1):
    """Guarantee 2, other way: frame -> native -> frame exact when norm(native spacing) < min aligned spacing."""
    plane = MidSagittalPlane([1.0, 0.15, 0.1], [0.0, -2.0, 10.0], 1.0, True, "given")
    aligned, frame = align_to_msp(subject_t1, plane, spacing=(3.6, 3.6, 3.6))  # norm(2, 2, 2) = 3.46
    rng = np.random.default_rng(3)
    labels = rng.integers(1, 9, size=aligned.spatial_shape).astype(np.uint8)
    back = frame.to_frame(frame.to_native(labels))
    # Where the aligned voxel centre lies inside the native field of view.
    ijk = np.indices(aligned.spatial_shape).reshape(3, -1).T
    cont = subject_t1.world_to_voxel(aligned.voxel_to_world(ijk))
    covered = np.all((cont >= -0.5) & (cont < np.array(subject_t1.spatial_shape) - 0.5), axis=1)
    assert covered.sum() > 100
    np.testing.assert_array_equal(back.reshape(-1)[covered], labels.reshape(-1)[covered])


def test_linear_maps_go_back_exactly_for_linear_fields(subject_t1):
    plane = MidSagittalPlane([1.0, 0.1, -0.2], [0.0, 0.0, 10.0], 1.0, True, "given")
    aligned, frame = align_to_msp(subject_t1, plane, spacing=(2.0, 2.0, 2.0))

    def field(xyz):
        return 0.3 * xyz[:, 0] - 0.2 * xyz[:, 1] + 0.1 * xyz[:, 2] + 50.0

    a_ijk = np.indices(aligned.spatial_shape).reshape(3, -1).T
    values = field(aligned.voxel_to_world(a_ijk)).reshape(aligned.spatial_shape).astype(np.float64)
    stack = np.stack([values, 2.0 * values])  # channels-first maps too
    native = frame.to_native(stack, order="linear")
    n_ijk = np.indices(subject_t1.spatial_shape).reshape(3, -1).T
    cont = aligned.world_to_voxel(subject_t1.voxel_to_world(n_ijk))
    interior = np.all((cont >= 0) & (cont <= np.array(aligned.spatial_shape) - 1), axis=1)
    expected = field(subject_t1.voxel_to_world(n_ijk))
    np.testing.assert_allclose(native[0].reshape(-1)[interior], expected[interior], atol=1e-6)
    np.testing.assert_allclose(native[1].reshape(-1)[interior], 2 * expected[interior], atol=1e-6)


def test_wrong_grid_and_bad_arguments(subject_t1):
    plane = MidSagittalPlane([1.0, 0.0, 0.0], [0.0, 0.0, 0.0], 1.0, True, "given")
    aligned, frame = align_to_msp(subject_t1, plane)
    with pytest.raises(InputError, match="not on the frame grid"):
        frame.to_native(np.zeros((5, 5, 5)))
    with pytest.raises(InputError, match="not on the input grid"):
        frame.to_frame(np.zeros(aligned.spatial_shape))
    with pytest.raises(ValueError, match="order"):
        frame.to_native(aligned.array, order="cubic")
    with pytest.raises(InputError, match="spacing"):
        align_to_msp(subject_t1, plane, spacing=(1.0, 0.0, 1.0))
    back = frame.image_to_native(aligned, order="linear")
    assert back.same_grid(subject_t1)


def test_channels_are_aligned_together(subject_t1):
    stack = Image(np.stack([subject_t1.array, -subject_t1.array]), subject_t1.affine, ("t1", "neg"))
    plane = MidSagittalPlane([1.0, 0.1, 0.05], [0.0, 0.0, 10.0], 1.0, True, "given")
    aligned, frame = align_to_msp(stack, plane, spacing=(2.0, 2.0, 2.0))
    assert aligned.array.shape == (2, *frame.shape) and aligned.channel_names == ("t1", "neg")
    np.testing.assert_allclose(aligned.array[1], -aligned.array[0])
