"""Parameters, forward time and peak memory of SA-Swin against MONAI's SwinUNETR.

Both networks are built at the same settings and measured in the same run, one after the
other, on the same device and thread count. Three forwards are timed:

- ``SwinUNETR``: MONAI's network on one patch;
- ``SA-Swin``: ``forward(x, x_counterpart)``, i.e. two encoder passes and the head;
- ``SA-Swin head``: ``forward_head`` with the counterpart's features already computed,
  what a sliding-window engine pays per window when each window is encoded once and
  reused as another window's counterpart (``forward_features(x)`` + ``forward_head``).

Times: the median of ``--repeats`` rounds after a warm-up; each round runs every model
once, so load from other processes on a shared machine falls on all of them alike.
Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` around one forward; on the
CPU, each model's forward runs in a forked child that reports its peak resident set size
above its size before the forward (``ru_maxrss``), so one model's peak does not hide the
other's.

Example::

    python Benchmarks/model_benchmark.py --feature-size 24 --roi 96 --in-channels 4 --out-channels 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import torch
from monai.networks.nets import SwinUNETR

from SymmetryAwareCore.models import SASwinUNETR


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _build(kind: str, args):
    torch.manual_seed(0)
    common = dict(in_channels=args.in_channels, out_channels=args.out_channels, feature_size=args.feature_size)
    if kind == "SwinUNETR":
        return SwinUNETR(**common)
    return SASwinUNETR(**common)


def _runner(kind: str, model, x, xc):
    if kind == "SwinUNETR":
        return lambda: model(x)
    if kind == "SA-Swin":
        return lambda: model(x, xc)
    cached = model.forward_features(xc)  # the counterpart window's features, computed earlier
    return lambda: model.forward_head(model.forward_features(x), cached)


def _inputs(args, device):
    shape = (1, args.in_channels, args.roi, args.roi, args.roi)
    g = torch.Generator().manual_seed(1)
    return torch.randn(shape, generator=g).to(device), torch.randn(shape, generator=g).to(device)


def _peak_memory(kind: str, args, device: torch.device) -> float:
    """Peak memory of one forward above the memory held before it, in MiB."""
    model = _build(kind, args).to(device).eval()
    x, xc = _inputs(args, device)
    with torch.no_grad():
        run = _runner(kind, model, x, xc)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        base = _rss_mib()
        run()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base


def _memory_child(kind, args, device, queue):
    torch.set_num_threads(args.threads)
    queue.put(_peak_memory(kind, args, device))


def _timings(kinds, args, device) -> dict:
    """Median forward time per kind; rounds interleave the kinds so that load from other
    processes on a shared machine falls on all of them alike."""
    models = {k: _build(k, args).to(device).eval() for k in kinds}
    x, xc = _inputs(args, device)
    times = {k: [] for k in kinds}
    with torch.no_grad():
        runs = {k: _runner(k, models[k], x, xc) for k in kinds}
        for k in kinds:
            runs[k]()  # warm-up (kernel selection, allocator)
        for _ in range(args.repeats):
            for k in kinds:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                runs[k]()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t0)
    return {
        k: {"kind": k, "params": sum(p.numel() for p in models[k].parameters()), "time": statistics.median(v), "all": v}
        for k, v in times.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature-size", type=int, default=24)
    parser.add_argument("--roi", type=int, default=96, help="cubic patch size, divisible by 32")
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--out-channels", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.roi % 32 or args.roi < 64:
        parser.error("--roi must be a multiple of 32, at least 64")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    kinds = ("SwinUNETR", "SA-Swin", "SA-Swin head")
    peaks = {}
    for kind in kinds:
        if device.type == "cpu":
            # A forked child per model: ru_maxrss only grows, so one process would report
            # the largest model's peak for all of them.
            ctx = mp.get_context("fork")
            queue = ctx.Queue()
            proc = ctx.Process(target=_memory_child, args=(kind, args, device, queue))
            proc.start()
            peaks[kind] = queue.get()
            proc.join()
        else:
            peaks[kind] = _peak_memory(kind, args, device)
    timed = _timings(kinds, args, device)
    results = [dict(timed[k], peak_mib=peaks[k]) for k in kinds]
    print(
        f"device={device} threads={args.threads} feature_size={args.feature_size} roi={args.roi}^3 "
        f"in={args.in_channels} out={args.out_channels} repeats={args.repeats} (median forward, no_grad, batch 1)"
    )
    ref = results[0]
    print(f"{'model':<14}{'params':>14}{'ratio':>8}{'forward s':>12}{'ratio':>8}{'peak MiB':>11}{'ratio':>8}")
    for r in results:
        print(
            f"{r['kind']:<14}{r['params']:>14,}{r['params'] / ref['params']:>8.3f}"
            f"{r['time']:>12.3f}{r['time'] / ref['time']:>8.2f}"
            f"{r['peak_mib']:>11.0f}{r['peak_mib'] / max(ref['peak_mib'], 1e-9):>8.2f}"
        )
    for r in results:
        print(f"  {r['kind']} forward times (s): {', '.join(f'{t:.2f}' for t in r['all'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
