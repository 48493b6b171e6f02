"""Where inference runs: device choice, mixed precision, and what to do when memory runs out.

Policy in one place, so that the command line, the Slicer module and batch runs behave
alike:

* :func:`resolve_device` turns ``"auto" | "cpu" | "cuda" | "cuda:1" | "mps"`` into a
  :class:`torch.device` (``auto``: CUDA, then Apple MPS, then CPU). Asking for a device
  this machine does not have is the user's mistake (:class:`InputError`).
* :func:`default_amp_dtype` says which reduced precision to use: float16 on CUDA
  (tensor cores, and SwinUNETR-style models are trained with it); none on CPU unless
  bfloat16 is asked for (it is slower than float32 on CPUs without AMX); none on MPS,
  whose autocast coverage still varies between torch releases.
* :func:`run_with_oom_fallback` retries a job that ran out of memory: half the window
  batch each time down to 1, then on the CPU. Each step is logged.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, TypeVar, Union

import torch

from ..errors import InputError

__all__ = [
    "resolve_device",
    "default_amp_dtype",
    "autocast",
    "is_out_of_memory",
    "OOMFallback",
    "run_with_oom_fallback",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
DeviceLike = Union[str, torch.device, None]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: DeviceLike = "auto") -> torch.device:
    """The :class:`torch.device` for ``spec``.

    Args:
        spec: ``"auto"`` (or None): CUDA if present, else MPS, else CPU; ``"cpu"``;
            ``"cuda"`` / ``"cuda:N"``; ``"mps"``; or a :class:`torch.device`.

    Raises:
        InputError: the name is not a device, or this machine does not have it.
    """
    if isinstance(spec, torch.device):
        text = str(spec)
    else:
        text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {text!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {text!r} was asked for but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(f"device {text!r} was asked for but only {count} CUDA device(s) exist")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise InputError(f"device {text!r} was asked for but Apple MPS is not available here")
        return device
    raise InputError(f"unsupported device {text!r}: use auto, cpu, cuda, cuda:N or mps")


def default_amp_dtype(device: torch.device, cpu_bfloat16: bool = False) -> Optional[torch.dtype]:
    """Reduced precision for ``device``: float16 on CUDA, optional bfloat16 on CPU, else None."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_bfloat16:
        return torch.bfloat16
    return None


def autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """A ``torch.autocast`` context for ``device`` in ``amp_dtype``; a no-op when None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def is_out_of_memory(error: BaseException) -> bool:
    """True for an out-of-memory error of CUDA, MPS or the CPU allocator."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    if isinstance(error, RuntimeError):
        text = str(error).lower()
        return "out of memory" in text or "can't allocate memory" in text
    return False


@dataclass
class OOMFallback:
    """What :func:`run_with_oom_fallback` ended up using.

    Attributes:
        device: the device of the attempt that succeeded.
        sw_batch_size: the window batch of that attempt.
        events: one line per failed attempt, in order (also logged as warnings).
    """

    device: torch.device
    sw_batch_size: int
    events: List[str] = field(default_factory=list)


def _release_cached_memory(device: torch.device) -> None:
    # Blocks freed by the failed attempt stay in torch's caching allocator until released.
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()


def run_with_oom_fallback(
    job: Callable[[torch.device, int], T],
    device: torch.device,
    sw_batch_size: int,
    cpu_fallback: bool = True,
    logger: Optional[logging.Logger] = None,
) -> Tuple[T, OOMFallback]:
    """Run ``job(device, sw_batch_size)``, retrying smaller or on the CPU when memory runs out.

    The policy: on an out-of-memory error, halve ``sw_batch_size`` (rounding down, never
    below 1) and retry on the same device; once a batch of 1 fails on an accelerator, move
    to the CPU with a batch of 1 (if ``cpu_fallback``). A batch of 1 that fails on the CPU,
    and any error that is not about memory, is raised as it is. ``job`` must place the
    model and data on the device it is given (a ``model.to(device)`` inside it).

    Returns:
        ``(result, OOMFallback)``: the job's result and where it finally ran.
    """
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}")
    logger = logger or log
    record = OOMFallback(device=torch.device(device), sw_batch_size=int(sw_batch_size))
    while True:
        try:
            return job(record.device, record.sw_batch_size), record
        except Exception as error:  # noqa: BLE001 - filtered just below
            if not is_out_of_memory(error):
                raise
            failed_on, failed_batch = record.device, record.sw_batch_size
            if failed_batch > 1:
                record.sw_batch_size = failed_batch // 2
            elif failed_on.type != "cpu" and cpu_fallback:
                record.device = torch.device("cpu")
            else:
                raise
        # Out of the except block, the error's traceback (and the tensors its frames hold)
        # is gone, so the cache release below can actually return that memory.
        _release_cached_memory(failed_on)
        event = (
            f"out of memory on {failed_on} with sw_batch_size={failed_batch}; "
            f"retrying on {record.device} with sw_batch_size={record.sw_batch_size}"
        )
        record.events.append(event)
        logger.warning(event)
