"""The training loop, generic over a task.

A *task* knows the model, the data and the loss; the engine knows everything else:
DistributedDataParallel, the sampler and data order, mixed precision, gradient
accumulation, the warm-up + cosine schedule, seeds, atomic checkpoints, ``--resume``,
TensorBoard, the progress line and the end-of-run summary. Any object with these members
is a task (see :class:`Task`)::

    build_model() -> nn.Module
    train_dataset() -> Dataset     # map-style; __getitem__ receives (epoch, index)
    loss(model, batch) -> {"loss": total, "other": ...}   # scalar tensors
    describe_model() -> {"name": ..., "kwargs": {...}}     # optional: for the model card

Datasets receive ``(epoch, index)`` rather than ``index`` so that all randomness of a sample
(crop place, augmentation) can be derived from ``(seed, epoch, index)``: the data is then
the same whatever the number of workers, and a resumed run sees exactly the samples an
uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Protocol, Union

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path

from .checkpoint import LAST_NAME, load_checkpoint, save_checkpoint, unwrap
from .config import RunConfig, config_to_dict, save_config
from .distributed import DistEnv, gather_objects, init_distributed, rng_state, seed_everything, set_rng_state
from .modelcard import write_model_card
from .progress import Progress, format_seconds
from .schedule import WarmupCosine

__all__ = ["Task", "EpochSampler", "TrainResult", "train", "collate"]


class Task(Protocol):
    def build_model(self) -> nn.Module: ...

    def train_dataset(self) -> Dataset: ...

    def loss(self, model: nn.Module, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]: ...


class EpochSampler(DistributedSampler):
    """A DistributedSampler yielding ``(epoch, index)`` that can start part-way into an epoch.

    ``skip`` indices of this rank's share are dropped once, at the next iteration: that is how
    a resumed run continues the interrupted epoch's order instead of starting it again.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator:
        indices = list(super().__iter__())[self.skip :]
        self.skip = 0
        return iter([(self.epoch, i) for i in indices])


def collate(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack arrays and numbers into tensors; keep strings and other values as lists."""
    from torch.utils.data import default_collate

    out: Dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        try:
            out[key] = default_collate(values)
        except (TypeError, RuntimeError):
            out[key] = values
    return out


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    finished: bool
    seconds: float
    last_losses: Dict[str, float] = field(default_factory=dict)
    checkpoint: Optional[Path] = None
    model_card: Optional[Path] = None


def _autocast(env: DistEnv, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=env.device.type, dtype=dtype)


def _check_precision(precision: str, env: DistEnv) -> None:
    if precision not in ("fp32", "bf16", "fp16"):
        raise InputError(f"train.precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and env.device.type != "cuda":
        raise InputError("train.precision=fp16 needs CUDA (use bf16 or fp32 on CPU)")


def _to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra ("train")
        print("symmetryaware-train: tensorboard is not installed; no TensorBoard logs", file=sys.stderr)
        return None
    return SummaryWriter(log_dir=str(folder))


def train(config: RunConfig, task: Task, resume: Union[bool, str, Path] = False,
          env: Optional[DistEnv] = None) -> TrainResult:
    """Run (or resume) training of ``task`` as configured; returns where it stopped.

    ``resume``: False starts afresh (refusing a folder that already holds a checkpoint),
    True continues from ``<output_dir>/checkpoints/last.pt``, a path continues from that file.
    Call once per process (under torchrun, every rank calls it).
    """
    t = config.train
    env = env or init_distributed(t.device)
    _check_precision(t.precision, env)
    if t.steps <= 0 or t.accumulate <= 0 or t.checkpoint_every <= 0:
        raise InputError("train.steps, train.accumulate and train.checkpoint_every must be positive")
    # Deterministic mode is process-wide in torch: restore the caller's setting afterwards.
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        return _train(config, task, resume, env)
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]


def _train(config: RunConfig, task: Task, resume: Union[bool, str, Path], env: DistEnv) -> TrainResult:
    t = config.train
    out = Path(t.output_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / LAST_NAME
    if not resume and last.exists():
        raise InputError("holds a checkpoint already: pass --resume to continue it, or choose another train.output_dir", out)
    resume_from = None if not resume else (last if resume is True else Path(resume))
    if resume_from is not None and not resume_from.is_file():
        raise InputError("no checkpoint to resume from", resume_from)

    seed_everything(t.seed, env.rank)
    model = task.build_model().to(env.device)
    dataset = task.train_dataset()
    sampler = EpochSampler(dataset, env.world_size, env.rank, t.seed)
    batch_size = config.data.batch_size
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=config.data.num_workers,
                        collate_fn=collate, drop_last=True, pin_memory=env.device.type == "cuda",
                        persistent_workers=False,
                        # Its own generator: creating an epoch's iterator must not draw from the
                        # global torch RNG, or a resumed run's dropout stream would shift.
                        generator=torch.Generator().manual_seed(t.seed))
    per_epoch = len(loader)
    if per_epoch == 0:
        raise InputError(f"{len(dataset)} training case(s) are too few for batch size {batch_size} on {env.world_size} process(es)")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.optim.lr,
                                  weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(config.optim.warmup_steps, t.steps, config.optim.min_lr_ratio))
    scaler = torch.amp.GradScaler(env.device.type, enabled=t.precision == "fp16")

    step = 0
    if resume_from is not None:
        # On the CPU: RNG states must be CPU byte tensors; load_state_dict moves the rest.
        state = load_checkpoint(resume_from, map_location="cpu")
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        ranks = state.get("rng") or []
        if len(ranks) == env.world_size:
            set_rng_state(ranks[env.rank])
        else:  # another world size: the data order is recomputed, the random streams reseeded
            seed_everything(t.seed + step, env.rank)

    if env.distributed:
        ids = [env.local_rank] if env.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                    find_unused_parameters=t.find_unused_parameters)

    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    writer = _tensorboard(out / "tensorboard") if env.is_main else None
    progress = Progress(t.steps, start=step, every=t.log_every, enabled=env.is_main)

    micro = step * t.accumulate
    epoch, position = divmod(micro, per_epoch)
    sampler.set_epoch(epoch)
    sampler.skip = position * batch_size
    model.train()
    sums: Dict[str, float] = {}
    last_losses: Dict[str, float] = {}
    t0 = time.perf_counter()
    saved: Optional[Path] = None
    stopped = False
    in_step = 0
    while step < t.steps and not stopped:
        for batch in loader:
            batch = _to_device(batch, env.device)
            in_step += 1
            sync = in_step == t.accumulate
            # Gradients are all-reduced only on the last micro-batch of an accumulation.
            ctx = model.no_sync() if (env.distributed and not sync) else contextlib.nullcontext()
            with ctx:
                with _autocast(env, t.precision):
                    losses = task.loss(model, batch)
                total = losses["loss"].float() / t.accumulate
                scaler.scale(total).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / t.accumulate
            if not sync:
                continue
            in_step = 0
            if config.optim.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            last_losses, sums = sums, {}
            lr = optimizer.param_groups[0]["lr"]
            if writer is not None and (step % t.log_every == 0 or step == t.steps):
                for k, v in last_losses.items():
                    writer.add_scalar(f"train/{k}", v, step)
                writer.add_scalar("train/lr", lr, step)
            progress.update(step, last_losses, lr)
            if step % t.checkpoint_every == 0 or step == t.steps:
                saved = _checkpoint(ckpt_dir, model, optimizer, scheduler, scaler, step, per_epoch, t.accumulate, config, env)
            if t.stop_after_steps and step >= t.stop_after_steps and step < t.steps:
                stopped = True  # rehearse a kill: no final checkpoint, no model card
                break
            if step >= t.steps:
                break
        else:
            sampler.set_epoch(sampler.epoch + 1)
    progress.close()
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t0
    card = None
    if not stopped and env.is_main:
        card = write_model_card(unwrap(model), task, config, out / "model")
        _summary(out, config, step, seconds, last_losses, saved, card, env)
    return TrainResult(out, step, not stopped, seconds, last_losses, saved, card)


def _checkpoint(folder: Path, model, optimizer, scheduler, scaler, step: int, per_epoch: int, accumulate: int,
                config: RunConfig, env: DistEnv) -> Optional[Path]:
    # Every rank's RNG state is gathered so that each rank resumes its own stream.
    states = gather_objects(rng_state(), env)
    if not env.is_main:
        return None
    epoch, position = divmod(step * accumulate, per_epoch)
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "epoch": epoch,
        "position": position,
        "world_size": env.world_size,
        "rng": states,
        "config": config_to_dict(config),
    }
    return save_checkpoint(folder / LAST_NAME, state)


def _summary(out: Path, config: RunConfig, step: int, seconds: float, losses: Dict[str, float],
             checkpoint: Optional[Path], card: Optional[Path], env: DistEnv) -> None:
    summary = {
        "steps": step,
        "seconds": round(seconds, 3),
        "final_losses": losses,
        "world_size": env.world_size,
        "device": str(env.device),
        "precision": config.train.precision,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "model_card": str(card) if card else None,
        "torch": torch.__version__,
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    shown = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
    print(f"symmetryaware-train: {step} steps in {format_seconds(seconds)} on {env.world_size} x {env.device}; "
          f"final {shown}; run folder {out}", file=sys.stderr)
