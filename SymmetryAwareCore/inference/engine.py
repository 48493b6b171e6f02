"""One call for the pipeline: settings in, blended logits out, on whatever device copes.

:class:`InferenceSettings` is the typed parameter pack the command line, the Slicer
module and batch runs fill in; :func:`run_paired_inference` resolves the device and the
precision, runs :func:`.sliding_window.mirror_paired_sliding_window` and, when memory
runs out, retries as :func:`.device.run_with_oom_fallback` says.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch

from .device import OOMFallback, default_amp_dtype, resolve_device, run_with_oom_fallback
from .sliding_window import PairedResult, mirror_paired_sliding_window

__all__ = ["InferenceSettings", "run_paired_inference", "fused_window_attention"]

_AMP_CHOICES = {"auto": None, "off": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class InferenceSettings:
    """How to run mirror-paired sliding-window inference.

    Attributes:
        roi_size: window ``(rx, ry, rz)`` in voxels, as the model was trained.
        overlap: fraction shared by neighbouring windows, in ``[0, 1)``.
        sw_batch_size: crops per encoder call (halved automatically on out-of-memory).
        mode: ``"gaussian"`` or ``"constant"`` blending.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        amp: ``"auto"`` (float16 on CUDA, full precision elsewhere), ``"off"``,
            ``"float16"`` (accelerators only: full precision once on the CPU) or
            ``"bfloat16"``.
        tta_flip: average with the left-right flipped prediction (no extra encoder work).
        return_attention: collect the attention of the model's finest SACA stage
            (``PairedResult.attention_windows``) and build the mirror-focus map
            (:mod:`.attention_maps`).
        cpu_fallback: after a batch of 1 runs out of accelerator memory, finish on the CPU.
    """

    roi_size: Sequence[int] = (96, 96, 96)
    overlap: float = 0.5
    sw_batch_size: int = 1
    mode: str = "gaussian"
    device: str = "auto"
    amp: str = "auto"
    tta_flip: bool = False
    return_attention: bool = False
    cpu_fallback: bool = True

    def __post_init__(self) -> None:
        if self.amp not in _AMP_CHOICES:
            raise ValueError(f"amp must be one of {sorted(_AMP_CHOICES)}, got {self.amp!r}")
        if self.mode not in ("gaussian", "constant"):
            raise ValueError(f"mode must be 'gaussian' or 'constant', got {self.mode!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be at least 1, got {self.sw_batch_size}")

    def amp_dtype(self, device: torch.device) -> Optional[torch.dtype]:
        """The autocast dtype on ``device`` (``"auto"`` follows :func:`.device.default_amp_dtype`)."""
        if self.amp == "auto":
            return default_amp_dtype(device)
        if self.amp == "float16" and device.type == "cpu":
            # CPU float16 kernels are few and slow; a CPU fallback runs in full precision.
            return None
        return _AMP_CHOICES[self.amp]


@contextlib.contextmanager
def fused_window_attention(model: torch.nn.Module):
    """Switch MONAI's Swin window attention to its fused kernel for the duration.

    MONAI's ``WindowAttention`` has a ``use_flash_attention`` flag (off by default, as in
    MONAI's ``SwinUNETR``) that routes the attention through
    ``torch.nn.functional.scaled_dot_product_attention`` when no gradient is taken. The
    explicit path materialises every window's ``N x N`` scores several times (matmul, bias
    and mask additions, softmax), which is most of the encoder's time on the CPU; the
    fused kernel gives the same result to float rounding (tested) with the same weights.
    The flags are restored afterwards, so a model shared with training is left as it was.
    """
    switched = [m for m in model.modules() if isinstance(getattr(m, "use_flash_attention", None), bool)]
    before = [m.use_flash_attention for m in switched]
    for m in switched:
        m.use_flash_attention = True
    try:
        yield len(switched)
    finally:
        for m, flag in zip(switched, before):
            m.use_flash_attention = flag


def run_paired_inference(
    volume,
    model: torch.nn.Module,
    settings: InferenceSettings,
    progress: Optional[Callable[[int, int], None]] = None,
    logger: Optional[logging.Logger] = None,
) -> Tuple[PairedResult, OOMFallback]:
    """Segment an aligned ``(C, X, Y, Z)`` volume (X = left-right, MSP at its centre).

    The model is put in eval mode for the run (its mode is restored afterwards), its Swin
    attention runs fused (:func:`fused_window_attention`), and it is moved to the device of
    each attempt; it stays on the device of the attempt that succeeded.

    Returns:
        ``(result, fallback)``: the :class:`PairedResult` and where it finally ran.
    """
    device = resolve_device(settings.device)
    was_training = model.training
    model.eval()

    def attempt(dev: torch.device, sw_batch_size: int) -> PairedResult:
        model.to(dev)
        return mirror_paired_sliding_window(
            volume,
            model,
            settings.roi_size,
            overlap=settings.overlap,
            sw_batch_size=sw_batch_size,
            mode=settings.mode,
            device=dev,
            amp_dtype=settings.amp_dtype(dev),
            return_attention=settings.return_attention,
            progress=progress,
            tta_flip=settings.tta_flip,
        )

    try:
        with fused_window_attention(model):
            return run_with_oom_fallback(attempt, device, settings.sw_batch_size, settings.cpu_fallback, logger)
    finally:
        model.train(was_training)
