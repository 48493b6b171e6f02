"""Device choice, autocast settings and the out-of-memory fallback policy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.inference.device import (
    autocast,
    default_amp_dtype,
    is_out_of_memory,
    resolve_device,
    run_with_oom_fallback,
)
from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        assert auto.type == "mps"
    else:
        assert auto == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_cuda_is_a_user_error():
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_is_checked():
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(InputError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_amp_policy():
    assert default_amp_dtype(torch.device("cuda")) is torch.float16
    assert default_amp_dtype(torch.device("cpu")) is None
    assert default_amp_dtype(torch.device("cpu"), cpu_bfloat16=True) is torch.bfloat16
    assert default_amp_dtype(torch.device("mps")) is None
    with autocast(torch.device("cpu"), torch.bfloat16):
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype is torch.bfloat16
    with autocast(torch.device("cpu"), None):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype is torch.float32


def test_oom_detection():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


class FakeGPUJob:
    """Runs out of memory on 'cuda' unless the batch is at most ``fits``; records attempts."""

    def __init__(self, fits: int):
        self.fits = fits
        self.attempts = []

    def __call__(self, device, sw_batch_size):
        self.attempts.append((device.type, sw_batch_size))
        if device.type == "cuda" and sw_batch_size > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return f"ok on {device.type} x{sw_batch_size}"


def test_oom_halves_the_batch_then_succeeds(caplog):
    job = FakeGPUJob(fits=2)
    with caplog.at_level(logging.WARNING):
        result, record = run_with_oom_fallback(job, torch.device("cuda"), 8)
    assert job.attempts == [("cuda", 8), ("cuda", 4), ("cuda", 2)]
    assert result == "ok on cuda x2" and record.sw_batch_size == 2 and record.device.type == "cuda"
    assert len(record.events) == 2 and "sw_batch_size=8" in caplog.text and "sw_batch_size=4" in caplog.text


def test_oom_at_batch_one_moves_to_cpu():
    job = FakeGPUJob(fits=0)
    result, record = run_with_oom_fallback(job, torch.device("cuda"), 3)
    assert job.attempts == [("cuda", 3), ("cuda", 1), ("cpu", 1)]
    assert result == "ok on cpu x1" and record.device == torch.device("cpu")
    assert "retrying on cpu" in record.events[-1]


def test_oom_without_cpu_fallback_and_other_errors_are_raised():
    with pytest.raises(torch.OutOfMemoryError):
        run_with_oom_fallback(FakeGPUJob(fits=0), torch.device("cuda"), 2, cpu_fallback=False)

    def broken(device, sw_batch_size):
        raise RuntimeError("weights do not match the model")

    with pytest.raises(RuntimeError, match="weights"):
        run_with_oom_fallback(broken, torch.device("cuda"), 4)


def test_oom_fallback_drives_the_engine():
    """A model whose features allocation 'fails' for big batches: the engine still finishes."""

    class Model(torch.nn.Module):
        def forward_features(self, x):
            if x.shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return [x]

        def forward_head(self, features, features_counterpart, return_attention=False):
            return torch.cat([features[0], features_counterpart[0]], dim=1)

    volume = np.random.default_rng(0).standard_normal((1, 20, 16, 16)).astype(np.float32)
    model = Model()

    def job(device, sw_batch_size):
        # The fake device 'cuda' stands for the accelerator; the engine itself runs on CPU.
        return mirror_paired_sliding_window(volume, model.to("cpu"), (16, 16, 16), 0.5, sw_batch_size)

    result, record = run_with_oom_fallback(job, torch.device("cuda"), 4)
    assert record.sw_batch_size == 1 and record.device.type == "cuda"
    # Channel 1 is the counterpart: on the input grid, the flipped input.
    torch.testing.assert_close(result.logits[1], torch.from_numpy(volume[0, ::-1].copy()))
