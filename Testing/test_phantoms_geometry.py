"""Phantom truth: the recorded pose is the one applied, the recorded plane is the head's mirror plane."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from SymmetryAwareCore.geometry.mirror import mirror_points_ras
from SymmetryAwareCore.geometry.rigid import rotation_matrix
from SymmetryAwareCore.phantoms import make_subject

SPACING = 3.0


def _centroid_ras(phantom, mask: np.ndarray) -> np.ndarray:
    return phantom.label.voxel_to_world(np.argwhere(mask).mean(0)[None])[0]


@pytest.mark.parametrize("seed, kind, modality, core", [(4, "glioma", "mri", (1, 4)), (8, "haemorrhage", "ct", (1,))])
def test_lesion_lands_where_the_recorded_pose_puts_its_centre(seed, kind, modality, core):
    p = make_subject(seed, kind, modality, SPACING, "unilateral")
    pose = np.asarray(p.info["pose"]["world_from_head"])
    assert np.linalg.norm(p.info["pose"]["angles_deg"]) > 5  # a real tilt, not identity
    head_centre = np.asarray(p.info["lesions"][0]["centre_head_mm"])
    expected = pose[:3, :3] @ head_centre + pose[:3, 3]
    np.testing.assert_allclose(p.info["lesions"][0]["centre_ras"], expected, atol=1e-3)
    # These seeds move the lesion several voxels, so an unapplied pose would show.
    assert np.linalg.norm(expected - head_centre) > 2 * SPACING
    found = _centroid_ras(p, np.isin(p.label.array, core))
    assert np.linalg.norm(found - expected) < SPACING


def test_recorded_plane_follows_the_recorded_rotation():
    p = make_subject(9, "healthy", "mri", SPACING)
    rot = rotation_matrix(p.info["pose"]["angles_deg"])
    np.testing.assert_allclose(p.info["true_plane"]["normal_ras"], rot[:, 0], atol=1e-6)


def test_bilateral_lesions_mirror_each_other_across_recorded_plane():
    p = make_subject(14, "glioma", "mri", SPACING, "bilateral")
    assert len(p.info["lesions"]) == 2 and {l["side"] for l in p.info["lesions"]} == {"left", "right"}
    components, count = ndimage.label(np.isin(p.label.array, (1, 4)))
    assert count == 2
    a, b = (_centroid_ras(p, components == k) for k in (1, 2))
    plane = p.info["true_plane"]
    mirrored = mirror_points_ras(a[None], plane["normal_ras"], plane["point_ras"])[0]
    assert np.linalg.norm(mirrored - b) < 1.5 * SPACING
    # A plane tilted by 10 degrees more would not pair them.
    tilted = rotation_matrix([0, 0, 10]) @ np.asarray(plane["normal_ras"])
    assert np.linalg.norm(mirror_points_ras(a[None], tilted, plane["point_ras"])[0] - b) > 2 * SPACING


def _mirror_overlap(phantom, normal, point) -> float:
    mask = phantom.brain_mask.array
    idx = np.argwhere(mask)
    world = phantom.brain_mask.voxel_to_world(idx)
    back = np.round(phantom.brain_mask.world_to_voxel(mirror_points_ras(world, normal, point))).astype(int)
    shape = np.array(mask.shape)
    valid = np.all((back >= 0) & (back < shape), axis=1)
    hits = np.zeros(len(back), dtype=bool)
    hits[valid] = mask[tuple(back[valid].T)]
    return float(hits.mean())


def test_brain_reflected_across_recorded_plane_stays_in_brain():
    p = make_subject(31, "healthy", "mri", SPACING, "healthy", max_rotation_deg=15.0)
    plane = p.info["true_plane"]
    good = _mirror_overlap(p, plane["normal_ras"], plane["point_ras"])
    assert good > 0.95
    # The scanner's own x axis (the plane had the head not been tilted) does worse.
    assert _mirror_overlap(p, [1.0, 0.0, 0.0], plane["point_ras"]) < good - 0.03


def test_stored_orientation_does_not_move_the_anatomy():
    ras = make_subject(4, "glioma", "mri", SPACING, "unilateral")
    lps = make_subject(4, "glioma", "mri", SPACING, "unilateral", orientation="LPS")
    from SymmetryAwareCore.geometry.orientation import orientation_codes

    assert orientation_codes(lps.image.affine) == "LPS"
    np.testing.assert_allclose(_centroid_ras(ras, ras.label.array > 0), _centroid_ras(lps, lps.label.array > 0), atol=1e-6)


def _side_ratio(phantom) -> float:
    """Brain voxels on the +normal (right) side of the recorded plane over those on the left."""
    plane = phantom.info["true_plane"]
    world = phantom.brain_mask.voxel_to_world(np.argwhere(phantom.brain_mask.array))
    side = (world - plane["point_ras"]) @ np.asarray(plane["normal_ras"])
    return float((side > 0).sum() / (side < 0).sum())


def test_natural_asymmetry_is_the_recorded_hemisphere_size_difference():
    plain = make_subject(41, "healthy", "mri", SPACING, "healthy")
    skewed = make_subject(41, "healthy", "mri", SPACING, "asymmetric")
    assert plain.info["natural_asymmetry"]["hemisphere_scale"] == 0.0
    assert _side_ratio(plain) == pytest.approx(1.0, abs=0.005)
    scale = skewed.info["natural_asymmetry"]["hemisphere_scale"]
    assert 0.02 <= abs(scale) <= 0.04 and skewed.info["natural_asymmetry"]["ventricle_inflation_mm"] > 0
    expected = 1.0 + scale if scale > 0 else 1.0 / (1.0 - scale)
    assert _side_ratio(skewed) == pytest.approx(expected, abs=0.01)


def test_midline_lesion_straddles_the_recorded_plane():
    p = make_subject(7, "glioma", "mri", SPACING, "midline")
    assert p.info["lesions"][0]["side"] == "midline"
    plane = p.info["true_plane"]
    world = p.label.voxel_to_world(np.argwhere(np.isin(p.label.array, (1, 4))))
    side = (world - plane["point_ras"]) @ np.asarray(plane["normal_ras"])
    assert (side > 0).sum() > 20 and (side < 0).sum() > 20
    assert abs(side.mean()) < SPACING


def test_healthy_variation_keeps_the_mid_sagittal_plane():
    from SymmetryAwareCore.phantoms.deformation import HealthyVariation, SmoothField

    rng = np.random.default_rng(0)
    warp = SmoothField.random(rng, amplitude_mm=3.0, wavelength_mm=50.0)
    on_plane = np.column_stack([np.zeros(50), rng.uniform(-90, 60, 50), rng.uniform(-50, 70, 50)])
    for variation in (HealthyVariation(np.array([1.04, 0.97, 1.02]), warp),
                      HealthyVariation(np.array([1.0, 1.0, 1.0]), warp, hemisphere_scale=-0.03)):
        np.testing.assert_allclose(variation(on_plane)[:, 0], 0.0, atol=1e-9)
        # Mirror-symmetric: mirrored points map to mirrored template points.
        off = on_plane + np.array([25.0, 0.0, 0.0])
        mirror = np.array([-1.0, 1.0, 1.0])
        if variation.hemisphere_scale == 0:
            np.testing.assert_allclose(variation(off * mirror), variation(off) * mirror, atol=1e-9)
        else:
            assert not np.allclose(variation(off * mirror), variation(off) * mirror)
