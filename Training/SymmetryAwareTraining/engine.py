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
    validation_entries() -> [datalist entries]             # optional: the held-out cases
    validate(model, env) -> validation.ValidationResult    # optional: scores on them
    supervised_per_item: int                               # optional (1): supervised crops per item

With ``validation.every`` > 0 the engine validates every that many steps and after the last
(the task's ``validate``; segmentation: :func:`.validation.validate_segmentation`), keeps the
best weights by ``validation.metric`` in ``checkpoints/best.pt``, stops early after
``validation.patience`` validations without improvement, and publishes the best (or last,
``validation.publish``) weights in the model card with the reason recorded. Checkpoints keep
``last.pt`` and ``previous.pt``; ``--resume`` falls back to the previous one when the last is
unreadable. Throughput (supervised samples per second per device, validation excluded) is in the
progress line and the summary: ``data.batch_size`` items a micro-batch, each item
``supervised_per_item`` supervised crops (2 for a mirror pair, see
:class:`.tasks.SegmentationTask`).

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

from .checkpoint import BEST_NAME, LAST_NAME, PREVIOUS_NAME, load_checkpoint, load_latest, save_checkpoint, save_rotating, unwrap
from .config import RunConfig, check_config, config_to_dict, save_config
from .distributed import DistEnv, gather_objects, init_distributed, rng_state, seed_everything, set_rng_state
from .modelcard import write_model_card
from .progress import Progress, format_seconds
from .schedule import WarmupCosine
from .validation import BestTracker

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
    samples_per_second: float = 0.0
    """Supervised training samples per second per device (validation and checkpoint time
    excluded; a mirror pair counts 2)."""
    best: Optional[Dict[str, Any]] = None
    """The best validation: step, metric, value (None without validation)."""
    stopped_early: bool = False


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
    check_config(config)
    env = env or init_distributed(t.device)
    _check_precision(t.precision, env)
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
    if not resume and (last.exists() or (ckpt_dir / PREVIOUS_NAME).exists()):
        raise InputError("holds a checkpoint already: pass --resume to continue it, or choose another train.output_dir", out)
    resume_from = None if not resume else (last if resume is True else Path(resume))
    if resume is True and not last.is_file() and (ckpt_dir / PREVIOUS_NAME).is_file():
        resume_from = ckpt_dir / PREVIOUS_NAME  # killed between the rotation and the write
    if resume_from is not None and not resume_from.is_file():
        raise InputError("no checkpoint to resume from", resume_from)
    vcfg = config.validation
    validating = vcfg.every > 0
    held_out: List[Any] = []
    if validating:
        if not callable(getattr(task, "validate", None)):
            raise InputError(f"validation.every={vcfg.every}, but {type(task).__name__} has no validation "
                             "(segmentation fine-tuning has); set validation.every=0")
        held_out = list(task.validation_entries()) if hasattr(task, "validation_entries") else []
    tracker = BestTracker(vcfg.metric, vcfg.patience, vcfg.min_delta)

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
        if resume is True and resume_from == last:
            state, resume_from = load_latest(ckpt_dir, log=None if env.is_main else (lambda _: None))
        else:
            state = load_checkpoint(resume_from, map_location="cpu")
        tracker.load_state_dict(state.get("validation") or {})
        unwrap(model).load_state_dict(state["model"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as error:
            # The optimizer holds only trainable parameters; a checkpoint from a network whose
            # frozen set differs (e.g. a lesion classifier saved before stages 2-4 were frozen)
            # has other parameter groups, and its moments cannot be mapped onto these.
            raise InputError(f"{resume_from}: its optimizer state does not fit this network's trainable "
                             f"parameters ({error}); start a new run (or initialise from its weights)") from None
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
    # Supervised samples, per device: a mirror pair is one item and two supervised crops.
    supervised_per_item = int(getattr(task, "supervised_per_item", 1))
    samples_per_step = config.data.batch_size * t.accumulate * supervised_per_item
    progress = Progress(t.steps, start=step, every=t.log_every, enabled=env.is_main, samples_per_step=samples_per_step)
    start_step = step

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
    stopped_early = False
    paused = 0.0  # seconds spent validating and checkpointing: not training throughput
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
            pause0 = time.perf_counter()
            if validating and (step % vcfg.every == 0 or step == t.steps):
                result = task.validate(unwrap(model), env)
                if tracker.update(step, result.metrics[vcfg.metric]) and env.is_main:
                    save_checkpoint(ckpt_dir / BEST_NAME, {"model": unwrap(model).state_dict(), "step": step,
                                                          "metric": vcfg.metric, "value": result.metrics[vcfg.metric]})
                if env.is_main:
                    _log_validation(out, writer, step, result, tracker)
                stopped_early = tracker.should_stop and step < t.steps
            if step % t.checkpoint_every == 0 or step == t.steps or stopped_early:
                saved = _checkpoint(ckpt_dir, model, optimizer, scheduler, scaler, step, per_epoch, t.accumulate, config,
                                    env, tracker)
            paused += time.perf_counter() - pause0
            progress.pause(time.perf_counter() - pause0)
            if stopped_early:
                if env.is_main:
                    print(f"symmetryaware-train: early stop at step {step}: no {vcfg.metric} improvement in "
                          f"{tracker.since_best} validation(s) (best {tracker.best_value:.4g} at step {tracker.best_step})",
                          file=sys.stderr)
                break
            if t.stop_after_steps and step >= t.stop_after_steps and step < t.steps:
                stopped = True  # rehearse a kill: no final checkpoint, no model card
                break
            if step >= t.steps:
                break
        else:
            sampler.set_epoch(sampler.epoch + 1)
        if stopped_early:
            break
    progress.close()
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t0
    train_seconds = max(seconds - paused, 1e-9)
    rate = (step - start_step) * samples_per_step / train_seconds if step > start_step else 0.0
    best = None
    if tracker.best_step is not None:
        best = {"step": tracker.best_step, "metric": vcfg.metric, "value": tracker.best_value}
    card = None
    if not stopped and env.is_main:
        selection = _select_weights(unwrap(model), ckpt_dir, config, tracker, held_out, step, stopped_early)
        card = write_model_card(unwrap(model), task, config, out / "model", checkpoint=selection)
        _summary(out, config, step, seconds, last_losses, saved, card, env,
                 {"train_seconds": round(train_seconds, 3), "validation_and_checkpoint_seconds": round(paused, 3),
                  "samples_per_second_per_device": round(rate, 4),
                  "supervised_samples_per_step": samples_per_step * env.world_size,
                  "samples_per_second": round(rate * env.world_size, 4),
                  "best": best, "stopped_early": stopped_early, "weights": selection})
    return TrainResult(out, step, not stopped, seconds, last_losses, saved, card, rate, best, stopped_early)


def _select_weights(model: nn.Module, ckpt_dir: Path, config: RunConfig, tracker: BestTracker, held_out: List[Any],
                    step: int, stopped_early: bool) -> Dict[str, Any]:
    """Put the weights to publish into ``model``; return the card's record of which and why."""
    v = config.validation
    if v.every <= 0 or tracker.best_step is None:
        why = "no validation during training (validation.every = 0)" if v.every <= 0 else "no finite validation score"
        return {"selected": "last", "step": step, "why": f"weights after the last step; {why}"}
    cases = len(held_out[: v.max_cases] if v.max_cases else held_out)
    record: Dict[str, Any] = {"metric": v.metric, "best_step": tracker.best_step, "best_value": tracker.best_value,
                              "validations": [[s, val] for s, val in tracker.history], "stopped_early": stopped_early}
    if v.publish == "last":
        return {"selected": "last", "step": step, "why": "validation.publish = last", **record}
    state = load_checkpoint(ckpt_dir / BEST_NAME)
    model.load_state_dict(state["model"])
    return {"selected": "best", "step": tracker.best_step, "checkpoint": str(ckpt_dir / BEST_NAME),
            "why": tracker.describe(v.every, config.data.fold, cases)
            + (f"; stopped early at step {step} after {tracker.since_best} without improvement" if stopped_early else ""),
            **record}


def _log_validation(out: Path, writer, step: int, result, tracker: BestTracker) -> None:
    line = {"step": step, "seconds": round(result.seconds, 3), "cases": result.cases, **result.metrics,
            "best_step": tracker.best_step, "best_value": tracker.best_value}
    with open(out / "validation.jsonl", "a") as handle:
        handle.write(json.dumps({k: (None if isinstance(x, float) and x != x else x) for k, x in line.items()}) + "\n")
    if writer is not None:
        for k, x in result.metrics.items():
            writer.add_scalar(f"validation/{k}", x, step)
    shown = " ".join(f"{k} {result.metrics[k]:.4g}" for k in ("dice_mean", "hd95_mean", "lesion_dice_mean",
                                                               "lesion_hd95_mean"))
    print(f"validation step {step}: {shown} ({result.cases} case(s), {format_seconds(result.seconds)}); "
          f"best {tracker.metric} {tracker.best_value if tracker.best_value is None else f'{tracker.best_value:.4g}'} "
          f"at step {tracker.best_step}", file=sys.stderr)


def _checkpoint(folder: Path, model, optimizer, scheduler, scaler, step: int, per_epoch: int, accumulate: int,
                config: RunConfig, env: DistEnv, tracker: Optional[BestTracker] = None) -> Optional[Path]:
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
        "validation": tracker.state_dict() if tracker is not None else {},
    }
    return save_rotating(folder, state)


def _summary(out: Path, config: RunConfig, step: int, seconds: float, losses: Dict[str, float],
             checkpoint: Optional[Path], card: Optional[Path], env: DistEnv, more: Dict[str, Any]) -> None:
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
        **more,
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    shown = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
    best = more.get("best")
    chosen = (f"; card: best {best['metric']} {best['value']:.4g} at step {best['step']}"
              if best and more["weights"]["selected"] == "best" else "; card: last weights")
    print(f"symmetryaware-train: {step} steps in {format_seconds(seconds)} on {env.world_size} x {env.device}, "
          f"{more['samples_per_second_per_device']:.3g} samples/s per device; final {shown}{chosen}; run folder {out}",
          file=sys.stderr)
