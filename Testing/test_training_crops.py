"""Mirror-paired crops: the counterpart is right, and every augmentation keeps it right.

The augmentation tests use a *coordinate volume*: channels 0-2 hold each voxel's own
(x, y, z) index (plus one, so zero padding is recognisable). After any crop and
augmentation, the patch voxel holding coordinates p and the counterpart voxel at the same
place, holding q, must satisfy q = (W - 1 - p_x, p_y, p_z): the mirror relation, checked
without trusting the code under test to say where the crop came from.
"""

from __future__ import annotations

import numpy as np
import pytest

from SymmetryAwareTraining.crops import AugmentParams, crop_pair, draw_augment, pad_to_roi, paired_crop

ROI = (8, 10, 10)


def _coordinate_volume(shape):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return np.stack(grids).astype(np.float32) + 1.0


def _check_mirror(sample, width, label_of=None):
    params = sample["params"]
    patch, counterpart = sample["image"].astype(np.float64), sample["counterpart"].astype(np.float64)
    if params.scale:  # undo the intensity change to read the coordinates back
        scale = np.asarray(params.scale).reshape(-1, 1, 1, 1)
        shift = np.asarray(params.shift).reshape(-1, 1, 1, 1)
        patch, counterpart = (patch - shift) / scale, (counterpart - shift) / scale
    p = np.rint(patch).astype(int) - 1
    q = np.rint(counterpart).astype(int) - 1
    real = (p >= 0).all(axis=0) & (q >= 0).all(axis=0)  # not padding
    assert real.any()
    np.testing.assert_array_equal(q[0][real], width - 1 - p[0][real])
    np.testing.assert_array_equal(q[1:, real], p[1:, real])
    if label_of is not None:
        np.testing.assert_array_equal(sample["label"][real], label_of(p[:, real]))


def _label_volume(shape):
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return ((x * 7 + y * 3 + z) % 5).astype(np.uint8)


def _label_of(p):
    return (p[0] * 7 + p[1] * 3 + p[2]) % 5


@pytest.mark.parametrize("params", [
    AugmentParams(),
    AugmentParams(flip_y=True),
    AugmentParams(flip_z=True),
    AugmentParams(rot90=1),
    AugmentParams(rot90=2),
    AugmentParams(rot90=3),
    AugmentParams(scale=(1.1, 0.9, 1.05), shift=(0.2, -0.1, 0.05)),
    AugmentParams(flip_lr=True),
    AugmentParams(flip_lr=True, flip_y=True, rot90=1, scale=(0.95, 1.1, 1.0), shift=(0.1, 0.0, -0.2)),
], ids=["none", "flip_y", "flip_z", "rot90", "rot180", "rot270", "intensity", "flip_lr", "all"])
def test_each_augmentation_keeps_the_mirror_relation(params):
    shape = (17, 13, 12)
    volume, label = _coordinate_volume(shape), _label_volume(shape)
    rng = np.random.default_rng(3)
    for _ in range(5):
        sample = paired_crop(volume, ROI, rng, label=label, params=params)
        _check_mirror(sample, shape[0], _label_of)


def test_random_draws_keep_the_mirror_relation():
    shape = (15, 14, 11)
    volume, label = _coordinate_volume(shape), _label_volume(shape)
    rng = np.random.default_rng(0)
    drawn = set()
    for _ in range(40):
        sample = paired_crop(volume, ROI, rng, label=label, pos_fraction=0.5, augment=True)
        drawn.add((sample["params"].flip_lr, sample["params"].rot90))
        _check_mirror(sample, shape[0], _label_of)
    assert len(drawn) >= 6  # the draws really varied


def test_quarter_turns_only_for_square_yz():
    rng = np.random.default_rng(0)
    turns = {draw_augment(rng, 1, (8, 8, 12)).rot90 for _ in range(50)}
    assert turns <= {0, 2}


@pytest.mark.parametrize("width", [5, 6])
def test_padding_is_symmetric_in_lr(width):
    """A volume narrower than the roi is padded equally on both sides (odd or even need)."""
    shape = (width, 12, 12)
    volume = _coordinate_volume(shape)
    padded, _ = pad_to_roi(volume, ROI)
    assert padded.shape[1] >= ROI[0] and (padded.shape[1] - width) % 2 == 0
    rng = np.random.default_rng(1)
    for _ in range(5):
        _check_mirror(paired_crop(volume, ROI, rng, augment=True), width)


def test_counterpart_on_a_real_brain(mni_t1):
    volume = mni_t1.array[::4, ::4, ::4][None]  # (1, 50, 59, 48), RAS, MSP-aligned template
    width = volume.shape[1]
    size = (16, 16, 16)
    for start in [(0, 5, 5), (17, 20, 10), (34, 40, 30), (25, 0, 0)]:
        patch, counterpart = crop_pair(volume, start, size)
        a, b, c = start
        for i, j, k in [(0, 0, 0), (3, 7, 11), (15, 15, 15), (8, 2, 9)]:
            assert patch[0, i, j, k] == volume[0, a + i, b + j, c + k]
            assert counterpart[0, i, j, k] == volume[0, width - 1 - (a + i), b + j, c + k]
    # The symmetric template: a patch and its counterpart look alike, unlike a shifted box.
    patch, counterpart = crop_pair(volume, (8, 20, 16), size)
    other = volume[:, 20:36, 20:36, 16:32]
    assert np.abs(patch - counterpart).mean() < 0.5 * np.abs(patch - other).mean()


def test_lr_flip_of_the_volume_swaps_patch_and_counterpart(mni_t1):
    volume = mni_t1.array[::4, ::4, ::4][None]
    start, size = (5, 10, 10), (16, 16, 16)
    patch, counterpart = crop_pair(volume, start, size)
    flipped_patch, flipped_counterpart = crop_pair(np.flip(volume, 1), start, size)
    np.testing.assert_array_equal(flipped_patch, counterpart)
    np.testing.assert_array_equal(flipped_counterpart, patch)
