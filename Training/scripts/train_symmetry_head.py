"""Train the symmetry-aware head's symmetry task on cached features of the frozen early stages.

Why this exists: the four-task pretraining (``symmetryaware-train pretrain`` with
``Training/configs/sah_pretrain.yaml``) costs about 100 s per step of 8 whole scans on this
project's shared 2-core CPU (16 Swin passes at 64^3 per step, most of it the frozen early
stages' forward pass), so an hour buys about 30 steps. Here the frozen part of the encoder
(patch embedding, stages 1 and 2, initialised from the bundled segmentation model and never
changed) is run ONCE per scan and per mirror side, and only the rest of the symmetry path
trains: Swin stages 3 and 4 and the head's symmetry projector, with the SAH's own loss
(:func:`SymmetryAwareCore.models.losses.symmetry_loss`: BCE on ``(1 + cos(z, z~)) / 2``,
healthy 1, patient 0). Rotation, contrastive and inpainting are not trained here (they need
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

TRAINED = ("swinViT.layers3", "swinViT.layers4", "head.symmetry_norm", "head.projector")


def stem(model, x: torch.Tensor) -> torch.Tensor:
    """Frozen part: ``(B, C, X, Y, Z)`` -> stage-2 output ``(B, 4F, X/8, Y/8, Z/8)``."""
    sw = model.swinViT
    x0 = sw.pos_drop(sw.patch_embed(x))
    x1 = sw.layers1[0](x0.contiguous())
    return sw.layers2[0](x1.contiguous())


def tail(model, x2: torch.Tensor) -> torch.Tensor:
    """Trained part: stage-2 output -> symmetry tokens ``(B, P, X/32, Y/32, Z/32)``."""
    sw = model.swinViT
    x4 = sw.layers4[0](sw.layers3[0](x2.contiguous()).contiguous())
    return model.head.symmetry_tokens(sw.proj_out(x4, model.normalize))


def pooled(model, x2: torch.Tensor) -> torch.Tensor:
    return tail(model, x2).flatten(2).mean(dim=2)


def auc(pos, neg) -> float:
    from scipy import stats

    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


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
    args = parser.parse_args(argv)

    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.models.losses import symmetry_loss
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
    if model.swinViT.use_v2 if hasattr(model.swinViT, "use_v2") else False:
        sys.exit("error: the split forward assumes use_v2=False")
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(TRAINED))
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    (out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))

    # 1. Stem features of every scan and of its mirror, once (cached on disk, resumable).
    cache_file = out / "stem_cache.pt"
    cache = torch.load(cache_file) if cache_file.is_file() else {}
    model.eval()
    indices = dataset.healthy + dataset.patient
    roi = dataset.roi_size
    started = time.perf_counter()
    for n, i in enumerate(indices):
        if i in cache:
            continue
        x, xc = whole_scan_view(dataset.load(i)[0], roi, np.random.default_rng(0), False)
        with torch.no_grad():
            cache[i] = stem(model, torch.stack([x, xc])).clone()
            if n == 0:  # the split forward is the network's own forward
                from SymmetryAwareCore.models.encoder import stage_index

                own = model.head.symmetry_tokens(model.forward_features(x[None])[stage_index(4)])
                assert torch.allclose(own, tail(model, cache[i][:1]), atol=1e-5), "split forward differs"
        if n % 8 == 7 or n == len(indices) - 1:
            torch.save(cache, cache_file)
            print(f"stem {n + 1}/{len(indices)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

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
            z, zc = pooled(model, pair[:, 0]), pooled(model, pair[:, 1])
            healthy_t = 1 - torch.tensor(val_status)
            loss = float(symmetry_loss(z, zc, healthy_t))
            score = ((1 - torch.nn.functional.cosine_similarity(z, zc, dim=1)) / 2).numpy()
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
        z, zc = pooled(model, pair[:, 0]), pooled(model, pair[:, 1])
        healthy_t = torch.tensor([1] * args.pairs + [0] * args.pairs)
        loss = symmetry_loss(z, zc, healthy_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        row = [step, epoch + 1, f"{float(loss):.5f}", "", "", f"{scheduler.get_last_lr()[0]:.3g}"]
        if step % per_epoch == 0:
            vl, va = evaluate()
            row[3:5] = [f"{vl:.5f}", f"{va:.4f}"]
            print(f"step {step}/{steps} epoch {epoch + 1}: train {float(loss):.4f} val {vl:.4f} val AUC {va:.3f}",
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
               f"lr {args.lr:g}, weight decay {args.weight_decay:g}; trained: {', '.join(TRAINED)}"})
    print(f"wrote {card}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
