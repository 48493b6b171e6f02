"""What symmetry costs: SA-Swin with mirror-pair pairing against MONAI SwinUNETR, in one process.

Two measurements (docs/pairing.md explains the accounting), random weights and random
inputs, the same feature size, crop size, channels and device for every network, and
MONAI's fused window attention switched on for all of them (``SwinUNETR(use_flash_attention=True)``;
SA-Swin's Swin blocks get the same flag, :func:`SymmetryAwareCore.inference.engine.fused_window_attention`).
MONAI uses the fused kernel only where no gradient is taken, so it speeds up (b), not (a);
SACA's attention is fused in both (``need_weights=False``).

(a) Training, per supervised sample: one optimiser step (AdamW, the segmentation task's Dice +
    BCE on 3 regions, :class:`SymmetryAwareTraining.tasks.SegmentationTask`) of
    - MONAI SwinUNETR at batch 2 (2 supervised crops),
    - SA-Swin ``pairing=mirror-pair`` at 1 pair: ``[P; C]`` encoded once, SACA across the pair,
      both supervised (2 supervised crops),
    - SA-Swin ``pairing=input`` (the paper's) at batch 2, for reference: 2 patches, each with
      its counterpart encoded as context (4 encoder passes, 2 supervised crops).
    Time per supervised sample is the step time / 2 for each.
(b) Inference, per whole case ``(C, X, Y, Z)``: MONAI's ``sliding_window_inference`` with
    SwinUNETR against :func:`SymmetryAwareCore.inference.sliding_window.mirror_paired_sliding_window`
    with the mirror-pair SA-Swin, same roi, overlap, ``sw_batch_size`` and Gaussian blending.
    Wall time, and peak memory above what the process held before the call: on CUDA
    ``torch.cuda.max_memory_allocated``; on the CPU the resident set sampled every 2 ms by a
    thread, with glibc's mmap threshold fixed at 64 KiB so that freed tensors leave the
    resident set (without that the allocator keeps them and later calls look free).

(c) Arithmetic per whole case, machine-independent: FLOPs of one window of each network
    (``torch.utils.flop_counter`` on shape-only ``meta`` copies: convolutions, matrix products,
    attention) times the windows and encoder passes of each engine's grid. On a noisy machine
    the times of (b) scatter by more than SACA costs; this says what the ratio is made of.
    ``--flops-only`` prints only (c), in seconds, for any case size, width and ROI.

Every round runs each arm once (interleaved), after ``--warmup`` rounds; times are medians
over ``--repeats`` rounds, so load from other processes falls on all arms alike.

The last two lines are the figures the issue asks for::

    training cost ratio SA-Swin/SwinUNETR per sample: X
    case time ratio SA-Swin/SwinUNETR: X  memory ratio: Y

Examples::

    # BraTS-size case (4 x 240 x 240 x 155 at 1 mm), CPU
    python Benchmarks/pairing_benchmark.py --feature-size 12 --roi 64
    # a quick run on a shared CPU: a smaller case
    nice -n 10 env OMP_NUM_THREADS=1 python Benchmarks/pairing_benchmark.py --feature-size 12 --roi 64 \\
        --case-size 160 160 96 --repeats 3 --threads 1
    # the arithmetic alone, BraTS-size case at the paper's width (seconds, any machine)
    python Benchmarks/pairing_benchmark.py --flops-only --feature-size 48 --roi 96
    # the paper's width on a GPU
    python Benchmarks/pairing_benchmark.py --device cuda --feature-size 48 --roi 96 --amp bf16
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import resource
import statistics
import sys
import threading
import time

import torch
import torch.nn as nn
from reference import PatchOnly  # Benchmarks/reference.py, beside this script


def _fix_mmap_threshold() -> bool:
    """glibc: allocations above 64 KiB get their own mapping, returned to the system on free."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


class PeakMemory:
    """Peak memory of the ``with`` block above the memory held at its start, in bytes."""

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = self._top = _rss_bytes()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._top = max(self._top, _rss_bytes())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._top = max(self._top, _rss_bytes())
            self._stop.set()
            self._thread.join()
            self.peak = self._top - self._base
        return False


def _fused_flags(model: nn.Module):
    return [m.use_flash_attention for m in model.modules() if isinstance(getattr(m, "use_flash_attention", None), bool)]


def _networks(args):
    from monai.networks.nets import SwinUNETR

    from SymmetryAwareCore.models import SASwinUNETR

    common = dict(in_channels=args.in_channels, out_channels=3, feature_size=args.feature_size)
    torch.manual_seed(0)
    swin = SwinUNETR(use_flash_attention=True, **common)
    torch.manual_seed(0)
    pair = SASwinUNETR(pairing="mirror-pair", **common)
    torch.manual_seed(0)
    paper = SASwinUNETR(pairing="input", **common)
    for net in (pair, paper):  # the flag MONAI's SwinUNETR sets in its blocks, on theirs
        for m in net.modules():
            if isinstance(getattr(m, "use_flash_attention", None), bool):
                m.use_flash_attention = True
    for name, net in (("SwinUNETR", swin), ("SA-Swin", pair)):
        flags = _fused_flags(net)
        if not flags or not all(flags):
            raise SystemExit(f"pairing_benchmark: fused attention is not on in every Swin block of {name}")
    return swin, pair, paper


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(arms, repeats: int, warmup: int, device, memory: bool = False):
    """``{name: (median seconds, every time, peak bytes of the first timed round)}``."""
    times = {name: [] for name in arms}
    peaks = {name: 0 for name in arms}
    for round_ in range(warmup + repeats):
        for name, run in arms.items():
            meter = PeakMemory(device) if memory and round_ == warmup else contextlib.nullcontext()
            _sync(device)
            with meter:
                t0 = time.perf_counter()
                run()
                _sync(device)
                seconds = time.perf_counter() - t0
            if round_ >= warmup:
                times[name].append(seconds)
            if isinstance(meter, PeakMemory):
                peaks[name] = meter.peak
    return {name: (statistics.median(v), v, peaks[name]) for name, v in times.items()}


def training(args, device, dtype, networks):
    """(a): seconds per supervised sample of each arm."""
    from SymmetryAwareTraining.config import RunConfig
    from SymmetryAwareTraining.tasks import SegmentationTask

    swin, pair, paper = networks

    def task(pairing):
        config = RunConfig()
        config.model.kwargs = {"pairing": pairing}
        return SegmentationTask(config)

    g = torch.Generator().manual_seed(1)
    shape = (2, args.in_channels) + (args.roi,) * 3
    image = torch.randn(shape, generator=g)
    counterpart = torch.randn(shape, generator=g)
    label = (torch.rand((2, 3) + (args.roi,) * 3, generator=g) < 0.05).float()
    batch2 = {"image": image.to(device), "counterpart": counterpart.to(device), "label": label.to(device)}
    # One pair: crop 0 and its counterpart, the counterpart with its own label.
    batch_pair = {"image": batch2["image"][:1], "counterpart": batch2["counterpart"][:1],
                  "label": batch2["label"][:1], "label_counterpart": batch2["label"][1:]}
    arms = {
        "SwinUNETR, batch 2": (PatchOnly(swin), task("input"), batch2),
        "SA-Swin mirror-pair, 1 pair": (pair, task("mirror-pair"), batch_pair),
        "SA-Swin input pairing, batch 2": (paper, task("input"), batch2),
    }
    runs = {}
    for name, (model, t, batch) in arms.items():
        model.to(device).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

        def step(model=model, t=t, batch=batch, optimiser=optimiser, scaler=scaler):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = t.loss(model, batch)["loss"]
            scaler.scale(loss.float()).backward()
            scaler.step(optimiser)
            scaler.update()
            optimiser.zero_grad(set_to_none=True)

        runs[name] = step
    timed = _interleaved(runs, args.repeats, args.warmup, device)
    for model, _, _ in arms.values():
        model.to("cpu")
    supervised = {name: 2 for name in arms}  # every arm's step supervises two crops
    return {name: (median / supervised[name], values) for name, (median, values, _) in timed.items()}


def case(args, device, dtype, networks):
    """(b): seconds and peak bytes per whole case, and the work each engine did."""
    from monai.inferers import sliding_window_inference

    from SymmetryAwareCore.inference.engine import fused_window_attention
    from SymmetryAwareCore.inference.sliding_window import mirror_paired_sliding_window

    swin, pair, _ = networks
    swin.to(device).eval()
    pair.to(device).eval()
    g = torch.Generator().manual_seed(2)
    volume = torch.randn((args.in_channels,) + tuple(args.case_size), generator=g)
    roi = (args.roi,) * 3
    monai_crops = [0]

    def swin_predict(x):
        monai_crops[0] += x.shape[0]
        return swin(x)

    last = {}

    def run_swin():
        monai_crops[0] = 0
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            # Stitched on the compute device and copied to the host once, as the mirror-pair
            # engine does (both return the case on the CPU).
            out = sliding_window_inference(volume[None].to(device), roi, args.sw_batch_size, swin_predict,
                                           overlap=args.overlap, mode="gaussian", sw_device=device, device=device).cpu()
        last["monai_shape"] = tuple(out.shape)

    # Count what the engine really runs, crop by crop, rather than trusting its own report.
    pair_crops = {"encoded": 0, "headed": 0}
    encode, head = pair.forward_features, pair.forward_head

    def counted_encode(x):
        pair_crops["encoded"] += x.shape[0]
        return encode(x)

    def counted_head(features, *rest, **kwargs):
        pair_crops["headed"] += features[0].shape[0]
        return head(features, *rest, **kwargs)

    pair.forward_features, pair.forward_head = counted_encode, counted_head

    def run_pair():
        pair_crops.update(encoded=0, headed=0)
        with torch.inference_mode(), fused_window_attention(pair):
            result = mirror_paired_sliding_window(volume, pair, roi, overlap=args.overlap,
                                                  sw_batch_size=args.sw_batch_size, mode="gaussian",
                                                  device=device, amp_dtype=dtype)
        last["pair"] = result

    timed = _interleaved({"SwinUNETR": run_swin, "SA-Swin mirror-pair": run_pair}, args.case_repeats,
                         args.case_warmup, device, memory=True)
    del pair.forward_features, pair.forward_head  # back to the class's methods
    result = last["pair"]
    assert tuple(result.logits.shape[1:]) == last["monai_shape"][2:] == tuple(args.case_size)
    assert pair_crops["encoded"] == result.n_encoded
    # (windows, encoder passes, head passes): one head per window in both engines; a
    # mirror-pair window on the plane needs its flip encoded too (as context).
    work = {"SwinUNETR": (monai_crops[0], monai_crops[0], monai_crops[0]),
            "SA-Swin mirror-pair": (result.n_windows, pair_crops["encoded"], pair_crops["headed"])}
    return timed, work


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # PyTorch's counter has formulas for the CUDA fused kernels only; the CPU kernel does the
    # same arithmetic (QK^T and AV), so it gets the same formula.
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def window_flops(network, *inputs, **kwargs) -> int:
    """Multiply-add FLOPs (x2) of one forward pass, counted by ``torch.utils.flop_counter``:
    convolutions, matrix products and attention (fused or not); elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _sdpa_cpu_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        network(*inputs, **kwargs)
    return int(counter.get_total_flops())


def case_plan(args) -> dict:
    """Windows and encoder passes of each engine for ``--case-size``, from the window grids
    alone (no network is run). The timed path checks these against what the engines did.

    MONAI: ``dense_patch_slices`` with MONAI's own scan interval on the case padded as its
    ``sliding_window_inference`` pads it (each axis to at least the ROI). Mirror-pair: the
    mirror-closed grid on the case padded by :func:`padding_for_roi` (which may pad x one
    voxel more, to stay symmetric); every window is encoded once, and a window centred on the
    plane also needs its flip encoded (docs/pairing.md).
    """
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    from SymmetryAwareCore.inference.window_grid import mirror_pairs, padding_for_roi, window_starts

    roi = (args.roi,) * 3
    monai_image = [max(int(s), args.roi) for s in args.case_size]
    interval = _get_scan_interval(monai_image, roi, 3, (args.overlap,) * 3)
    monai_windows = len(dense_patch_slices(monai_image, roi, interval))
    padded = [s + before + after for s, (before, after) in zip(args.case_size, padding_for_roi(args.case_size, roi))]
    starts = window_starts(padded, roi, args.overlap)
    on_plane = sum(1 for a, m in mirror_pairs(starts, roi, padded) if a == m)
    return {"SwinUNETR": (monai_windows, monai_windows, monai_windows),
            "SA-Swin mirror-pair": (len(starts), len(starts) + on_plane, len(starts))}


def case_flops(args, networks, plan) -> dict:
    """(c): the arithmetic each engine does per whole case, from per-window counts and the
    window plan (:func:`case_plan`). Machine-independent: the case time ratio on a machine
    where time followed arithmetic alone. Counted on ``meta`` copies of the networks (shapes
    only, nothing computed), so it costs nothing and fits any width and ROI.

    SwinUNETR: ``windows x F(SwinUNETR window)``. SA-Swin mirror-pair:
    ``encoder passes x F(encoder) + heads x F(SACA + decoder)``.
    """
    import copy

    swin, pair = (copy.deepcopy(net).to("meta").eval() for net in networks[:2])
    x = torch.empty((1, args.in_channels) + (args.roi,) * 3, device="meta")
    c = torch.empty_like(x)
    f_swin = window_flops(swin, x)
    f_pair = window_flops(pair, x, c, mirror_pair=True) / 2  # one pair = two windows' heads
    f_encoder = window_flops(pair.forward_features, x)
    f_head = f_pair - f_encoder
    windows, _, _ = plan["SwinUNETR"]
    _, encoded, heads = plan["SA-Swin mirror-pair"]
    return {"swin_window": f_swin, "encoder": f_encoder, "pair_head": f_head,
            "swin_case": windows * f_swin, "pair_case": encoded * f_encoder + heads * f_head}


def _print_flops(args, networks, plan) -> float:
    flops = case_flops(args, networks, plan)
    (w_swin, _, _), (w_pair, e_pair, _) = plan["SwinUNETR"], plan["SA-Swin mirror-pair"]
    print(f"(c) arithmetic per whole case {' x '.join(map(str, args.case_size))}, roi {args.roi}^3, overlap "
          f"{args.overlap} (torch.utils.flop_counter: convolutions, matrix products, attention; elementwise work "
          f"not counted; machine-independent)")
    print(f"  per window: SwinUNETR {flops['swin_window'] / 1e9:.3f} GFLOP; SA-Swin encoder {flops['encoder'] / 1e9:.3f}"
          f" GFLOP per pass + SACA and decoder {flops['pair_head'] / 1e9:.3f} GFLOP per head "
          f"(SACA: {flops['encoder'] + flops['pair_head'] - flops['swin_window']:+.2e} FLOP per window)")
    ratio = flops["pair_case"] / flops["swin_case"]
    print(f"  case: SwinUNETR {w_swin} windows, {flops['swin_case'] / 1e9:.1f} GFLOP; SA-Swin mirror-pair {w_pair} "
          f"windows, {e_pair} encoder passes, {flops['pair_case'] / 1e9:.1f} GFLOP")
    print(f"case FLOP ratio SA-Swin/SwinUNETR: {ratio:.4f}")
    return ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--roi", type=int, default=64, help="cubic crop / window size, a multiple of 32, at least 64")
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--case-size", type=int, nargs=3, default=[240, 240, 155], metavar=("X", "Y", "Z"),
                        help="whole case in voxels, X left-right (default: BraTS at 1 mm, 240 240 155)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=2)
    parser.add_argument("--amp", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=5, help="timed training rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training rounds first")
    parser.add_argument("--case-repeats", type=int, default=3, help="timed whole-case rounds")
    parser.add_argument("--case-warmup", type=int, default=1, help="untimed whole-case rounds first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--flops-only", action="store_true",
                        help="only (c): count the arithmetic per case from the window plan (seconds, any size)")
    args = parser.parse_args(argv)
    if args.roi % 32 or args.roi < 64:
        parser.error("--roi must be a multiple of 32, at least 64")
    if args.feature_size % 12 or args.feature_size <= 0:
        parser.error("--feature-size must be a positive multiple of 12")
    if min(args.case_size) < 1 or not 0 <= args.overlap < 1 or args.sw_batch_size < 1:
        parser.error("--case-size must be positive, --overlap in [0, 1), --sw-batch-size at least 1")
    if min(args.repeats, args.case_repeats) < 1 or min(args.warmup, args.case_warmup) < 0:
        parser.error("repeats must be at least 1, warm-up rounds at least 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device")
    if args.amp == "fp16" and device.type != "cuda":
        parser.error("fp16 needs CUDA")
    if args.threads:
        torch.set_num_threads(args.threads)
    fixed = device.type == "cpu" and _fix_mmap_threshold()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    import monai

    networks = _networks(args)
    where = f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                           f", {torch.get_num_threads()} thread(s)")
    print(f"pairing benchmark: {where}, torch {torch.__version__}, monai {monai.__version__}, feature size "
          f"{args.feature_size}, {args.in_channels} channels, 3 outputs, {args.amp}; fused Swin window attention "
          f"on in every arm (MONAI SwinUNETR(use_flash_attention=True), used where no gradient is taken)")

    if args.flops_only:
        _print_flops(args, networks, case_plan(args))
        return 0
    per_sample = training(args, device, dtype, networks)
    print(f"(a) training step at roi {args.roi}^3: seconds per supervised sample (median of {args.repeats} "
          f"interleaved rounds after {args.warmup} warm-up; every arm's step supervises 2 crops)")
    ref = per_sample["SwinUNETR, batch 2"][0]
    for name, (seconds, values) in per_sample.items():
        print(f"  {name:32s} {seconds:8.3f} s/sample  x{seconds / ref:5.2f}   steps: "
              + ", ".join(f"{v:.2f}" for v in values))

    timed, work = case(args, device, dtype, networks)
    memory = "CUDA max_memory_allocated" if device.type == "cuda" else (
        "resident set sampled every 2 ms" + ("" if fixed else "; glibc mmap threshold NOT fixed: memory unreliable"))
    print(f"(b) whole case {args.in_channels} x {' x '.join(map(str, args.case_size))}, roi {args.roi}^3, overlap "
          f"{args.overlap}, sw_batch_size {args.sw_batch_size}, gaussian: median of {args.case_repeats} interleaved "
          f"rounds after {args.case_warmup} warm-up; peak memory above the process's before the call ({memory})")
    for name, (seconds, values, peak) in timed.items():
        windows, encoded, heads = work[name]
        print(f"  {name:22s} {seconds:8.2f} s  peak {peak / 2**20:8.0f} MiB  windows {windows:4d}  "
              f"encoder passes {encoded:4d}  heads {heads:4d}   rounds: " + ", ".join(f"{v:.2f}" for v in values))

    plan = case_plan(args)
    if plan != work:  # the plan must be what the engines did, or (c) counts the wrong work
        raise SystemExit(f"pairing_benchmark: window plan {plan} differs from the engines' work {work}")
    _print_flops(args, networks, plan)

    train_ratio = per_sample["SA-Swin mirror-pair, 1 pair"][0] / ref
    (t_swin, _, m_swin), (t_pair, _, m_pair) = timed["SwinUNETR"], timed["SA-Swin mirror-pair"]
    print(f"training cost ratio SA-Swin/SwinUNETR per sample: {train_ratio:.3f}")
    print(f"case time ratio SA-Swin/SwinUNETR: {t_pair / t_swin:.3f}  memory ratio: {m_pair / max(m_swin, 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
