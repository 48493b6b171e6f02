"""Mid-sagittal plane estimation on real brains tilted and shifted by known amounts.

The MNI152 2009a symmetric template's true plane is x = 0 by construction. A tilted VOLUME
(what a scanner gives) is made by moving the image (exact: affine only) and resampling it
onto an axis-aligned grid; the true plane moves with the same world transform. For the real
subject T1, whose true plane is unknown, the reference is the estimate on the untilted scan
and the test checks that the estimate moves with the head (equivariance).
"""

import json

import numpy as np
import pytest

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry import (
    MidSagittalPlane,
    axes_plane,
    estimate_msp,
    plane_angle_deg,
    plane_offset_mm,
    reorient_to,
)
from SymmetryAwareCore.geometry.symmetric_frame import regrid_isotropic, tilted_scan
from SymmetryAwareCore.io.image import Image
from SymmetryAwareCore.io.writers import write_nifti

MNI_TRUTH = MidSagittalPlane([1.0, 0.0, 0.0], [0.0, -18.0, 18.0], 1.0, True, "truth")


def poses(count, seed):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-20, 20, 3), rng.uniform(-15, 15, 3)) for _ in range(count)]


@pytest.fixture(scope="module")
def mni_small(mni_t1):
    return regrid_isotropic(mni_t1, 2.5)


def test_mni_rotated_within_bounds_and_better_than_baseline(mni_small):
    angle_errors, offset_errors, baseline_errors = [], [], []
    for angles, shift in poses(3, seed=7):
        volume, world = tilted_scan(mni_small, angles, shift)
        truth = MNI_TRUTH.moved(world)
        plane = estimate_msp(volume)
        assert plane.confident, plane.message
        assert plane.method == "mirror-registration"
        angle_errors.append(plane_angle_deg(plane, truth))
        offset_errors.append(plane_offset_mm(plane, truth))
        baseline_errors.append(plane_angle_deg(axes_plane(volume), truth))
        # The plane passes through the head centre it reports and its normal points right.
        assert plane.normal[0] > 0
        assert abs(plane.signed_distance(plane.point)[0]) < 1e-9
    assert np.median(angle_errors) <= 0.5 and max(angle_errors) <= 1.5, angle_errors
    assert np.median(offset_errors) <= 0.5 and max(offset_errors) <= 1.5, offset_errors
    # The random tilts are several degrees; the image-axes baseline is off by as much.
    assert min(baseline_errors) > 2.0 * max(angle_errors) and max(baseline_errors) > 5.0


def test_subject_t1_plane_moves_with_the_head(subject_t1):
    reference = estimate_msp(subject_t1)
    assert reference.confident, reference.message
    for angles, shift in poses(2, seed=3):
        volume, world = tilted_scan(subject_t1, angles, shift)
        truth = reference.moved(world)
        plane = estimate_msp(volume)
        assert plane_angle_deg(plane, truth) <= 1.5
        assert plane_offset_mm(plane, truth) <= 1.5


def test_one_sided_lesion_does_not_drag_the_plane(mni_small):
    array = mni_small.array.copy()
    xyz = mni_small.voxel_to_world(np.indices(array.shape).reshape(3, -1).T)
    # A large bright ellipsoid in the right hemisphere (about 50 cm^3).
    inside = (((xyz - [35.0, -10.0, 20.0]) / [22.0, 28.0, 20.0]) ** 2).sum(1) < 1.0
    array.reshape(-1)[inside] = 1.3 * array.max()
    lesioned = mni_small.with_array(array)
    healthy_score = estimate_msp(mni_small).symmetry_score
    (angles, shift), = poses(1, seed=11)
    volume, world = tilted_scan(lesioned, angles, shift)
    plane = estimate_msp(volume)
    truth = MNI_TRUTH.moved(world)
    assert plane_angle_deg(plane, truth) <= 0.5
    assert plane_offset_mm(plane, truth) <= 0.5
    assert plane.symmetry_score < healthy_score  # the asymmetry shows in the score


def test_storage_orientation_does_not_matter(subject_t1):
    ras = estimate_msp(subject_t1)
    for codes in ("LPS", "PSR"):
        other = estimate_msp(reorient_to(subject_t1, codes))
        assert plane_angle_deg(ras, other) < 0.2
        assert plane_offset_mm(other, ras) < 0.2


def test_not_a_volume_is_refused_whatever_the_fallback(subject_t1):
    flat = Image(np.ones((64, 64, 1), np.float32), np.eye(4), source="slice.nii")
    for on_failure in ("error", "axes"):
        with pytest.raises(InputError, match="slice.nii: the image is not a 3D volume"):
            estimate_msp(flat, on_failure=on_failure)
    with pytest.raises(ValueError, match="on_failure"):
        estimate_msp(subject_t1, on_failure="guess")


def test_no_head_errors_or_falls_back_to_axes():
    empty = Image(np.zeros((40, 40, 40), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), source="empty.nii")
    with pytest.raises(InputError, match="empty.nii: no head found"):
        estimate_msp(empty)
    plane = estimate_msp(empty, on_failure="axes")
    assert plane.method == "axes" and not plane.confident and "no head" in plane.message
    np.testing.assert_allclose(plane.normal, [1, 0, 0])


def test_a_fit_tilted_past_45_degrees_is_a_failure_not_a_plane(mni_small, monkeypatch):
    """A search that ends in a basin 50 degrees from left-right (seen on a phantom's T1) has
    found no mid-sagittal plane: refused, or the axes with the reason, before any use."""
    import SymmetryAwareCore.geometry.msp as msp

    monkeypatch.setattr(msp, "_search", lambda prep, max_tilt, wide=False: (np.array([40.0, 40.0, 0.0]), []))
    with pytest.raises(InputError, match="no mid-sagittal plane found: .* more than 45 degrees from left-right"):
        estimate_msp(mni_small)
    plane = estimate_msp(mni_small, on_failure="axes")
    assert plane.method == "axes" and not plane.confident and "45 degrees" in plane.message
    assert msp.not_sagittal([0.6, 0.6, 0.53]) and msp.not_sagittal([0, 0, 0]) and msp.not_sagittal([-0.9, 0.3, 0.3]) is None


def test_a_channel_that_fails_gives_way_to_the_next(mni_small, monkeypatch):
    """Each MRI contrast of a scan fails now and then on its own (seen on glioma phantoms: a
    T1 with a 43-56 degree wrong fit whose T1ce fits to 0.1 degree). A multi-channel scan is
    fitted on its first channel; only when that fit is not confident are the next channels
    fitted, and the first confident fit is used, with a warning naming both channels."""
    import SymmetryAwareCore.geometry.msp as msp

    volume, world = tilted_scan(mni_small, np.array([12.0, -8.0, 5.0]), np.array([4.0, -3.0, 2.0]))
    truth = MNI_TRUTH.moved(world)
    head = volume.array > 0
    lo, hi = np.percentile(volume.array[head], [2, 98])
    noise = np.random.default_rng(0).normal(0.0, 0.8 * (hi - lo), volume.array.shape)
    noisy = np.where(head, volume.array + noise, 0).astype(np.float32)
    clean = volume.array.astype(np.float32)
    fitted = []
    fit_channel = msp._fit_channel
    monkeypatch.setattr(msp, "_fit_channel", lambda image, channel, *a: fitted.append(channel) or fit_channel(image, channel, *a))

    scan = Image(np.stack([noisy, clean]), volume.affine, ("t1", "flair"), source="case_t1.nii.gz")
    plane = estimate_msp(scan)
    assert fitted == [0, 1]
    assert plane.confident and plane.channel == 1 and plane_angle_deg(plane, truth) < 1.0
    assert plane.to_dict()["channel"] == 1
    assert any("fitted on channel 2 (flair): the fit on channel 1 (t1) was not confident (" in w for w in plane.warnings)

    # A confident first channel: nothing else is fitted, the single-channel result exactly.
    fitted.clear()
    first = estimate_msp(Image(np.stack([clean, noisy]), volume.affine, ("t1", "flair")))
    assert fitted == [0] and first.channel == 0 and not first.warnings
    np.testing.assert_allclose(first.normal, estimate_msp(Image(clean, volume.affine)).normal, atol=1e-12)

    # No channel confident: the first channel's fit, flagged, as for a single-channel scan.
    fitted.clear()
    neither = estimate_msp(Image(np.stack([noisy, noisy[::-1].copy()]), volume.affine))
    assert fitted == [0, 1] and neither.channel == 0 and not neither.confident and "low symmetry" in neither.message


def test_degenerate_or_mismatched_mask(subject_t1):
    thin = np.zeros(subject_t1.spatial_shape, bool)
    thin[:, :, 12] = True  # one axial slice: no extent along z
    with pytest.raises(InputError, match="degenerate head mask"):
        estimate_msp(subject_t1, mask=thin)
    fallback = estimate_msp(subject_t1, mask=thin, on_failure="axes")
    assert fallback.method == "axes" and not fallback.confident
    # The fallback goes through the mask's centre of mass, along the image's LR axis.
    com = subject_t1.voxel_to_world(np.argwhere(thin).mean(0))[0]
    np.testing.assert_allclose(fallback.point, com, atol=1e-6)
    with pytest.raises(InputError, match="mask has shape"):
        estimate_msp(subject_t1, mask=np.ones((3, 3, 3)), on_failure="axes")


def test_noise_is_flagged_not_confident():
    rng = np.random.default_rng(0)
    noise = Image(rng.uniform(0, 1, (48, 48, 48)).astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    plane = estimate_msp(noise)
    assert not plane.confident
    assert plane.symmetry_score < 0.5 and "low symmetry" in plane.message and "not pinned down" in plane.message


def test_cli_writes_report_markups_and_aligned_scan(subject_t1, tmp_path, capsys):
    source = write_nifti(subject_t1, tmp_path / "t1.nii.gz")
    report, markups, aligned = tmp_path / "msp.json", tmp_path / "msp.mrk.json", tmp_path / "aligned.nii.gz"
    code = main(["msp", str(source), "--report", str(report), "--markups", str(markups), "--aligned", str(aligned), "--spacing", "2", "2", "2"])
    assert code == 0
    data = json.loads(report.read_text())
    direct = estimate_msp(subject_t1)
    np.testing.assert_allclose(data["plane"]["normal"], direct.normal, atol=1e-4)
    assert data["plane"]["coordinate_system"] == "RAS" and data["frame"]["shape"][0] % 2 == 0
    assert markups.exists() and aligned.exists()
    assert "normal (RAS)" in capsys.readouterr().out


def test_cli_several_channels_give_the_plane_segment_uses(mni_small, tmp_path, capsys):
    """`symmetryaware msp t1 flair`: the files are one case's channels; a first channel whose
    fit is not confident gives way to the next, as in `segment`, and says so."""
    volume, world = tilted_scan(mni_small, np.array([10.0, 6.0, -4.0]), np.array([3.0, 2.0, -2.0]))
    head = volume.array > 0
    lo, hi = np.percentile(volume.array[head], [2, 98])
    noise = np.random.default_rng(1).normal(0.0, 0.8 * (hi - lo), volume.array.shape)
    noisy = write_nifti(Image(np.where(head, volume.array + noise, 0).astype(np.float32), volume.affine), tmp_path / "case_t1.nii.gz")
    clean = write_nifti(volume, tmp_path / "case_flair.nii.gz")
    report = tmp_path / "msp.json"
    assert main(["msp", str(noisy), str(clean), "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["plane"]["channel"] == 1 and data["plane"]["confident"] and data["inputs"] == [str(noisy), str(clean)]
    assert plane_angle_deg(MidSagittalPlane(data["plane"]["normal"], data["plane"]["point"], 1.0, True, "x"), MNI_TRUTH.moved(world)) < 1.0
    assert "fitted on channel 2 (case_flair.nii.gz)" in capsys.readouterr().err
    assert main(["msp", str(clean), str(clean), "--report", str(tmp_path / "twice.json")]) == 2
    assert "a file is given twice" in capsys.readouterr().err and not (tmp_path / "twice.json").exists()


def test_cli_bias_correction_gives_the_plane_of_a_card_that_asks_for_n4(mni_small, tmp_path):
    """`msp --bias-correction`: the plane `segment` fits for a model whose card asks for N4
    (the same corrected scan, the same search), on a scan whose bias field brightens one side."""
    from SymmetryAwareCore.io.readers import read_image
    from SymmetryAwareCore.preprocessing import Preprocessing, prepare_image

    volume, world = tilted_scan(mni_small, np.array([6.0, -4.0, 3.0]), np.array([2.0, -1.0, 1.0]))
    x = np.linspace(-1.0, 1.0, volume.array.shape[0])[:, None, None]
    biased = write_nifti(Image((volume.array * np.exp(0.25 * x)).astype(np.float32), volume.affine), tmp_path / "case_t1.nii.gz")
    report = tmp_path / "msp.json"
    assert main(["msp", str(biased), "--bias-correction", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    spec = Preprocessing(spacing=(3, 3, 3), roi_size=(64, 64, 64), normalisation="zscore-nonzero", bias_correction="n4")
    prepared = prepare_image(read_image(biased, allow_channels=True), spec)
    assert data["bias_correction"] == "n4" and prepared.bias_correction == "n4"
    np.testing.assert_allclose(data["plane"]["normal"], prepared.plane.normal, atol=1e-9)
    np.testing.assert_allclose(data["plane"]["point"], prepared.plane.point, atol=1e-6)
    assert plane_angle_deg(prepared.plane, MNI_TRUTH.moved(world)) < 2.0


def test_cli_bad_input_exit_code_and_nothing_written(tmp_path, capsys):
    flat = write_nifti(Image(np.ones((30, 30, 1), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    report = tmp_path / "msp.json"
    code = main(["msp", str(flat), "--report", str(report)])
    assert code == 2
    err = capsys.readouterr().err
    assert "symmetryaware msp: error:" in err and "Traceback" not in err
    assert not report.exists()
