"""Training of the two-stage interactive model's click refiner (``python -m SymmetryAwareTraining.click_refiner``).

The backbone (the automatic SA-Swin segmentation model, frozen) runs ONCE per training case,
through the very function the interactive session uses
(:func:`SymmetryAwareCore.inference.pipeline.predict_box`: the mirror-paired sliding window on
the prepared brain box), and its probabilities are cached with the prepared volume and the
label (``<output>/cache``; the volume and label come from the training store, the arrays
inference computes for the same files and card). Then only the small
:class:`~SymmetryAwareCore.models.click_refiner.ClickRefiner` is trained, so thousands of
click-training steps fit in minutes on a CPU.

A sample: a ``crop``^3 crop of the brain box (padded mirror-safe as the session pads it) around
the lesion, its mirrored counterpart (:func:`~SymmetryAwareCore.geometry.mirror.extract_counterpart`,
as the session), the backbone prior, and clicks from the one simulated annotator
(:func:`SymmetryAwareCore.interactive.clicker.next_click`):

- ``no_click`` of samples: no guidance (the refiner's automatic result: ``auto``);
- otherwise the first click is the clicker's against an empty mask (half of the samples) or
  against the backbone's own mask (the other half: the user refines the automatic result);
  then 0..``rounds`` rounds without gradient in which the refiner predicts and the clicker adds
  its next click; the last prediction is supervised (Dice + BCE on the whole tumour);
- ``corrupt`` of samples get a degraded prior (all zero, or the backbone's WT channel
  shifted by a few voxels), so the refiner cannot just copy the backbone and must use clicks.

Every draw of step ``s`` comes from ``numpy.random.default_rng([seed, s])``; a checkpoint every
``--checkpoint-every`` steps; ``--resume`` continues a run exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["build_cache", "CachedCase", "make_sample", "refiner_loss", "train", "main"]

WT_CHANNEL = 1
"""The backbone's WT channel (BraTS regions TC, WT, ET)."""


class CachedCase:
    """A prepared case padded as the session pads it: ``volume`` ``(C, W, H, D)``, ``prior``
    ``(P, W, H, D)`` (backbone probabilities), ``truth`` ``(W, H, D)`` bool (whole tumour)."""

    def __init__(self, name: str, volume: np.ndarray, prior: np.ndarray, truth: np.ndarray):
        self.name, self.volume, self.prior, self.truth = name, volume, prior, truth


def build_cache(datalists: Sequence[Path], backbone, out: Path, exclude_fold: Optional[int],
                log=print) -> List[Path]:
    """Prepare every lesion case of ``datalists`` (skipping fold ``exclude_fold``), run the
    backbone once, write ``<out>/<case>.npz``; returns the files (existing ones are reused)."""
    from SymmetryAwareCore.inference.pipeline import model_preprocessing, predict_box
    from SymmetryAwareCore.inference.window_grid import pad_for_roi

    from .data import PreparedCases
    from .datalist import case_id, load_datalist
    from .metrics import labels_to_regions

    spec = model_preprocessing(backbone)
    names = [c.name for c in backbone.card.channels]
    roi = tuple(spec.roi_size)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for path in datalists:
        datalist = load_datalist(path)
        entries = [e for e in datalist.all_entries() if exclude_fold is None or e.get("fold") != exclude_fold]
        channels = json.loads(Path(path).read_text()).get("channels")
        if channels is not None and list(channels) != names:
            raise ValueError(f"{path}: channels {channels} differ from the backbone's {names}")
        cases = PreparedCases(entries, True, spec, names)
        for index, entry in enumerate(entries):
            target = out / f"{case_id(entry)}.npz"
            if target.is_file():
                files.append(target)
                continue
            volume, label = cases(index)
            truth = labels_to_regions(np.asarray(label).astype(np.int64))[WT_CHANNEL] > 0
            if not truth.any():
                continue  # a healthy case has nothing to click on
            started = time.perf_counter()
            prior = predict_box(np.asarray(volume, np.float32), backbone)
            dice = 2 * float((truth & (prior[WT_CHANNEL] >= 0.5)).sum()) / (truth.sum() + (prior[WT_CHANNEL] >= 0.5).sum())
            tmp = target.with_suffix(".tmp.npz")
            np.savez(tmp, volume=pad_for_roi(np.asarray(volume, np.float32), roi).astype(np.float16),
                     prior=pad_for_roi(prior, roi).astype(np.float16), truth=pad_for_roi(truth, roi))
            tmp.rename(target)
            files.append(target)
            log(f"cached {target.name}: box {tuple(truth.shape)}, backbone WT Dice {dice:.3f} "
                f"({time.perf_counter() - started:.1f} s)")
    return files


def load_cached(path: Path) -> CachedCase:
    with np.load(path) as z:
        return CachedCase(path.stem, z["volume"].astype(np.float32), z["prior"].astype(np.float32), z["truth"])


def _crop_start(case: CachedCase, crop: int, rng: np.random.Generator) -> Tuple[int, int, int]:
    shape = np.asarray(case.truth.shape)
    idx = np.argwhere(case.truth)
    centre = idx[rng.integers(len(idx))] + rng.integers(-crop // 4, crop // 4 + 1, 3)
    start = np.clip(centre - crop // 2, 0, np.maximum(shape - crop, 0))
    return tuple(int(s) for s in start)


def _degrade(prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A worse prior: none at all, or shifted by 2-6 voxels along one axis."""
    if rng.random() < 0.5:
        return np.zeros_like(prior)
    axis = int(rng.integers(1, 4))
    return np.roll(prior, int(rng.choice([-1, 1]) * rng.integers(2, 7)), axis=axis)


def make_sample(case: CachedCase, crop: int, rng: np.random.Generator, corrupt: float,
                ablation: Optional[str] = None):
    """``(image, counterpart, prior, truth)`` of one crop (float32 arrays; truth bool ``(X, Y, Z)``)."""
    from SymmetryAwareCore.geometry.mirror import extract_counterpart

    start = _crop_start(case, crop, rng)
    window = tuple(slice(s, s + crop) for s in start)
    image = case.volume[(slice(None),) + window]
    if ablation == "self":
        counterpart = image.copy()
    else:
        counterpart = extract_counterpart(torch.from_numpy(case.volume), start, (crop,) * 3, spatial_start=1).numpy()
    prior = case.prior[(slice(None),) + window]
    if rng.random() < corrupt:
        prior = _degrade(prior, rng)
    return image, counterpart, prior, case.truth[window]


def refiner_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Soft Dice (per sample, then mean) + binary cross-entropy, ``(B, 1, X, Y, Z)`` each."""
    p = torch.sigmoid(logits)
    dims = (1, 2, 3, 4)
    dice = 1 - (2 * (p * truth).sum(dims) + 1) / (p.sum(dims) + truth.sum(dims) + 1)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, truth)


def _guidance_batch(guides, shape, sigma) -> torch.Tensor:
    from SymmetryAwareCore.interactive.guidance import guidance_volume

    return torch.from_numpy(np.stack([guidance_volume(shape, g, sigma) for g in guides]))


def training_step(net, cases: Sequence[CachedCase], step: int, args, optimizer=None) -> float:
    """One step of click training (module docstring); returns the loss."""
    from SymmetryAwareCore.interactive.clicker import next_click
    from SymmetryAwareCore.interactive.guidance import Guidance

    rng = np.random.default_rng([args.seed, step])
    samples = [make_sample(cases[int(rng.integers(len(cases)))], args.crop, rng, args.corrupt, args.ablation)
               for _ in range(args.batch)]
    image = torch.from_numpy(np.stack([s[0] for s in samples]))
    counterpart = torch.from_numpy(np.stack([s[1] for s in samples]))
    prior = torch.from_numpy(np.stack([s[2] for s in samples]))
    truths = [s[3] for s in samples]
    shape = truths[0].shape
    guides = []
    for b, truth in enumerate(truths):
        g = Guidance()
        if rng.random() >= args.no_click:
            start = None if rng.random() < 0.5 else prior[b, WT_CHANNEL].numpy() >= 0.5
            click = next_click(start, truth)
            if click is not None:
                g.add(click.voxel, click.positive)
            if rng.random() < args.box:
                idx = np.argwhere(truth)
                margin = rng.integers(0, 4, 3)
                g.box = (tuple(idx.min(0) - margin), tuple(idx.max(0) + margin))
        guides.append(g)
    rounds = int(rng.integers(0, args.rounds + 1))
    if rounds:
        net.eval()
        with torch.no_grad():
            for _ in range(rounds):
                x = net.assemble(image, counterpart, prior, _guidance_batch(guides, shape, args.sigma))
                pred = (torch.sigmoid(net(x))[:, 0] >= 0.5).numpy()
                for b, g in enumerate(guides):
                    if g.empty:
                        continue  # a no-click sample stays without guidance
                    click = next_click(pred[b], truths[b])
                    if click is not None:
                        g.add(click.voxel, click.positive)
    net.train()
    x = net.assemble(image, counterpart, prior, _guidance_batch(guides, shape, args.sigma))
    truth = torch.from_numpy(np.stack(truths)[:, None].astype(np.float32))
    loss = refiner_loss(net(x), truth)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
    return float(loss.detach())


def _lr(step: int, args) -> float:
    warm = 20
    if step < warm:
        return args.lr * (step + 1) / warm
    return 0.5 * args.lr * (1 + np.cos(np.pi * min(1.0, (step - warm) / max(1, args.steps - warm))))


def train(args) -> Path:
    """Cache, then train; writes ``<output>/last.pt`` (resumable) and ``<output>/refiner.pt`` when done."""
    from SymmetryAwareCore.inference.model_source import resolve_model
    from SymmetryAwareCore.interactive.guidance import DEFAULT_SIGMA
    from SymmetryAwareCore.models.click_refiner import ClickRefiner

    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = resolve_model(args.backbone)
    cache = Path(args.cache_dir) if getattr(args, "cache_dir", None) else out / "cache"
    files = build_cache([Path(p) for p in args.datalist], backbone, cache, args.exclude_fold)
    cases = [load_cached(f) for f in files]
    print(f"{len(cases)} lesion cases cached", flush=True)
    args.sigma = getattr(args, "sigma", None) or DEFAULT_SIGMA
    net = ClickRefiner(len(backbone.card.channels), prior_channels=cases[0].prior.shape[0],
                       mirror=args.ablation != "no-mirror", channels=tuple(args.channels),
                       strides=(2,) * (len(args.channels) - 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-5)
    step, history = 0, []
    last = out / "last.pt"
    if args.resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), list(state["history"])
        print(f"resumed at step {step}", flush=True)
    (out / "args.json").write_text(json.dumps(vars(args), indent=2, default=str) + "\n")
    started = time.perf_counter()
    while step < args.steps:
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, args)
        loss = training_step(net, cases, step, args, optimizer)
        step += 1
        history.append(loss)
        if step % 20 == 0 or step == args.steps:
            recent = float(np.mean(history[-20:]))
            print(f"step {step}/{args.steps} loss {recent:.4f} ({(time.perf_counter() - started) / 60:.1f} min)",
                  flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            tmp = last.with_suffix(".tmp")
            torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "history": history, "kwargs": net.init_kwargs}, tmp)
            tmp.replace(last)
    torch.save({"model": net.state_dict(), "kwargs": net.init_kwargs, "steps": step, "history": history,
                "cases": [c.name for c in cases]}, out / "refiner.pt")
    return out / "refiner.pt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m SymmetryAwareTraining.click_refiner",
                                description="Train the click refiner of the two-stage interactive SA-Swin.")
    p.add_argument("--backbone", default="glioma-phantom-saswin-f12", help="automatic segmentation model (name or card)")
    p.add_argument("--datalist", action="append", required=True, help="datalist JSON (repeatable)")
    p.add_argument("--exclude-fold", type=int, default=0, help="fold held out of every datalist (default 0)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--cache-dir", help="where the prepared cases and backbone priors are kept (default "
                   "<output-dir>/cache); runs with the same backbone and data can share it")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=48, help="crop edge in frame voxels (divisible by 8)")
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--rounds", type=int, default=3, help="most no-gradient click rounds per sample")
    p.add_argument("--no-click", type=float, default=0.15, help="share of samples without guidance")
    p.add_argument("--box", type=float, default=0.1, help="share of samples with a box")
    p.add_argument("--corrupt", type=float, default=0.3, help="share of samples with a degraded prior")
    p.add_argument("--ablation", choices=["no-mirror"], default=None,
                   help="no-mirror: a refiner without the mirrored counterpart's channels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from SymmetryAwareCore.errors import InputError

    args = build_parser().parse_args(argv)
    try:
        path = train(args)
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
