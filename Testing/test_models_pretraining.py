"""Classifier, symmetry-aware head, pretext views and losses, zero-shot asymmetry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SymmetryAwareCore.geometry.mirror import extract_counterpart
from SymmetryAwareCore.models import SASwinClassifier, SASwinPretrainer, SymmetryAwarePretrainingLoss, make_pretext_view
from SymmetryAwareCore.models.losses import inpainting_loss, nt_xent_loss, symmetry_loss
from SymmetryAwareCore.models.pretext import random_block_mask, rotate_about_lr
from SymmetryAwareCore.models.symmetry_head import asymmetry_map, asymmetry_score

SMALL = dict(feature_size=12, depths=(1, 1, 1, 1))
SHAPE = (64, 32, 32)  # left-right first; Y == Z so quarter turns keep the shape


def _dead(module, names=None):
    return [
        n
        for n, p in module.named_parameters()
        if (names is None or n.startswith(names)) and (p.grad is None or not torch.any(p.grad != 0))
    ]


def test_classifier_pools_all_tokens_and_trains_every_parameter():
    torch.manual_seed(0)
    net = SASwinClassifier(1, 3, **SMALL)
    x, xc = torch.randn(1, 1, *SHAPE), torch.randn(1, 1, *SHAPE)
    f, fc = net.forward_features(x), net.forward_features(xc)
    logits, attn = net.forward_head(f, fc, return_attention=True)
    assert logits.shape == (1, 3) and attn.shape == (1, 24, 2, 2)
    pooled = net.pooled_tokens(f, fc)
    fused = net.saca["stage4"](f[5], fc[5])
    every_token = net.head_norm(fused.flatten(2).transpose(1, 2)).mean(dim=1)
    torch.testing.assert_close(pooled, every_token)
    assert not torch.allclose(pooled, net.head_norm(fused.flatten(2).transpose(1, 2))[:, 0])
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0.0, 1.0]])).backward()
    assert not _dead(net)


def test_multiscale_pooling_reads_every_stage_and_sees_a_local_change():
    torch.manual_seed(0)
    net = SASwinClassifier(1, 2, pooling="multiscale", **SMALL).eval()
    fs = SMALL["feature_size"]
    x = 0.1 * torch.randn(1, 1, *SHAPE)  # a quiet background, as brain tissue is in a CT window
    xc = x.flip(2)
    f, fc = net.forward_features(x), net.forward_features(xc)
    pooled = net.pooled_tokens(f, fc)
    assert pooled.shape == (1, 2 * (2 + 4 + 8 + 16) * fs) == (1, net.head_fc.in_features)
    # The stage-1 block (2 * fs channels) is [mean, max] of the layer-normalised 16^3-token grid.
    t1 = net.stage_norms[0](f[2].flatten(2).transpose(1, 2))
    torch.testing.assert_close(pooled[:, : 4 * fs], torch.cat([t1.mean(1), t1.amax(1)], dim=1))
    # The bottleneck block (last) comes after SACA, as with mean pooling.
    fused = net.head_norm(net.saca["stage4"](f[5], fc[5]).flatten(2).transpose(1, 2))
    torch.testing.assert_close(pooled[:, -32 * fs:], torch.cat([fused.mean(1), fused.amax(1)], dim=1))
    # A small bright blob (4^3 voxels of a 64 x 64 x 32 input) moves the max of the fine stages.
    blob = x.clone()
    blob[..., 20:24, 30:34, 10:14] += 4.0
    moved = net.pooled_tokens(net.forward_features(blob), net.forward_features(blob.flip(2))) - pooled
    assert float(moved[:, 2 * fs: 4 * fs].detach().abs().max()) > 0.1  # stage-1 max
    logits = net(x, xc)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0.0]])).backward()
    assert not _dead(net)
    with pytest.raises(ValueError, match="pooling"):
        SASwinClassifier(1, 2, pooling="max", **SMALL)


def test_classifier_bad_arguments():
    with pytest.raises(ValueError):
        SASwinClassifier(1, 0, feature_size=12)
    with pytest.raises(ValueError):
        SASwinClassifier(1, 2, feature_size=18)
    with pytest.raises(ValueError, match="x_counterpart"):
        SASwinClassifier(1, 2, **SMALL)(torch.randn(1, 1, *SHAPE))


def test_rotation_about_lr_commutes_with_the_mirror(mni_t1):
    # Real anatomy, 2 mm, cropped square in (Y, Z) so the whole volume can be turned too.
    vol = torch.from_numpy(np.ascontiguousarray(mni_t1.array[::2, 10:200:2, ::2]))  # (99, 95, 95)
    start, size = (6, 20, 20), (32, 48, 48)
    patch = vol[6:38, 20:68, 20:68][None, None]
    counterpart = extract_counterpart(vol, start, size)[None, None]
    for k in range(4):
        # Rotating the whole volume about the LR axis, then taking the mirror box, equals
        # rotating the counterpart: the mirror relation survives the rotation.
        rotated = rotate_about_lr(vol[None, None], k)[0, 0]
        box_start = (start[0],) + tuple(int(v) for v in _rotated_start(start, size, vol.shape, k))
        expected = extract_counterpart(rotated, box_start, size)[None, None]
        torch.testing.assert_close(rotate_about_lr(counterpart, k), expected)
        assert rotate_about_lr(patch, k)[0, 0].shape == (32, 48, 48)
        torch.testing.assert_close(rotate_about_lr(patch, k)[:, :, :, 0, 0], patch[:, :, :, *_corner(k)])
    with pytest.raises(ValueError):
        rotate_about_lr(torch.zeros(1, 1, 8, 8, 4), 1)


def _rotated_start(start, size, shape, k):
    """Start (y, z) of the box after rot90 by k in the (Y, Z) plane (counter-clockwise)."""
    y, z = start[1], start[2]
    ny, nz = shape[1], shape[2]
    for _ in range(k % 4):
        y, z, ny, nz = nz - z - size[2], y, nz, ny
    return y, z


def _corner(k):
    # Which (y, z) corner of the patch lands at (0, 0) after k quarter turns.
    return [(0, 0), (0, -1), (-1, -1), (-1, 0)][k]


def test_pretext_view_corrupts_patch_and_counterpart_alike():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, *SHAPE)
    view = make_pretext_view(x, x.clone(), mask_ratio=0.3, block_size=16, generator=g)
    assert view.mask.dtype == torch.bool and view.mask.shape == (2, 1, *SHAPE)
    assert view.mask.any() and not view.mask.all()
    # A symmetric pair stays symmetric after rotation and corruption.
    torch.testing.assert_close(view.image, view.counterpart)
    for b, k in enumerate(view.rotation.tolist()):
        torch.testing.assert_close(view.target[b : b + 1], rotate_about_lr(x[b : b + 1], k))
    kept = ~view.mask.expand_as(view.image)
    torch.testing.assert_close(view.image[kept], view.target[kept])
    with pytest.raises(ValueError):
        random_block_mask((1, 1, 64, 32, 32), block_size=24)


def test_losses_behave_as_specified():
    z = torch.randn(4, 16)
    healthy, patient = torch.ones(4), torch.zeros(4)
    assert symmetry_loss(z, z, healthy) < 1e-3 < symmetry_loss(z, z, patient)
    assert symmetry_loss(z, -z, patient) < 1e-3 < symmetry_loss(z, -z, healthy)
    mixed = torch.tensor([1.0, -1.0, -1.0, 1.0])  # unknown scans are left out
    torch.testing.assert_close(symmetry_loss(z, -z, mixed), symmetry_loss(z[[0, 3]], -z[[0, 3]], healthy[:2]))
    assert symmetry_loss(z, z, -torch.ones(4)) == 0
    with pytest.raises(ValueError):
        symmetry_loss(z, z, torch.full((4,), 2.0))
    torch.testing.assert_close(asymmetry_score(z, z), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(asymmetry_score(z, -z), torch.ones(4))
    # NT-Xent: aligned views beat shuffled ones; one sample has no negatives.
    z2 = z + 0.01 * torch.randn_like(z)
    assert nt_xent_loss(z, z2) < nt_xent_loss(z, z2.roll(1, 0))
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent_loss(z[:1], z2[:1])
    # Inpainting: only corrupted voxels count.
    target = torch.zeros(1, 1, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., :2] = True
    rec = torch.zeros_like(target)
    rec[..., 2:] = 5.0
    assert inpainting_loss(rec, target, mask) == 0
    rec[..., 0] = 1.0
    torch.testing.assert_close(inpainting_loss(rec, target, mask), torch.tensor(0.5))
    with pytest.raises(ValueError):
        SymmetryAwarePretrainingLoss(symmetry_weight=-1)


def test_pretrainer_every_loss_reaches_its_parameters():
    torch.manual_seed(0)
    net = SASwinPretrainer(1, projection_size=16, contrastive_size=16, **SMALL)
    g = torch.Generator().manual_seed(0)
    # Two bottleneck tokens at least: with one, SACA's softmax is 1 whatever the query.
    x = torch.randn(2, 1, *SHAPE)
    xc = torch.randn(2, 1, *SHAPE)
    v1, v2 = make_pretext_view(x, xc, generator=g), make_pretext_view(x, xc, generator=g)
    out1, out2 = net(v1.image, v1.counterpart), net(v2.image, v2.counterpart)
    assert out1["rotation"].shape == (2, 4)
    assert out1["reconstruction"].shape == (2, 1, *SHAPE)
    assert out1["token_embedding"].shape == (2, 16, 2, 1, 1)
    losses = SymmetryAwarePretrainingLoss()(out1, out2, v1, v2, healthy=torch.tensor([1, 0]))
    assert set(losses) == {"rotation", "contrastive", "inpainting", "symmetry", "total"}
    expected_total = losses["rotation"] + losses["contrastive"] + losses["inpainting"] + 0.5 * losses["symmetry"]
    torch.testing.assert_close(losses["total"], expected_total)
    params = dict(net.named_parameters())
    # Which parameters each task must train (the encoder always).
    owners = {
        "rotation": ("swinViT", "saca", "head.norm", "head.rotation"),
        "contrastive": ("swinViT", "saca", "head.norm", "head.contrastive"),
        "inpainting": ("swinViT", "saca", "head.reconstruction"),
        "symmetry": ("swinViT", "head.symmetry_norm", "head.projector"),
    }
    reached = set()
    for name, prefixes in owners.items():
        grads = torch.autograd.grad(losses[name], list(params.values()), retain_graph=True, allow_unused=True)
        alive = {n for n, gr in zip(params, grads) if gr is not None and torch.any(gr != 0)}
        dead = [n for n in params if n.startswith(prefixes) and n not in alive]
        assert not dead, f"{name} loss does not reach {dead[:5]}"
        reached |= alive
    assert reached == set(params), f"no loss reaches {sorted(set(params) - reached)[:5]}"


def test_zero_shot_asymmetry_is_zero_on_symmetric_pairs_and_positive_otherwise():
    torch.manual_seed(0)
    net = SASwinPretrainer(1, **SMALL).eval()
    x = torch.randn(1, 1, *SHAPE)
    score, amap = net.asymmetry(x, x.clone())
    assert amap.shape == (1, 2, 1, 1)
    torch.testing.assert_close(score, torch.zeros(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(amap, torch.zeros_like(amap), atol=1e-5, rtol=0)
    lesion = x.clone()
    lesion[:, :, 40:56, 8:24, 8:24] += 3.0
    score, amap = net.asymmetry(lesion, x)
    assert score.item() > 1e-4 and amap.min().item() >= 0 and amap.max().item() <= 1
    with pytest.raises(ValueError):
        asymmetry_map(torch.zeros(1, 4, 2, 2, 2), torch.zeros(1, 4, 2, 2, 1))
