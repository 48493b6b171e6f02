"""Whole-case inference cost: SA-Swin's full pipeline against MONAI's sliding window, one process.

Builds a BraTS-size case (4 x 240 x 240 x 155, 1 mm) from a glioma phantom, then runs, on that
same volume and in this process:

1. MONAI ``sliding_window_inference`` with ``SwinUNETR`` on the whole volume (as a user of
   MONAI would: MONAI's defaults; and with ``use_flash_attention=True``, the fused attention
   our pipeline switches on), and on the brain's bounding box (like for like with our cropping);
2. ``segment_case``: alignment to the mid-sagittal plane, mirror-paired sliding window with an
   SA-Swin of the same feature size, ROI and overlap, mapping back and every output file.

Times are wall-clock seconds; peak memory is the process's peak resident set size during each
run (Linux: reset through /proc/self/clear_refs before each run). Weights are random: the
cost does not depend on them.

Run: ``python Benchmarks/inference_benchmark.py [--feature-size 24] [--roi 96] [--overlap 0.25]
[--amp off|bfloat16] [--spacing 1]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _brats_case(folder: Path):
    from SymmetryAwareCore.io.image import Image
    from SymmetryAwareCore.io.writers import write_nifti
    from SymmetryAwareCore.phantoms import make_subject

    phantom = make_subject(11, "glioma", "mri", spacing=1.0)
    array = phantom.image.array
    target = (240, 240, 155)
    out = np.zeros((array.shape[0],) + target, np.float32)
    src, dst = [], []
    for n, t in zip(array.shape[1:], target):
        if n >= t:
            a = (n - t) // 2
            src.append(slice(a, a + t))
            dst.append(slice(0, t))
        else:
            a = (t - n) // 2
            src.append(slice(0, n))
            dst.append(slice(a, a + n))
    out[(slice(None), *dst)] = array[(slice(None), *src)]
    # Shift the affine so the kept voxels stay where they were.
    offset = np.array([s.start - d.start for s, d in zip(src, dst)], np.float64)
    affine = phantom.image.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        path = folder / f"brats_like_{name}.nii.gz"
        write_nifti(Image(out[c], affine), path)
        paths.append(path)
    return out, paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature-size", type=int, default=24)
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--spacing", type=float, default=1.0, help="model spacing in mm (the card's)")
    parser.add_argument("--amp", default="off", choices=("off", "bfloat16"))
    parser.add_argument("--skip-monai-full", action="store_true")
    args = parser.parse_args()

    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SwinUNETR

    from SymmetryAwareCore.inference.model_source import LoadedModel, standin_card
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, brain_box, segment_case
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, feature {args.feature_size}, "
          f"ROI {args.roi}, overlap {args.overlap}, model spacing {args.spacing} mm, amp {args.amp}")
    tmp = Path(tempfile.mkdtemp(prefix="sa_bench_"))
    volume, paths = _brats_case(tmp)
    print(f"case: {volume.shape}")
    roi = (args.roi,) * 3
    amp_dtype = torch.bfloat16 if args.amp == "bfloat16" else None
    rows = []

    monai_nets = {flash: SwinUNETR(in_channels=4, out_channels=3, feature_size=args.feature_size,
                                   use_flash_attention=flash).eval() for flash in (False, True)}
    monai_nets[True].load_state_dict(monai_nets[False].state_dict())
    x = torch.from_numpy((volume - volume.mean()) / (volume.std() + 1e-6))[None]

    def run_monai(tensor, name, flash=False):
        _reset_peak()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_dtype is not None):
            sliding_window_inference(tensor, roi, 1, monai_nets[flash], overlap=args.overlap, mode="gaussian")
        rows.append((name, time.perf_counter() - start, _peak_mib()))
        print(f"  {name}: {rows[-1][1]:.1f} s, peak {rows[-1][2]:.0f} MiB", flush=True)

    if not args.skip_monai_full:
        run_monai(x, "MONAI SwinUNETR, whole volume")
        run_monai(x, "MONAI SwinUNETR (use_flash_attention), whole volume", flash=True)
    box = brain_box(volume)
    run_monai(x[(slice(None), slice(None), *box)].contiguous(), "MONAI SwinUNETR, brain box")

    card = standin_card()
    card.name = "benchmark"
    card.kwargs = {"in_channels": 4, "out_channels": 3, "feature_size": args.feature_size}
    card.preprocessing = {"spacing": [args.spacing] * 3, "roi_size": list(roi), "normalisation": "zscore-nonzero"}
    model = LoadedModel(SASwinUNETR(4, 3, feature_size=args.feature_size).eval(), card, "benchmark")
    options = SegmentOptions(device="cpu", overlap=args.overlap, sw_batch_size=1, amp="bfloat16" if amp_dtype else "off", overwrite=True)
    _reset_peak()
    start = time.perf_counter()
    result = segment_case(paths, tmp / "out", model, options)
    rows.append(("SA-Swin segment_case, end to end", time.perf_counter() - start, _peak_mib()))
    print(f"  {rows[-1][0]}: {rows[-1][1]:.1f} s, peak {rows[-1][2]:.0f} MiB", flush=True)
    print(f"  stages: {result.report['runtime_s']}; windows {result.report['inference']['windows']}, "
          f"encoded crops {result.report['inference']['encoded_crops']}")

    print("\n| run | time (s) | peak RSS (MiB) | time ratio | memory ratio |")
    print("|---|---|---|---|---|")
    ref_t, ref_m = rows[0][1], rows[0][2]
    for name, t, m in rows:
        print(f"| {name} | {t:.1f} | {m:.0f} | {t / ref_t:.2f} | {m / ref_m:.2f} |")


if __name__ == "__main__":
    main()
