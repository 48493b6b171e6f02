"""Training throughput of SA-Swin UNETR beside MONAI's SwinUNETR: samples per second per device.

Both networks are built at the same settings and trained in the same process, on the same
device, with the same optimiser (AdamW), loss (the segmentation task's Dice + BCE on TC, WT,
ET, computed by :class:`SymmetryAwareTraining.tasks.SegmentationTask`), batch size, crop size
and precision. SA-Swin's step is what ``finetune-seg`` runs: ``model(patch, counterpart)``,
two encoder passes and SACA; SwinUNETR's step sees the patch only. Each round runs one step of
each network, so load from other processes falls on both alike; a step's time is the median
over ``--steps`` rounds after ``--warmup`` rounds. Inputs are random tensors already on the
device: data loading is not measured here (``finetune-seg`` prints its own end-to-end
samples/s, data included, in the progress line and ``summary.json``).

Examples::

    python Benchmarks/training_benchmark.py                                   # CPU: feature 12, 64^3
    python Benchmarks/training_benchmark.py --device cuda --feature-size 48 --roi 96 --batch 2 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
from reference import PatchOnly  # Benchmarks/reference.py, beside this script


def _models(args) -> dict:
    from monai.networks.nets import SwinUNETR

    from SymmetryAwareCore.models import SASwinUNETR

    common = dict(in_channels=args.in_channels, out_channels=3, feature_size=args.feature_size)
    torch.manual_seed(0)
    sa = SASwinUNETR(**common)
    torch.manual_seed(0)
    plain = PatchOnly(SwinUNETR(**common))
    return {"SA-Swin UNETR": sa, "MONAI SwinUNETR": plain}


def _batch(args, device) -> dict:
    g = torch.Generator().manual_seed(1)
    shape = (args.batch, args.in_channels, args.roi, args.roi, args.roi)
    image = torch.randn(shape, generator=g)
    label = (torch.rand((args.batch, 3, args.roi, args.roi, args.roi), generator=g) < 0.05).float()
    return {"image": image.to(device), "counterpart": image.flip(2).to(device), "label": label.to(device)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--steps", type=int, default=3, help="timed rounds (one step of each network per round)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device")
    if args.precision == "fp16" and device.type != "cuda":
        parser.error("fp16 needs CUDA")

    from SymmetryAwareTraining.config import RunConfig
    from SymmetryAwareTraining.tasks import SegmentationTask

    task = SegmentationTask(RunConfig())  # its loss only
    models = {name: m.to(device).train() for name, m in _models(args).items()}
    optimisers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    scalers = {name: torch.amp.GradScaler(device.type, enabled=args.precision == "fp16") for name in models}
    batch = _batch(args, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

    def step(name: str) -> float:
        model, opt, scaler = models[name], optimisers[name], scalers[name]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = task.loss(model, batch)["loss"]
        scaler.scale(loss.float()).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    times = {name: [] for name in models}
    for round_ in range(args.warmup + args.steps):
        for name in models:
            seconds = step(name)
            if round_ >= args.warmup:
                times[name].append(seconds)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    settings = (f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
                f"threads {torch.get_num_threads()}, feature {args.feature_size}, roi {args.roi}^3, batch {args.batch}, "
                f"{args.in_channels} channels, {args.precision}, median of {args.steps} steps after {args.warmup} warm-up")
    print(f"training throughput ({settings})")
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"step_seconds": median, "samples_per_second_per_device": args.batch / median}
        print(f"  {name:16s} {median:8.3f} s/step  {args.batch / median:8.3f} samples/s per device")
    ratio = results["SA-Swin UNETR"]["samples_per_second_per_device"] / results["MONAI SwinUNETR"]["samples_per_second_per_device"]
    print(f"  SA-Swin / SwinUNETR throughput: {ratio:.2f}x" + (f"; peak GPU memory {peak:.1f} GiB" if device.type == "cuda" else ""))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "results": results, "ratio": ratio, "torch": torch.__version__}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
