"""Turn a finished fine-tuning run into the project's bundled model, with measured metrics.

1. Loads the run's model (``<run>/model.json``, checked by hash and keys).
2. Writes it as float16 safetensors (half the size; inference runs in float32) with a full
   model card: channels and their file-name patterns, preprocessing, region postprocessing,
   label names and colours, training data, limits.
3. Segments every case of the held-out fold with the SHIPPED file through the product's own
   pipeline (``segment_case``: alignment, mirror-paired windows, mapping back to the input's
   grid) and scores Dice and HD95 per region with ``monai.metrics`` against the phantoms'
   true labels; the summary goes into the card's ``metrics``.

Run:
    python Training/scripts/bundle_model.py --run runs/bundled_f12 \
        --datalist datasets/glioma2mm/datalist.json --fold 0 \
        --output SymmetryAwareCore/data/models/glioma_phantom_saswin_f12.safetensors
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def _saca_text(network) -> str:
    """Where the network has SACA, in words: the attention maps come from the finest stage."""
    stages = list(getattr(network, "saca_stages", ()))
    if not stages:
        return "no SACA; the mirrored counterpart as input channels" if getattr(network, "counterpart_channels", False) \
            else "no SACA"
    if stages == [4]:
        return "SACA at the bottleneck"
    names = ", ".join(str(s) for s in stages[:-1]) + f" and {stages[-1]}" if len(stages) > 1 else str(stages[0])
    return f"SACA at stages {names}; attention maps from stage {min(stages)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--name", default="glioma-phantom-saswin-f12")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--training-data", default="", help="the card's training_data text (default: one phantom set)")
    parser.add_argument("--note", default="", help="appended to the card's training_data (e.g. how it was initialised)")
    parser.add_argument("--default", action="store_true",
                        help='mark the card "default": true (what `segment` runs without --model); refused when '
                             "another card in the output folder is marked")
    parser.add_argument("--symmetry-head", default="",
                        help="card file name of a bundled symmetry head beside the output, named in extra.symmetry_head")
    parser.add_argument("--also-scored", action="append", default=[], metavar="NAME=FILE",
                        help="a Benchmarks/heldout_glioma.py result of THIS model on another held-out set; its "
                             "summary goes into metrics.also_scored.NAME (repeatable)")
    parser.add_argument("--bias-correction", choices=("none", "n4"), default=None,
                        help="the card's preprocessing.bias_correction, when it is to differ from the run's (a "
                             "model trained without N4 shipped with N4 first, as measured); default: the run's")
    args = parser.parse_args()
    also_scored = {}
    for item in args.also_scored:
        name, _, path = item.partition("=")
        if not name or not Path(path).is_file():
            parser.error(f"--also-scored {item}: give NAME=FILE with an existing file")
        also_scored[name] = Path(path)
    if args.default:
        marked = [p.name for p in args.output.parent.glob("*.json")
                  if p != args.output.with_suffix(".json") and json.loads(p.read_text()).get("default")]
        if marked:
            parser.error(f"{', '.join(marked)} is already marked default; unmark it first")
    if args.symmetry_head and not (args.output.parent / args.symmetry_head).is_file():
        parser.error(f"--symmetry-head {args.symmetry_head}: no such card beside {args.output}")

    from SymmetryAwareCore.inference.model_source import LoadedModel, brats_card_fields
    from SymmetryAwareCore.inference.pipeline import SegmentOptions, segment_case
    from SymmetryAwareCore.models.model_card import ModelCard, load_model, save_model
    from SymmetryAwareCore.preprocessing import Preprocessing
    from SymmetryAwareTraining.datalist import load_datalist
    from SymmetryAwareTraining.metrics import labels_to_regions, segmentation_metrics, summarise
    from SymmetryAwareTraining.modelcard import to_shipping_precision

    network, run_card = load_model(args.run / "model.json")
    config = run_card.extra.get("training", {}).get("config", {})
    steps = config.get("train", {}).get("steps")
    run_spec = Preprocessing.from_card(run_card.preprocessing, source=str(args.run))
    if args.bias_correction is not None:
        run_spec = run_spec.replace(bias_correction=args.bias_correction)  # refused for CT
    spacing = run_spec.spacing[0]
    card = ModelCard(
        name=args.name,
        description=(
            f"SA-Swin ({_saca_text(network)}, feature size {network.init_kwargs['feature_size']}) segmenting glioma-like lesions into "
            "necrotic core, oedema and enhancing tumour from T1, T1ce, T2 and FLAIR. Trained on synthetic "
            "brain phantoms only (MNI152 anatomy with simulated gliomas, random poses, bias and noise). "
            "NOT FOR CLINICAL USE: it has never seen a real tumour, and its figures below are on phantoms."
        ),
        # The run's own block, as training wrote it: the bundled model is prepared at
        # inference exactly as it was trained (refused here if the run's card lacks it),
        # bias correction excepted when --bias-correction says otherwise.
        preprocessing=run_spec.to_card(),
        version=args.version,
        licence="Apache-2.0",
        training_data=(args.training_data or (
            f"{args.datalist.parent.name}/{args.datalist.name}: synthetic glioma phantoms (symmetryaware phantom --kind glioma --spacing {spacing:g}), "
            f"folds other than {args.fold}; {steps} steps of 64^3 mirror-paired crops, batch 1, on 2 CPU cores"
        )) + (f"; {args.note}" if args.note else ""),
        extra={
            "training_run": config,
            "limits": f"synthetic training data; {spacing:g} mm; adult-brain anatomy of MNI152 only",
            **({"attention": {
                "saca_stages": list(network.saca_stages),
                "map_stage": network.attention_stage,
                "token_voxels": network.attention_token_stride,
                "token_mm": network.attention_token_stride * spacing,
            }} if getattr(network, "saca_stages", ()) else {}),
        },
        **brats_card_fields(),
    )
    save_model(to_shipping_precision(network), args.output, card)
    shipped_network, shipped_card = load_model(args.output)  # evaluate what users will load
    for path in also_scored.values():
        # Figures of other weights must not enter this card: checked before the long scoring,
        # and the pair just written is removed so that nothing half-made is left.
        scored = json.loads(path.read_text())
        scored_sha = (scored.get("model") or {}).get("sha256")
        scored_bias = scored.get("bias_correction") or None
        scored_bias = "n4" if scored_bias is True else (None if scored_bias is False else scored_bias)
        card_bias = None if run_spec.bias_correction == "none" else run_spec.bias_correction
        if scored_sha != shipped_card.sha256 or scored_bias != card_bias:
            args.output.unlink()
            args.output.with_suffix(".json").unlink()
            raise SystemExit(f"error: {path} scored weights {str(scored_sha)[:12]} with bias correction "
                             f"{scored_bias or 'none'}, not these ({shipped_card.sha256[:12]}) as the card prepares "
                             f"them ({card_bias or 'none'}); score the bundled file, then bundle again")
    shipped = LoadedModel(shipped_network, shipped_card, str(args.output))

    datalist = load_datalist(args.datalist)
    _, held_out = datalist.split(args.fold)
    per_case = {}
    work = Path(tempfile.mkdtemp(prefix="bundle_eval_"))
    root = args.datalist.parent
    for entry in held_out:
        case = entry.get("name") or entry.get("case")
        paths = [root / p for p in entry["image"]]
        start = time.perf_counter()
        result = segment_case(paths, work, shipped, SegmentOptions(device="auto", overview=False), case_id=case)
        pred = np.asarray(nib.load(str(result.files["labelmap"])).dataobj)
        truth_img = nib.load(str(root / entry["label"]))
        truth = np.asarray(truth_img.dataobj)
        voxel = np.linalg.norm(truth_img.affine[:3, :3], axis=0)
        metrics = segmentation_metrics(labels_to_regions(pred), labels_to_regions(truth), voxel)
        per_case[case] = metrics
        print(f"{case}: {metrics} ({time.perf_counter() - start:.1f} s)", flush=True)
    summary = summarise(per_case)
    card_path = args.output.with_suffix(".json")
    data = json.loads(card_path.read_text())
    data["metrics"] = {
        "evaluated_on": f"fold {args.fold} of {args.datalist.name}: {len(per_case)} held-out synthetic glioma phantoms, "
        "through segment_case with the shipped float16 weights",
        "summary": summary,
        "cases": per_case,
    }
    for name, path in also_scored.items():
        scored = json.loads(path.read_text())
        data["metrics"].setdefault("also_scored", {})[name] = {
            "file": path.name, "summary": scored["summary"],
            "false_positive_ml": {case: m["WT"]["false_positive_ml"] for case, m in scored["cases"].items()}}
    if args.default:
        data["default"] = True
    if args.symmetry_head:
        from SymmetryAwareCore.inference.zero_shot import SYMMETRY_HEAD_KEY

        data.setdefault("extra", {})[SYMMETRY_HEAD_KEY] = args.symmetry_head
    card_path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
