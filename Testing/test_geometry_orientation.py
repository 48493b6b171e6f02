"""RAS reorientation and its exact inverse, on real images stored in other orientations."""

import numpy as np
import pytest

from SymmetryAwareCore.geometry import from_ras, move_image, orientation_codes, reorient_to, rigid_matrix, to_ras


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PSR", "ILA", "LAI"])
def test_to_ras_keeps_world_positions_and_inverts_exactly(subject_t1, codes):
    native = reorient_to(subject_t1, codes)
    assert orientation_codes(native.affine) == codes
    ras, record = to_ras(native)
    assert orientation_codes(ras.affine) == "RAS"
    # Every voxel keeps its world position: compare world coordinates of the maximum.
    i_native = np.unravel_index(np.argmax(native.array), native.array.shape)
    i_ras = np.unravel_index(np.argmax(ras.array), ras.array.shape)
    np.testing.assert_allclose(native.voxel_to_world(i_native), ras.voxel_to_world(i_ras), atol=1e-6)
    # RAS data equal the original RAS-stored data, and the way back is exact.
    np.testing.assert_array_equal(ras.array, to_ras(subject_t1)[0].array)
    back = from_ras(ras.array, record)
    assert back.shape == native.array.shape
    np.testing.assert_array_equal(back, native.array)


def test_left_stays_left(subject_t1):
    """Mark the patient's left half in RAS, store in LPS, come back: still the left half."""
    lps = reorient_to(subject_t1, "LPS")
    ras, record = to_ras(lps)
    mark = np.zeros(ras.spatial_shape, np.uint8)
    mark[: ras.spatial_shape[0] // 2] = 1  # low x in RAS = patient's left
    native_mark = from_ras(mark, record)
    ijk = np.argwhere(native_mark == 1)
    world = lps.voxel_to_world(ijk)
    centre_x = ras.voxel_to_world([[ras.spatial_shape[0] / 2 - 0.5, 0, 0]])[0, 0]
    assert np.all(world[:, 0] < centre_x)


def test_oblique_image_keeps_rotation_in_affine(subject_epi):
    oblique = move_image(reorient_to(subject_epi, "PSR"), rigid_matrix((10, -7, 12), (5, -3, 8)))
    ras, record = to_ras(oblique)
    assert orientation_codes(ras.affine) == "RAS"
    np.testing.assert_array_equal(from_ras(ras.array, record), oblique.array)
    # Channels-first arrays follow the same path.
    stack = np.stack([ras.array, 2 * ras.array])
    np.testing.assert_array_equal(from_ras(stack, record)[1], 2 * oblique.array)
