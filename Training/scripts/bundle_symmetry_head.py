"""Ship a trained symmetry-aware head (SASwinPretrainer) beside the bundled segmentation model.

1. Loads the pretraining run's model (``<run>/model.json``, checked by hash and keys).
2. Writes it as float16 safetensors beside the model (``save_model``; inference runs in
   float32) with a card: the model's channels, the run's preprocessing, what it was trained on,
   and the measured zero-shot figures of ``--benchmark`` (the JSONs that
   ``Benchmarks/asymmetry_benchmark.py --json`` wrote for THIS run's head, float32; the
   float16 file's scores are compared with the run's on ``--check`` stored cases).
3. Refuses to ship unless the benchmark's per-scan AUC of the ``sah`` row, unilateral lesions
   at contrast 1 against all healthy scans, has a 95 % CI lower bound above 0.5.
4. Names the head in the segmentation model's card (``extra.symmetry_head``), so
   ``segment`` writes the zero-shot score and map. The model card's SHA-256 covers its
   weights file only, which is not touched.

``--add-to HEAD_CARD`` instead adds figures measured on scans prepared with another bias-field
correction than the head's training scans (``asymmetry_benchmark.py --bias-correction n4`` with
that head) to its card's ``metrics.zero_shot_by_bias_correction``, weights untouched, under
the same bar (contrast-1 AUC's lower bound above 0.5); ``report.json``'s note then points there::

    python Training/scripts/bundle_symmetry_head.py --add-to SymmetryAwareCore/data/models/glioma_phantom_sah_f12.json \
        --benchmark runs/asym_n4/low.json runs/asym_n4/c1.json --version 0.1.1

Run:
    python Training/scripts/bundle_symmetry_head.py --run runs/sah_head \\
        --benchmark runs/asym/sah_hard.json runs/asym/sah_low.json runs/asym/sah_c1.json \\
        --model SymmetryAwareCore/data/models/glioma_phantom_saswin_f12.json \\
        --output SymmetryAwareCore/data/models/glioma_phantom_sah_f12.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def sah_figures(benchmark: dict) -> dict:
    """The ``sah`` rows of a benchmark summary, by hard-case group and contrast."""
    out: dict = {}
    for row in benchmark["table"]:
        if row["method"] != "sah":
            continue
        out.setdefault(row["group"], {})[f"{row['contrast']:g}"] = {
            "scan_auc": round(row["auc"], 3), "scan_auc_ci95": [round(v, 3) for v in row["auc_ci"]],
            "scan_auc_vs_asymmetric": round(row["auc_vs_asymmetric"], 3),
            "scan_auc_vs_asymmetric_ci95": [round(v, 3) for v in row["auc_vs_asymmetric_ci"]],
            "voxel_auc": None if row["local_auc"] is None else round(row["local_auc"], 3),
            "n_lesion": row["n_lesion"], "n_healthy": row["n_healthy"], "n_asymmetric": row["n_asymmetric"]}
    return out


def merged_figures(paths) -> tuple:
    """``(figures, first benchmark)`` of ``--benchmark`` files, rows merged (later files win),
    refused unless the contrast-1 AUC's 95 % lower bound is above 0.5."""
    try:
        benchmarks = [json.loads(Path(b).read_text()) for b in paths]
        figures: dict = {}
        for b in benchmarks:
            for group, rows in sah_figures(b).items():
                figures.setdefault(group, {}).update(rows)
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"error: --benchmark must be asymmetry_benchmark.py --json files ({type(error).__name__}: {error})")
    main_row = figures.get("unilateral", {}).get("1")
    if main_row is None:
        sys.exit(f"error: {[str(p) for p in paths]} has no sah row for unilateral lesions at contrast 1")
    if not main_row["scan_auc_ci95"][0] > 0.5:
        sys.exit(f"error: not shipped: zero-shot scan AUC at contrast 1 is {main_row['scan_auc']} "
                 f"(95 % CI {main_row['scan_auc_ci95']}), not clearly above chance")
    return figures, benchmarks


def add_figures(card_path: Path, paths, version=None) -> int:
    """Add figures measured on another bias correction to an existing head card (weights untouched)."""
    from SymmetryAwareCore.inference.zero_shot import MEASURED_APART_KEY
    from SymmetryAwareCore.models.model_card import read_card, update_card

    from SymmetryAwareCore.contract import card_bias_correction

    card = read_card(card_path)
    own = card_bias_correction({"preprocessing": card.preprocessing})
    figures, benchmarks = merged_figures(paths)
    corrections = {card_bias_correction(b) for b in benchmarks}
    if len(corrections) != 1 or own in corrections:
        sys.exit(f"error: --benchmark files must share one bias correction other than the head's own ({own}), "
                 f"got {sorted(corrections)}")
    if any(b.get("pretrainer_sha256") != card.sha256 for b in benchmarks):
        sys.exit(f"error: --benchmark files were not all measured with this head (SHA-256 {card.sha256})")
    correction = corrections.pop()
    b0 = benchmarks[0]
    evaluated_on = (f"Benchmarks/asymmetry_benchmark.py --bias-correction {correction}, the same held-out "
                    f"phantom seeds (benchmark seed {b0['args']['seed']}, variation {b0['args']['variation']:g}) "
                    "with every scan prepared with that correction first")

    def change(data: dict) -> None:
        if version:
            data["version"] = version
        data.setdefault("metrics", {}).setdefault(MEASURED_APART_KEY, {})[correction] = dict(
            figures, evaluated_on=evaluated_on)

    update_card(card_path, change)
    print(f"{card_path.name}: metrics.{MEASURED_APART_KEY}.{correction} added; version {read_card(card_path).version}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--add-to", type=Path, help="an existing head card: add --benchmark figures measured on "
                        "another bias correction, weights untouched (no --run, --model, --output)")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--benchmark", required=True, type=Path, nargs="+",
                        help="asymmetry_benchmark.py --json file(s) of this head; rows merged, later files win")
    parser.add_argument("--check", type=Path, nargs="*", default=[],
                        help="stored prepared cases (asymmetry_benchmark.py --prepared *.npz) to compare float16 and run scores on")
    parser.add_argument("--model", type=Path, help="the segmentation model card to attach the head to")
    parser.add_argument("--output", type=Path, help="the head's .safetensors, beside --model")
    parser.add_argument("--name", default="glioma-phantom-sah-f12")
    parser.add_argument("--version", help="the card's version (default 0.1.0 when bundling; --add-to keeps the card's own)")
    parser.add_argument("--training-data", help="the card's training_data text")
    args = parser.parse_args(argv)
    if args.add_to is not None:
        from SymmetryAwareCore.errors import InputError

        try:
            return add_figures(args.add_to, args.benchmark, args.version)
        except InputError as error:
            sys.exit(f"error: {error}")
    missing = [f"--{n.replace('_', '-')}" for n in ("run", "model", "output", "training_data") if getattr(args, n) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")

    from SymmetryAwareCore.inference.zero_shot import SYMMETRY_HEAD_KEY
    from SymmetryAwareCore.models.model_card import ModelCard, load_model, read_card, save_model
    from SymmetryAwareCore.preprocessing import Preprocessing
    from SymmetryAwareTraining.modelcard import to_shipping_precision

    if args.output.parent.resolve() != args.model.parent.resolve():
        sys.exit("error: --output must lie beside --model (the card names the head by file name)")
    figures, benchmarks = merged_figures(args.benchmark)
    benchmark = benchmarks[0]
    network, run_card = load_model(args.run / "model.json")
    model_card = read_card(args.model)
    spec = Preprocessing.from_card(run_card.preprocessing, source=str(args.run))
    config = run_card.extra.get("training", {}).get("config", {})
    card = ModelCard(
        name=args.name,
        description=(
            "Symmetry-aware head (SASwinPretrainer, feature size "
            f"{network.init_kwargs['feature_size']}) for the zero-shot asymmetry score (1 - cos(z, z~)) / 2 of "
            "a whole scan and its left-right mirror, beside the glioma segmentation model. Trained on "
            "synthetic phantoms only; NOT FOR CLINICAL USE. How well it separates lesion scans from "
            "healthy ones on held-out phantoms, per contrast level: metrics.zero_shot."
        ),
        channels=model_card.channels,
        modality=model_card.modality,
        preprocessing=spec.to_card(),
        version=args.version or "0.1.0",
        licence="Apache-2.0",
        training_data=args.training_data,
        metrics={"zero_shot": figures, "evaluated_on": (
            "Benchmarks/asymmetry_benchmark.py, held-out phantom seeds (benchmark seed "
            f"{benchmark['args']['seed']}, variation {benchmark['args']['variation']:g}), per-scan AUC lesion vs "
            "healthy with 95 % bootstrap CIs, through the function report.json uses")},
        extra={"task": "pretraining", "training_run": config, "zero_shot_input": "brain box resized to roi_size"},
    )
    import copy

    from SymmetryAwareCore.inference.zero_shot import SymmetryHead, zero_shot_asymmetry

    reference = copy.deepcopy(network).float().eval()
    card_path = save_model(to_shipping_precision(network), args.output, card)
    shipped, _ = load_model(card_path)  # what users will load: hash and keys checked
    roi = tuple(spec.roi_size)
    for case in args.check:
        import numpy as np

        with np.load(case) as z:
            cropped = z["cropped"]
        a = zero_shot_asymmetry(cropped, SymmetryHead(reference, roi, {}))[0]
        b = zero_shot_asymmetry(cropped, SymmetryHead(shipped.float().eval(), roi, {}))[0]
        print(f"{case.name}: run {a:.5f} shipped float16 {b:.5f}")
    data = json.loads(args.model.read_text())
    data.setdefault("extra", {})[SYMMETRY_HEAD_KEY] = card_path.name
    args.model.write_text(json.dumps(data, indent=2) + "\n")
    read_card(args.model)
    print(f"wrote {args.output} and {card_path.name}; {args.model.name} extra.{SYMMETRY_HEAD_KEY} = {card_path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
