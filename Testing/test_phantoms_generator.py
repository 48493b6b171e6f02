"""Phantom subjects: determinism by seed, labels that agree with the image, mass effect."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.phantoms import make_subject
from SymmetryAwareCore.phantoms.deformation import RadialPush

SPACING = 3.0  # coarse on purpose: every subject here takes well under a second


def _brain_median(phantom, channel: int) -> float:
    brain = phantom.brain_mask.array & (phantom.label.array == 0)
    return float(np.median(phantom.image.array[channel][brain]))


def test_same_seed_same_subject_and_other_seed_differs():
    a = make_subject(11, "glioma", "mri", SPACING)
    b = make_subject(11, "glioma", "mri", SPACING)
    c = make_subject(12, "glioma", "mri", SPACING)
    assert np.array_equal(a.image.array, b.image.array)
    assert np.array_equal(a.label.array, b.label.array)
    assert np.array_equal(a.image.affine, b.image.affine)
    assert a.info == b.info
    assert a.image.array.shape != c.image.array.shape or not np.array_equal(a.image.array, c.image.array)
    assert a.info["pose"] != c.info["pose"]


def test_glioma_labels_agree_with_contrasts():
    p = make_subject(3, "glioma", "mri", SPACING, "unilateral")
    assert p.image.channel_names == ("t1", "t1ce", "t2", "flair")
    assert p.image.array.dtype == np.float32 and p.label.array.dtype == np.uint8
    label = p.label.array
    assert set(np.unique(label)) == {0, 1, 2, 4}
    t1, t1ce, t2, flair = range(4)
    # Enhancing rim bright on T1ce, not on plain T1.
    assert p.image.array[t1ce][label == 4].mean() > 1.5 * _brain_median(p, t1ce)
    assert p.image.array[t1][label == 4].mean() < 1.2 * _brain_median(p, t1)
    # Oedema bright on FLAIR and T2; necrosis dark on T1.
    assert p.image.array[flair][label == 2].mean() > 1.4 * _brain_median(p, flair)
    assert p.image.array[t2][label == 2].mean() > 1.2 * _brain_median(p, t2)
    assert p.image.array[t1][label == 1].mean() < 0.7 * _brain_median(p, t1)
    # Skull-stripped like BraTS: nothing outside the brain mask.
    assert np.all(p.image.array[:, ~p.brain_mask.array] == 0)
    assert p.info["status"] == "patient" and p.info["findings"] == ["glioma"]


def test_enhancing_label_value_is_a_setting():
    p = make_subject(3, "glioma", "mri", SPACING, "unilateral", et_label=3)
    assert set(np.unique(p.label.array)) == {0, 1, 2, 3}
    assert p.info["labels"]["3"] == "enhancing tumour"


def test_ct_haemorrhage_in_hounsfield_range():
    p = make_subject(5, "haemorrhage", "ct", SPACING, "unilateral")
    ct, label = p.image.array[0], p.label.array
    assert set(np.unique(label)) == {0, 1}
    assert 50 <= np.median(ct[label == 1]) <= 80
    brain = p.brain_mask.array & (label == 0)
    assert 20 <= np.median(ct[brain]) <= 45
    assert ct.max() > 700  # skull
    assert abs(np.median(ct[0]) + 1000) < 20  # the first slab is air
    assert p.info["findings"] == ["haemorrhage"]


def test_bleed_size_and_density_ranges_change_only_the_bleed():
    default = make_subject(5, "haemorrhage", "ct", SPACING, "unilateral")
    small = make_subject(5, "haemorrhage", "ct", SPACING, "unilateral", bleed_radius_mm=(4.0, 5.0), bleed_hu=(44.0, 46.0))
    (d,), (s,) = default.info["lesions"], small.info["lesions"]
    # Same subject, pose and bleed site: only the bleed's size and density were redrawn.
    assert small.info["pose"] == default.info["pose"]
    assert s["centre_head_mm"] == d["centre_head_mm"]
    assert 4.0 <= s["radius_mm"] <= 5.0 and 44.0 <= s["value_hu"] <= 46.0
    assert 6.0 <= d["radius_mm"] <= 15.0 and 58.0 <= d["value_hu"] <= 72.0
    ct, label = small.image.array[0], small.label.array
    assert 0 < (label == 1).sum() < (default.label.array == 1).sum()
    # A subtle bleed: a few HU above grey matter (~38 HU), not the 58-72 HU of the default.
    assert 38 <= np.median(ct[label == 1]) <= 50


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(bleed_radius_mm=(5.0, 2.0)), "radius"),
        (dict(bleed_radius_mm=(0.2, 2.0)), "radius"),
        (dict(bleed_hu=(40.0, 400.0)), "density"),
        (dict(bleed_hu=("a", 50)), "two numbers"),
    ],
)
def test_bad_bleed_ranges_are_refused(kwargs, words):
    with pytest.raises(InputError, match=words):
        make_subject(1, "haemorrhage", "ct", SPACING, **kwargs)


def test_wml_several_small_flair_bright_lesions():
    p = make_subject(8, "wml", "mri", SPACING, "unilateral")
    components, count = ndimage.label(p.label.array > 0)
    assert count >= 2
    sizes_ml = np.bincount(components.ravel())[1:] * SPACING**3 / 1000
    assert sizes_ml.max() < 3.0
    flair = p.image.array[3]
    assert flair[p.label.array == 1].mean() > 1.4 * _brain_median(p, 3)


def test_healthy_subject_has_no_lesion():
    p = make_subject(2, "healthy", "mri", SPACING)
    assert not p.label.array.any()
    assert p.info["status"] == "healthy" and p.info["lesions"] == []


def test_radial_push_conserves_volume_and_moves_tissue_outward():
    push = RadialPush(np.array([10.0, -5.0, 20.0]), radius_mm=8.0, fade_mm=1e6)
    direction = np.array([0.6, 0.0, 0.8])
    r = np.array([10.0, 15.0, 30.0])
    points = push.centre + r[:, None] * direction
    source = push(points)
    r0 = np.linalg.norm(source - push.centre, axis=1)
    # Tissue now at r came from r0 < r, with r**3 - r0**3 the grown mass's volume.
    assert np.all(r0 < r)
    np.testing.assert_allclose(r**3 - r0**3, 8.0**3, rtol=1e-9)
    np.testing.assert_allclose((source - push.centre) / r0[:, None], np.tile(direction, (3, 1)), atol=1e-9)


def test_mass_effect_displaces_tissue_around_the_lesion_only():
    kwargs = dict(seed=21, kind="glioma", modality="mri", spacing=SPACING, scenario="unilateral", bias=False, noise=False)
    pushed = make_subject(mass_effect=True, **kwargs)
    plain = make_subject(mass_effect=False, **kwargs)
    assert pushed.image.same_grid(plain.image)
    # The tumour core is the same; only the tissue around it (oedema included) moved.
    # (Edge voxels shared with oedema may change label as the parenchyma under them moves.)
    core_a, core_b = (np.isin(p.label.array, (1, 4)) for p in (pushed, plain))
    assert 2 * (core_a & core_b).sum() / (core_a.sum() + core_b.sum()) > 0.95
    lesion = pushed.lesions[0]
    centre = np.asarray(pushed.info["lesions"][0]["centre_ras"])
    idx = np.argwhere(pushed.brain_mask.array)
    dist = np.linalg.norm(pushed.image.voxel_to_world(idx) - centre, axis=1)
    outside = pushed.label.array[tuple(idx.T)] == 0
    t1_a = pushed.image.array[0][tuple(idx.T)]
    t1_b = plain.image.array[0][tuple(idx.T)]
    reach = lesion.radius_mm + lesion.oedema_mm
    ring = outside & (dist > reach) & (dist < reach + 12)
    far = outside & (dist > 90)
    assert ring.sum() > 50 and far.sum() > 50
    change = np.abs(t1_a - t1_b)
    # Tissue beside the tumour moved (a few mm at grey/white edges shows as intensity
    # change); far away the push has faded out.
    assert change[ring].mean() > 10.0
    assert change[far].mean() < 0.1 * change[ring].mean()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(seed=1, kind="tumour"), "kind"),
        (dict(seed=1, kind="haemorrhage", modality="mri"), "modality"),
        (dict(seed=1, kind="glioma", modality="pet"), "modality"),
        (dict(seed=1, spacing=0.1), "spacing"),
        (dict(seed=-3), "seed"),
        (dict(seed=1, et_label=5), "enhancing"),
        (dict(seed=1, scenario="sideways"), "scenario"),
        (dict(seed=1, kind="healthy", scenario="bilateral"), "healthy"),
        (dict(seed=1, orientation="XYZ"), "orientation"),
        (dict(seed=1, lesion_contrast=0.0), "contrast"),
        (dict(seed=1, lesion_contrast=1.5), "contrast"),
        (dict(seed=1, variation=4.0), "variation"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs, words):
    with pytest.raises(InputError, match=words):
        make_subject(**kwargs)


def test_lesion_contrast_scales_the_lesion_minus_tissue_difference_only():
    kwargs = dict(seed=21, kind="glioma", modality="mri", spacing=SPACING, scenario="unilateral", bias=False, noise=False)
    full, half, faint = (make_subject(lesion_contrast=c, **kwargs) for c in (1.0, 0.5, 0.15))
    assert np.array_equal(full.label.array, faint.label.array)
    lesion = full.label.array > 0
    flair_full, flair_half, flair_faint = (p.image.array[3] for p in (full, half, faint))
    # value(c) = healthy + c * (lesioned - healthy): differences between levels are linear in c.
    d1 = (flair_full - flair_faint)[lesion]
    d2 = (flair_half - flair_faint)[lesion]
    assert np.abs(d1).mean() > 100.0  # oedema is far brighter than WM at full contrast
    np.testing.assert_allclose(d2, d1 * (0.5 - 0.15) / (1.0 - 0.15), rtol=1e-3, atol=0.05)
    # Far from the lesion nothing changes.
    far = ndimage.distance_transform_edt(~lesion) * SPACING > 30
    np.testing.assert_allclose(flair_full[far], flair_faint[far], atol=1e-2)
    # The faint lesion is within the range of normal tissue on FLAIR.
    brain = full.brain_mask.array & ~lesion
    assert np.median(flair_faint[full.label.array == 2]) < np.percentile(flair_full[brain], 99)
    assert full.info["lesion_contrast"] == 1.0 and faint.info["lesion_contrast"] == 0.15


def test_variation_one_is_the_default_and_more_variation_changes_anatomy():
    default = make_subject(4, "healthy", "mri", SPACING)
    same = make_subject(4, "healthy", "mri", SPACING, variation=1.0)
    strong = make_subject(4, "healthy", "mri", SPACING, variation=2.5)
    none = make_subject(4, "healthy", "mri", SPACING, variation=0.0)
    assert np.array_equal(default.image.array, same.image.array)
    assert default.info["pose"] == strong.info["pose"] == none.info["pose"]  # same draws, other amplitudes
    # Head size departs further from the template's (variation 0) at 2.5 than at 1.
    def volume_change(p):
        return abs(p.brain_mask.array.sum() / none.brain_mask.array.sum() - 1.0)
    assert volume_change(strong) > 1.5 * volume_change(default) > 0.0
    assert strong.info["variation"] == 2.5
