"""The pipeline's entry to the engine: settings, eval mode, precision, out-of-memory retries."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from SymmetryAwareCore.inference.engine import InferenceSettings, run_paired_inference


class PickyModel(torch.nn.Module):
    """Runs out of memory for encoder batches above ``fits``; logits = window - counterpart."""

    def __init__(self, fits):
        super().__init__()
        self.fits = fits
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.modes = []

    def forward_features(self, x):
        self.modes.append(self.training)
        if x.shape[0] > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return [x * self.scale]

    def forward_head(self, features, features_counterpart, return_attention=False):
        return features[0] - features_counterpart[0]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="amp"):
        InferenceSettings(amp="half")
    with pytest.raises(ValueError, match="overlap"):
        InferenceSettings(overlap=1.5)
    with pytest.raises(ValueError, match="mode"):
        InferenceSettings(mode="mean")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert InferenceSettings().amp_dtype(cuda) is torch.float16
    assert InferenceSettings().amp_dtype(cpu) is None
    assert InferenceSettings(amp="float16").amp_dtype(cpu) is None
    assert InferenceSettings(amp="bfloat16").amp_dtype(cpu) is torch.bfloat16
    assert InferenceSettings(amp="off").amp_dtype(cuda) is None


def test_retries_with_smaller_batches_in_eval_mode(caplog):
    volume = np.random.default_rng(0).standard_normal((1, 40, 20, 16)).astype(np.float32)
    model = PickyModel(fits=1)
    model.train()
    settings = InferenceSettings(roi_size=(16, 16, 16), overlap=0.5, sw_batch_size=4, device="cpu")
    with caplog.at_level(logging.WARNING):
        result, fallback = run_paired_inference(volume, model, settings)
    assert fallback.sw_batch_size == 1 and fallback.device == torch.device("cpu") and len(fallback.events) == 2
    assert "out of memory on cpu with sw_batch_size=4" in caplog.text
    assert not any(model.modes) and model.training  # eval during the run, restored after
    torch.testing.assert_close(result.logits[0], torch.from_numpy(volume[0] - volume[0, ::-1]))


def test_out_of_memory_at_batch_one_on_cpu_is_raised():
    settings = InferenceSettings(roi_size=(16, 16, 16), sw_batch_size=2, device="cpu")
    with pytest.raises(torch.OutOfMemoryError):
        run_paired_inference(np.zeros((1, 16, 16, 16), np.float32), PickyModel(fits=0), settings)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_float16():
    volume = np.random.default_rng(0).standard_normal((1, 40, 20, 16)).astype(np.float32)
    settings = InferenceSettings(roi_size=(16, 16, 16), sw_batch_size=4, device="cuda")
    result, fallback = run_paired_inference(volume, PickyModel(fits=8), settings)
    assert fallback.device.type == "cuda" and result.logits.device.type == "cpu"
    torch.testing.assert_close(result.logits[0], torch.from_numpy(volume[0] - volume[0, ::-1]), atol=1e-2, rtol=1e-2)


def test_fused_window_attention_matches_the_explicit_path_and_is_restored():
    """MONAI's fused Swin attention gives the explicit path's logits; flags come back as they were.

    64^3 gives a 32^3 token map at stage 1, larger than the 7^3 window, so shifted windows
    and their masks are exercised.
    """
    from SymmetryAwareCore.inference.engine import fused_window_attention
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR

    torch.manual_seed(0)
    net = SASwinUNETR(in_channels=2, out_channels=3, feature_size=12, use_saca=True).eval()
    x, c = torch.randn(1, 2, 64, 64, 64), torch.randn(1, 2, 64, 64, 64)
    flags = [m for m in net.modules() if hasattr(m, "use_flash_attention")]
    assert len(flags) == 8 and not any(m.use_flash_attention for m in flags)  # 4 stages x 2 blocks
    with torch.no_grad():
        explicit = net(x, c)
        with fused_window_attention(net) as switched:
            assert switched == 8 and all(m.use_flash_attention for m in flags)
            fused = net(x, c)
    assert not any(m.use_flash_attention for m in flags)
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-4)
