"""Train the symmetry-aware head's symmetry task on cached features of the frozen early stages.

Why this exists: the four-task pretraining (``symmetryaware-train pretrain`` with
``Training/configs/sah_pretrain.yaml``) costs about 100 s per step of 8 whole scans on this
project's shared 2-core CPU (16 Swin passes at 64^3 per step, most of it the frozen early
stages' forward pass), so an hour buys about 30 steps. Here the frozen part of the encoder
(patch embedding, stages 1 and 2, initialised from the bundled segmentation model and never
changed; by default stage 3 too) is run ONCE per scan and per mirror side, and only the rest of
the symmetry path trains: Swin stage 4 and the head's symmetry projector, with the SAH's own loss
(BCE on ``(1 + cos(z, z~)) / 2``, healthy 1, patient 0), in its region-by-region form
(:func:`SymmetryAwareCore.models.losses.token_symmetry_loss`: each bottleneck region against
its mirror region, the scan's similarity that of its most asymmetric region), because the
counterpart of a whole scan is its exact flip. Rotation, contrastive and inpainting are not trained here (they need
new input views every step, i.e. the full passes this avoids).

The network is the run's :class:`SASwinPretrainer`, built and initialised by the same
:class:`SymmetryAwareTraining.tasks.PretrainTask` as the pretraining command (same config,
same leakage check, same prepared inputs: the brain box resized to ``roi_size``, exactly
what the zero-shot score reads). The script checks on one scan that its split forward
(cached stem + trained tail) equals the network's own forward.

Each step takes ``--pairs`` healthy and ``--pairs`` patient scans (balanced). ``--val`` scans
of each class, drawn once with ``--seed``, are held out of the training list to watch
over-fitting (their loss and AUC are logged each epoch); the weights published are the last
step's. Per-step losses go to ``<output>/curve.csv``; the stem cache and checkpoints make
the run resumable (run the same command again).

Run (PYTHONPATH=.:Training)::

    OMP_NUM_THREADS=1 nice -n 10 python Training/scripts/train_symmetry_head.py \\
        --config Training/configs/sah_pretrain.yaml --output runs/sah_head --epochs 60
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from SymmetryAwareTraining.metrics import rank_auc as auc  # the one rank AUC

HEAD_TRAINED = ("head.symmetry_norm", "head.projector")


def trained_prefixes(frozen: int):
    """Parameter prefixes trained above ``frozen`` frozen Swin stages."""
    return tuple(f"swinViT.layers{k}" for k in range(frozen + 1, 5)) + HEAD_TRAINED


def advance(model, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Swin stages ``start+1 .. stop`` (MONAI's ``layers<k>``) on the output of stage ``start``."""
    sw = model.swinViT
    for k in range(start + 1, stop + 1):
        x = getattr(sw, f"layers{k}")[0](x.contiguous())
    return x


def stem(model, x: torch.Tensor, frozen: int) -> torch.Tensor:
    """Frozen part: ``(B, C, X, Y, Z)`` -> output of Swin stage ``frozen`` (2: ``(B, 4F, X/8, ...)``,
    3: ``(B, 8F, X/16, ...)``)."""
    sw = model.swinViT
    return advance(model, sw.pos_drop(sw.patch_embed(x)), 0, frozen)


def tail(model, hidden: torch.Tensor, frozen: int) -> torch.Tensor:
    """Trained part: stage ``frozen``'s output -> symmetry tokens ``(B, P, X/32, Y/32, Z/32)``."""
    x4 = advance(model, hidden, frozen, 4)
    return model.head.symmetry_tokens(model.swinViT.proj_out(x4, model.normalize))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=8, help="healthy and patient scans per step, each")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--val", type=int, default=8, help="scans of each class held out to watch over-fitting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frozen-stages", type=int, default=3, choices=(1, 2, 3),
                        help="Swin stages kept as initialised and cached (default 3: only stage 4 and the projector "
                        "train; on a 64^3 input stage 3 runs 343-token windows over an 8^3 grid padded to 14^3, "
                        "about 30 s per step of 16 scans on the shared CPU)")
    args = parser.parse_args(argv)
    frozen = args.frozen_stages
    trained = trained_prefixes(frozen)

    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.models.losses import token_symmetry_loss
    from SymmetryAwareCore.models.symmetry_head import asymmetry_map, scan_asymmetry
    from SymmetryAwareTraining.config import load_config, save_config
    from SymmetryAwareTraining.data import whole_scan_view
    from SymmetryAwareTraining.modelcard import write_model_card
    from SymmetryAwareTraining.tasks import PretrainTask

    try:
        config = load_config(args.config, args.overrides + ["model.freeze=[]", "data.augment=false"])
        torch.manual_seed(args.seed)
        task = PretrainTask(config)
        model = task.build_model()
        dataset = task.train_dataset()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if getattr(model.swinViT, "use_v2", False):
        sys.exit("error: the split forward assumes use_v2=False")
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trained))
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    (out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))

    # 1. Stem features of every scan and of its mirror, once (cached on disk, resumable).
    cache_file = out / f"stem{frozen}_cache.pt"
    cache = torch.load(cache_file) if cache_file.is_file() else {}
    model.eval()
    for lower in range(frozen - 1, 0, -1):  # a cache of fewer frozen stages is advanced, not recomputed
        if not cache and (out / f"stem{lower}_cache.pt").is_file():
            with torch.no_grad():
                cache = {i: advance(model, h, lower, frozen).clone()
                         for i, h in torch.load(out / f"stem{lower}_cache.pt").items()}
            torch.save(cache, cache_file)
            print(f"advanced the stage-{lower} cache to stage {frozen}", file=sys.stderr, flush=True)
    indices = dataset.healthy + dataset.patient
    roi = dataset.roi_size
    started = time.perf_counter()
    for n, i in enumerate(indices):
        if i in cache:
            continue
        x, xc = whole_scan_view(dataset.load(i)[0], roi, np.random.default_rng(0), False)
        with torch.no_grad():
            cache[i] = stem(model, torch.stack([x, xc]), frozen).clone()
        if n % 8 == 7 or n == len(indices) - 1:
            torch.save(cache, cache_file)
            print(f"stem {n + 1}/{len(indices)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    # The split forward (cached stem + tail) is the network's own forward, as zero-shot runs it.
    from SymmetryAwareCore.models.encoder import stage_index

    first = indices[0]
    x, xc = whole_scan_view(dataset.load(first)[0], roi, np.random.default_rng(0), False)
    with torch.no_grad():
        own = model.head.symmetry_tokens(model.forward_features(torch.stack([x, xc]))[stage_index(4)])
        if not torch.allclose(own, tail(model, cache[first], frozen), atol=1e-4):
            sys.exit("error: the split forward differs from the network's forward")

    # 2. Held-out scans, per class, drawn once.
    rng = np.random.default_rng([args.seed, 1])
    healthy = list(rng.permutation(dataset.healthy))
    patient = list(rng.permutation(dataset.patient))
    val = healthy[: args.val] + patient[: args.val]
    val_status = [0] * args.val + [1] * args.val
    healthy, patient = healthy[args.val:], patient[args.val:]
    per_epoch = min(len(healthy), len(patient)) // args.pairs
    steps = per_epoch * args.epochs

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))
    ckpt = out / "last.pt"
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    curve_file = out / "curve.csv"
    new_curve = not curve_file.is_file() or step == 0
    curve = curve_file.open("w" if new_curve else "a", newline="")
    writer = csv.writer(curve)
    if new_curve:
        writer.writerow(["step", "epoch", "train_symmetry_loss", "val_symmetry_loss", "val_auc", "lr"])

    def evaluate():
        model.eval()
        with torch.no_grad():
            pair = torch.stack([cache[i] for i in val])  # (V, 2, 4F, ...)
            z, zc = tail(model, pair[:, 0], frozen), tail(model, pair[:, 1], frozen)
            healthy_t = 1 - torch.tensor(val_status)
            loss = float(token_symmetry_loss(z, zc, healthy_t))
            score = scan_asymmetry(asymmetry_map(z, zc)).numpy()  # the zero-shot scan score
        model.train()
        s = np.asarray(val_status)
        return loss, auc(score[s == 1], score[s == 0])

    if step == 0:
        vl, va = evaluate()
        writer.writerow([0, 0, "", f"{vl:.5f}", f"{va:.4f}", 0.0])
        print(f"step 0: val symmetry loss {vl:.4f}, val AUC {va:.3f}", file=sys.stderr, flush=True)
    model.train()
    while step < steps:
        epoch = step // per_epoch
        order = np.random.default_rng([args.seed, 2, epoch])
        h, p = order.permutation(healthy), order.permutation(patient)
        k = step % per_epoch
        idx = list(h[k * args.pairs:(k + 1) * args.pairs]) + list(p[k * args.pairs:(k + 1) * args.pairs])
        pair = torch.stack([cache[i] for i in idx])
        z, zc = tail(model, pair[:, 0], frozen), tail(model, pair[:, 1], frozen)
        healthy_t = torch.tensor([1] * args.pairs + [0] * args.pairs)
        loss = token_symmetry_loss(z, zc, healthy_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        row = [step, epoch + 1, f"{float(loss.detach()):.5f}", "", "", f"{scheduler.get_last_lr()[0]:.3g}"]
        if step % per_epoch == 0:
            vl, va = evaluate()
            row[3:5] = [f"{vl:.5f}", f"{va:.4f}"]
            print(f"step {step}/{steps} epoch {epoch + 1}: train {float(loss.detach()):.4f} val {vl:.4f} val AUC {va:.3f}",
                  file=sys.stderr, flush=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": step}, ckpt)
        writer.writerow(row)
        curve.flush()
    curve.close()
    model.eval()
    config.train.steps = steps
    card = write_model_card(model, task, config, out / "model", checkpoint={
        "selected": "last", "step": steps,
        "why": f"symmetry task on cached frozen-stem features (Training/scripts/train_symmetry_head.py), "
               f"{args.epochs} epochs of {per_epoch} steps, {args.pairs}+{args.pairs} scans per step, "
               f"lr {args.lr:g}, weight decay {args.weight_decay:g}; trained: {', '.join(trained)}; "
               f"frozen as initialised: patch embedding and Swin stages 1-{frozen}"})
    print(f"wrote {card}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
