"""Process-group set-up that works under torchrun and as a plain ``python`` process.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them (or with a world of
one) the run is a single process and no process group is created, so nothing crashes for
want of torchrun's environment (a fault of the authors' scripts). The backend is ``nccl``
on CUDA and ``gloo`` on CPU.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist

from SymmetryAwareCore.errors import InputError

__all__ = ["DistEnv", "init_distributed", "shutdown_distributed", "seed_everything", "rng_state", "set_rng_state", "gather_objects"]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"train.device={spec} but no CUDA device is available")
        return torch.device("cuda", local_rank if spec == "cuda" else int(spec.split(":")[1]))
    raise InputError(f"train.device must be auto, cpu or cuda, got {spec!r}")


def init_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's environment (if any), pick the device and start the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if world <= 1:
        return DistEnv(0, 0, 1, dev, "")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistEnv(rank, local_rank, world, dev, backend)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        # Every rank reaches this point before any tears gloo down: a rank that destroyed its
        # group while the other still had a collective in flight aborted the other at exit
        # ("terminate called without an active exception"), seen once in CI after an early stop.
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch (all devices) with a per-rank seed derived from ``seed``.

    Ranks get different streams (dropout, masking), yet each is reproducible.
    """
    derived = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)
    return derived


def rng_state() -> Dict[str, Any]:
    """This process's RNG states as tensors, lists and numbers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_objects(obj: Any, env: DistEnv) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (just ``[obj]`` single-process)."""
    if not env.distributed:
        return [obj]
    out: List[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
