"""Benchmarks/pairing_benchmark.py (c): the window plan and the FLOP count behind the case ratio."""

from __future__ import annotations

import argparse

import pytest
import torch
from conftest import import_benchmark


@pytest.fixture(scope="module")
def bench():
    return import_benchmark("pairing_benchmark")


def _args(**kw):
    base = dict(in_channels=4, feature_size=12, roi=64, overlap=0.5, case_size=[240, 240, 155])
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("roi, overlap, monai, encoded", [(64, 0.5, 196, 224), (96, 0.5, 48, 48), (96, 0.25, 18, 24)])
def test_plan_of_a_brats_case_matches_docs_pairing_table(bench, roi, overlap, monai, encoded):
    plan = bench.case_plan(_args(roi=roi, overlap=overlap))
    assert plan["SwinUNETR"] == (monai, monai, monai)
    assert plan["SA-Swin mirror-pair"] == (monai, encoded, monai)


@pytest.mark.parametrize("case_size, monai", [([63, 64, 64], 1), ([95, 64, 64], 2), ([130, 64, 64], 4), ([64, 50, 70], 2)])
def test_monai_count_is_what_monai_runs(bench, case_size, monai):
    from monai.inferers import sliding_window_inference

    seen = [0]

    def predictor(x):
        seen[0] += x.shape[0]
        return x[:, :1]

    sliding_window_inference(torch.zeros((1, 1) + tuple(case_size)), (64, 64, 64), 1, predictor, overlap=0.5)
    assert bench.case_plan(_args(case_size=case_size))["SwinUNETR"][0] == seen[0] == monai


def test_plan_is_what_the_engine_runs(bench):
    from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window
    from SymmetryAwareCore.models import SASwinUNETR

    args = _args(case_size=[128, 64, 64])  # x: 3 windows, the middle one on the plane
    torch.manual_seed(0)
    net = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, pairing="mirror-pair").eval()
    with torch.inference_mode():
        result = mirror_paired_sliding_window(torch.randn(4, 128, 64, 64), net, (64, 64, 64), overlap=0.5,
                                              sw_batch_size=2, mode="gaussian")
    windows, encoded, heads = bench.case_plan(args)["SA-Swin mirror-pair"]
    assert (windows, encoded) == (result.n_windows, result.n_encoded) and encoded > windows == heads


def test_meta_count_equals_a_real_count_and_saca_only_adds(bench):
    from SymmetryAwareCore.models import SASwinUNETR

    torch.manual_seed(0)
    net = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, pairing="mirror-pair").eval()
    x = torch.randn(1, 4, 64, 64, 64)
    real = bench.window_flops(net.forward_features, x)
    meta = net.to("meta")
    assert bench.window_flops(meta.forward_features, torch.empty(1, 4, 64, 64, 64, device="meta")) == real > 1e9
    # The fused CPU attention kernel (the benchmark's setting) is counted like the unfused one.
    fused = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, pairing="mirror-pair").eval()
    for m in fused.modules():
        if isinstance(getattr(m, "use_flash_attention", None), bool):
            m.use_flash_attention = True
    assert bench.window_flops(fused.forward_features, x) == real
    networks = bench._networks(_args())
    flops = bench.case_flops(_args(), networks, {"SwinUNETR": (48, 48, 48), "SA-Swin mirror-pair": (48, 48, 48)})
    # Same windows and passes: SA-Swin's case differs by SACA alone, a small positive amount.
    assert 1.0 < flops["pair_case"] / flops["swin_case"] < 1.01
    assert flops["encoder"] + flops["pair_head"] > flops["swin_window"]
