"""Mirror-focus maps against a non-learned reference, on glioma phantoms.

For each phantom (3 mm, one-sided glioma, random pose): plane, symmetric frame, z-score
normalisation and the mirror-paired sliding window exactly as ``segment_case`` does them,
then, inside the head (voxels where a channel is non-zero):

- ``focus``: the mirror-focus map (``attention_maps.mirror_focus_map``, radius 1 token);
- ``diff``: the reference, ``mean_c |V_c(x) - V_c(mirror x)|`` of the normalised image;
- ``diff_tok``: the same, averaged over token-sized blocks (``uniform_filter`` of the
  token edge), i.e. at the map's own resolution.

It prints Pearson r(focus, diff), r(focus, diff_tok), the focus in the true lesion, in its
contralateral mirror region and in the rest of the head, the chance level, and AUCs for
"voxel is lesion" (against the rest of the head) of the focus and of the reference.
With ``--images`` it writes one PNG per phantom (axial slice through the lesion).

Usage::

    python Benchmarks/attention_benchmark.py --random --seeds 900 901 902
    python Benchmarks/attention_benchmark.py --checkpoint runs/x/checkpoints/last.pt --images docs/images
    python Benchmarks/attention_benchmark.py --constructed

``--constructed`` is not a learned model: random weights, with the finest SACA stage set by
``SACABlock.set_mirror_prior(sharpness=10, content=0.5)``, so that each token's attention
peaks at its own mirror token and otherwise follows content (the test double of
``Testing/test_inference_attention_phantom.py``). It shows what the maps look like for a
network that does attend to mirror positions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter

from SymmetryAwareCore.geometry.mirror import flip_lr
from SymmetryAwareCore.inference.attention_maps import chance_focus, head_mask, mirror_focus_map, point_attention_map
from SymmetryAwareCore.inference.model_source import LoadedModel, resolve_model, standin_card
from SymmetryAwareCore.inference.pipeline import SegmentOptions, model_preprocessing, predict_case
from SymmetryAwareCore.models import SASwinUNETR
from SymmetryAwareCore.phantoms import make_subject
from SymmetryAwareCore.preprocessing import prepare_image


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the voxels marked ``positive`` (the one rank AUC)."""
    from SymmetryAwareTraining.metrics import rank_auc

    scores, positive = np.asarray(scores), np.asarray(positive, bool)
    return rank_auc(scores[positive], scores[~positive])


def load_network(args) -> LoadedModel:
    """The network to measure, with a card saying how cases are prepared for it."""
    if args.model:
        return resolve_model(args.model)
    stages = tuple(int(s) for s in args.saca_stages.split(","))
    torch.manual_seed(args.weights_seed)
    net = SASwinUNETR(
        4, 3, feature_size=args.feature_size, saca_stages=stages,
        saca_position_encoding="learned" if args.constructed else None,
    )  # fmt: skip
    if args.constructed:
        net.saca[f"stage{min(stages)}"].set_mirror_prior(sharpness=10.0, content=0.5)
    if args.checkpoint:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "Training"))
        from SymmetryAwareTraining.checkpoint import load_checkpoint, load_model_weights

        load_model_weights(net, load_checkpoint(args.checkpoint)["model"], args.checkpoint, strict=True)
    card = standin_card()
    card.name = "attention-benchmark-network"
    card.preprocessing = {"spacing": [args.spacing] * 3, "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    return LoadedModel(net.eval(), card, "benchmark")


def one_case(model: LoadedModel, seed: int, spacing: float, images: Path | None, prefix: str = "attention_phantom") -> dict:
    # The phantom's own spacing; the model's card decides the frame it is prepared on
    # (the one preprocessing path: alignment, anti-aliasing, normalisation, brain box).
    phantom = make_subject(seed, "glioma", "mri", spacing=spacing, scenario="unilateral")
    prepared = prepare_image(phantom.image, model_preprocessing(model), label=phantom.label.array)
    options = SegmentOptions(device="cpu", overlap=0.25, sw_batch_size=2)
    prediction = predict_case(prepared, model, options)
    crop = prepared.cropped
    box = prepared.box
    result = prediction
    head = head_mask(crop)
    focus = mirror_focus_map(result.attention, mask=head)
    lesion = (prepared.cropped_label > 0) & head
    mirror = flip_lr(lesion) & ~lesion & head
    rest = head & ~lesion & ~mirror
    diff = np.abs(crop - flip_lr(crop, 1)).mean(axis=0)
    stride = result.attention.stride
    diff_tok = uniform_filter(diff, size=stride)
    f = focus[head]
    row = {
        "seed": seed,
        "r_diff": float(np.corrcoef(f, diff[head])[0, 1]),
        "r_diff_tok": float(np.corrcoef(f, diff_tok[head])[0, 1]),
        "focus_lesion": float(focus[lesion].mean()),
        "focus_mirror": float(focus[mirror].mean()),
        "focus_rest": float(focus[rest].mean()),
        "cv_head": float(f.std() / f.mean()),
        "chance": chance_focus(result.attention.grid),
        "auc_focus": _auc(f, lesion[head]),
        "auc_diff": _auc(diff[head], lesion[head]),
        "stride": stride,
    }
    if images is not None:
        centre = tuple(int(c) for c in np.round(np.argwhere(lesion).mean(0)))
        point = point_attention_map(result.attention, centre)
        _picture(crop[3], focus, diff, point, centre, images / f"{prefix}_{seed}.png", row)
    return row


def _picture(flair, focus, diff, point, centre, path: Path, row) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = centre[2]
    # Axial: rows = y reversed (anterior up), cols = x (the patient's right on the viewer's right is not
    # the radiological convention: here the left hemisphere, small x, is on the LEFT of the picture).
    show = lambda a: np.flipud(a[:, :, z].T)
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9), dpi=72)
    panels = [
        (flair, "FLAIR (aligned frame)", "gray", None),
        (focus, f"mirror focus (chance {row['chance']:.3f})", "inferno", (0, max(1e-6, float(focus.max())))),
        (diff, "|V - mirror V| (reference)", "viridis", None),
        (point.mass, "attention from + (x: its mirror)", "inferno", None),
    ]
    for ax, (a, title, cmap, lim) in zip(axes, panels):
        image = ax.imshow(show(a), cmap=cmap, vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1])
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    height = flair.shape[1]
    for ax in axes:
        ax.axvline((flair.shape[0] - 1) / 2.0, color="w", lw=0.5, ls="--")
    axes[3].plot(centre[0], height - 1 - centre[1], "c+", ms=8)
    axes[3].plot(point.mirror_voxel[0], height - 1 - point.mirror_voxel[1], "cx", ms=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="a training checkpoint (.pt) of SASwinUNETR(4, 3, ...)")
    weights.add_argument("--model", help="a model card or bundled model name (its own preprocessing and SACA stages)")
    weights.add_argument("--random", action="store_true", help="random weights (seeded)")
    weights.add_argument("--constructed", action="store_true", help="hand-set mirror-attending stage-2 SACA (not learned)")
    parser.add_argument("--saca-stages", default="2,4")
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--weights-seed", type=int, default=0, help="torch seed of the initial weights")
    parser.add_argument("--seeds", type=int, nargs="+", default=[900, 901, 902, 903])
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--images", type=Path, help="folder for one PNG per phantom")
    parser.add_argument("--image-prefix", default="attention_phantom", help="PNG names: <prefix>_<seed>.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net = load_network(args)
    keys = ["r_diff", "r_diff_tok", "focus_lesion", "focus_mirror", "focus_rest", "cv_head", "chance", "auc_focus", "auc_diff"]
    print("seed  " + "  ".join(f"{k:>12}" for k in keys))
    rows = []
    for seed in args.seeds:
        row = one_case(net, seed, args.spacing, args.images, args.image_prefix)
        rows.append(row)
        print(f"{seed:<5} " + "  ".join(f"{row[k]:12.4f}" for k in keys), flush=True)
    print("mean  " + "  ".join(f"{np.mean([r[k] for r in rows]):12.4f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
