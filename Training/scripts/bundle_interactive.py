"""Turn a ``finetune-interactive`` run into the bundled interactive model, with its card.

A ``SymmetryAwareTraining.click_refiner`` run (``<run>/refiner.pt``) becomes a two-stage
model: the refiner's weights (float32, 0.6 MB) with a card naming the backbone card, which must
lie beside the output with the weights the refiner was trained on (SHA-256 checked).
A ``finetune-interactive`` run (one-stage promptable SA-Swin):

1. Takes the run's weights: ``<run>/model.json`` when the run finished, else the last
   checkpoint (``<run>/checkpoints/last.pt``, a run stopped on time), rebuilt from the run's
   own ``config.yaml`` (one model definition: the training task's ``build_model`` path).
2. Writes them as float16 safetensors with a card: channels and patterns, preprocessing (the
   run's), binary postprocessing, the guidance encoding and click protocol (``extra.interactive``),
   training data and steps, limits, "not for clinical use".
3. With ``--benchmark``, copies the summary of ``Benchmarks/interactive_benchmark.py`` (run
   on the SHIPPED file) into the card's ``metrics``.

    python Training/scripts/bundle_interactive.py --run runs/interactive_glioma \
        --output SymmetryAwareCore/data/models/interactive_glioma_saswin_f12.safetensors
    python Training/scripts/bundle_interactive.py --run runs/interactive_glioma \
        --output SymmetryAwareCore/data/models/interactive_glioma_saswin_f12.safetensors \
        --benchmark interactive_benchmark.json      # after benchmarking the shipped file
    python Training/scripts/bundle_interactive.py \
        --output SymmetryAwareCore/data/models/interactive_glioma_saswin_f12.safetensors \
        --bias-correction n4 --version 0.3.0 --benchmark glioma.json --benchmark hh5.json --benchmark hh3.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from SymmetryAwareCore.preprocessing.spec import BIAS_CORRECTIONS

import torch


def _sets(paths) -> dict:
    """Per held-out set: the benchmark's settings and every condition's summary (and pairs)."""
    sets = {}
    for path in paths:
        try:
            bench = json.loads(Path(path).read_text())
            sets[bench.get("held_out") or f"fold {bench['fold']} of {bench['datalist']}"] = {
                "max_clicks": bench["max_clicks"], "threads": bench.get("threads"),
                "load_average_at_start": bench.get("load_average_at_start"),
                **{name: c["summary"] for name, c in bench["conditions"].items()},
                **({"paired": bench["paired"]} if bench.get("paired") else {})}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise SystemExit(f"error: {path}: not an interactive_benchmark.py result ({type(error).__name__}: {error})")
    return sets


EVALUATED_WITH = ("Benchmarks/interactive_benchmark.py with the shipped weights, whole tumour, the simulated "
                  "clicker (SymmetryAwareCore.interactive.clicker), on the input grid")
BIAS_METRICS_KEY = "bias_correction_{}"
"""The card's ``metrics`` key of the figures that decided the bias correction it asks for."""


def update_shipped_card(args) -> None:
    """The card's own fields change, not the weights (their SHA-256 stays valid): its measured
    figures, or the bias correction it asks for with the figures that decided it (measured with
    ``interactive_benchmark.py --also-bias-correction``: each case without and with N4)."""
    from SymmetryAwareCore.contract import card_bias_correction
    from SymmetryAwareCore.models.model_card import update_card

    def change(data: dict) -> None:
        if args.version:
            data["version"] = args.version
        metrics = data.setdefault("metrics", {})
        if args.bias_correction is None:
            metrics.update(evaluated_with=EVALUATED_WITH, sets=_sets(args.benchmark))  # other figures kept
            return
        before = card_bias_correction(data)
        pre = data.setdefault("preprocessing", {})
        if args.bias_correction == "none":
            pre.pop("bias_correction", None)
        else:
            pre["bias_correction"] = args.bias_correction
        if args.benchmark:
            metrics[BIAS_METRICS_KEY.format(args.bias_correction)] = {
                "evaluated_with": EVALUATED_WITH + f", each case loaded without and with bias correction "
                f"{args.bias_correction} (interactive_benchmark.py --also-bias-correction), paired by case",
                "sets": _sets(args.benchmark)}
        if "sets" in metrics and before != args.bias_correction:
            metrics["sets_prepared_with"] = (f"bias correction {before}: metrics.sets were measured before this card "
                                             f"asked for {args.bias_correction}")

    card = update_card(args.output.with_suffix(".json"), change)
    print(json.dumps({"version": card.version, "preprocessing": card.preprocessing,
                      "metrics": sorted(card.metrics)}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="the training run to bundle")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--name", default="interactive-glioma-saswin-f12")
    parser.add_argument("--version", help="the card's version (default 0.1.0 when bundling; an updated card keeps its own)")
    parser.add_argument("--benchmark", type=Path, action="append",
                        help="interactive_benchmark.py JSON of the shipped file (repeatable): into the card's metrics")
    parser.add_argument("--bias-correction", choices=BIAS_CORRECTIONS,
                        help="with an existing card: set its preprocessing.bias_correction (what load does when "
                        "the request does not say); --benchmark files (run with --also-bias-correction) then go to "
                        "metrics.bias_correction_<value>, the card's other figures kept")
    args = parser.parse_args()

    from SymmetryAwareCore.inference.model_source import brats_card_fields
    from SymmetryAwareCore.interactive.session import card_interactive_block
    from SymmetryAwareCore.models.model_card import Label, ModelCard, load_model, save_model
    from SymmetryAwareCore.preprocessing import Preprocessing
    from SymmetryAwareTraining.checkpoint import load_latest
    from SymmetryAwareTraining.config import load_config
    from SymmetryAwareTraining.tasks import _card_common, build_model

    if args.bias_correction == "none" and args.benchmark:
        parser.error("--benchmark with --bias-correction holds N4 comparisons (interactive_benchmark.py "
                     "--also-bias-correction); give --bias-correction none without --benchmark")
    if args.output.with_suffix(".json").is_file() and (args.benchmark or args.bias_correction):
        # The shipped card's figures or bias correction change (as before: --run is not re-bundled).
        from SymmetryAwareCore.errors import InputError

        try:
            update_shipped_card(args)
        except InputError as error:
            parser.exit(1, f"error: {error}\n")
        return
    if args.run is None:
        parser.error("--run is required to bundle (without it: --benchmark or --bias-correction update an "
                     "existing card given as --output)")
    if args.bias_correction is not None:
        parser.error("--bias-correction updates an existing card (the one --output names); a newly bundled "
                     "card takes the run's preprocessing")
    if (args.run / "refiner.pt").is_file():
        bundle_refiner(args)
        return
    config = load_config(args.run / "config.yaml")
    if (args.run / "model.json").is_file():
        network, _ = load_model(args.run / "model.json")
        source, step = "model.json (run finished)", config.train.steps
    else:
        state, path = load_latest(args.run / "checkpoints")
        network = build_model(config.model.name, config.model.kwargs)
        network.load_state_dict(state["model"])
        source, step = f"{path.name} (run stopped at step {state['step']} of {config.train.steps})", int(state["step"])
    common = _card_common(config, "interactive")
    spec = Preprocessing.from_card(common["preprocessing"])
    i = config.interactive
    card = ModelCard(
        name=args.name,
        description=(
            "Promptable SA-Swin (SACA at the bottleneck, feature size 12) for INTERACTIVE whole-tumour "
            "segmentation from T1, T1ce, T2 and FLAIR plus guidance channels (positive clicks, negative clicks, "
            "box); the counterpart (mirror window) gets empty guidance. With no guidance it is an automatic "
            "whole-tumour model (the automatic first pass). Trained on synthetic brain phantoms only. NOT FOR "
            "CLINICAL USE: it has never seen a real tumour, and its figures are on phantoms."
        ),
        preprocessing=spec.to_card(),
        version=args.version or "0.1.0",
        licence="Apache-2.0",
        training_data=(
            f"{Path(config.data.datalist).parent.name}/{Path(config.data.datalist).name}: synthetic glioma phantoms "
            f"(3 mm and 2 mm), folds other than {config.data.fold}; initialised from glioma-phantom-saswin-f12 0.3.0 "
            f"(guidance weights zero, output = its WT channel); {step} steps of simulated-click training "
            f"(finetune-interactive, Training/configs/interactive_glioma.yaml), 64^3 crops, batch 1, 1 CPU thread"
        ),
        extra={
            "interactive": card_interactive_block(i.click_sigma, i.region),
            "training_run": {"config": json.loads(json.dumps(vars_deep(config))), "weights": source,
                             "click_training": f"first click at the deepest point; 0..{i.max_rounds} no-gradient "
                             f"rounds with the clicker's next click, then a supervised pass; {i.no_click_fraction:g} "
                             f"of samples without guidance, {i.box_fraction:g} with a box"},
            "limits": "synthetic training data only; whole tumour of glioma-like lesions; 3 mm frame, so structures "
                      "under ~6 mm are not resolved; one 64^3 window per click; not for clinical use",
        },
        channels=brats_card_fields()["channels"],
        modality="MRI",
        labels=[Label(1, "lesion", (250, 120, 40))],
        postprocessing={"activation": "sigmoid", "regions": {"lesion": [1]}, "threshold": 0.5},
    )
    network = network.half()
    for module in network.modules():
        index = getattr(module, "relative_position_index", None)
        if isinstance(index, torch.Tensor) and index.dtype == torch.int64 and int(index.max()) < 2**15:
            module.relative_position_index = index.to(torch.int16)
    path = save_model(network, args.output, card)
    load_model(args.output)  # what users will load: hash and keys checked
    print(f"wrote {path} ({args.output.stat().st_size / 1e6:.1f} MB) from {source}")


def bundle_refiner(args) -> None:
    """A two-stage model: the click refiner of ``SymmetryAwareTraining.click_refiner`` (``<run>/refiner.pt``),
    its card naming the backbone card it was trained on, which must lie beside the output."""
    from SymmetryAwareCore.inference.model_source import resolve_model
    from SymmetryAwareCore.interactive.guidance import DEFAULT_SIGMA
    from SymmetryAwareCore.interactive.session import BACKBONE_KEY, BACKBONE_SHA_KEY, card_interactive_block
    from SymmetryAwareCore.models.click_refiner import ClickRefiner
    from SymmetryAwareCore.models.model_card import Label, ModelCard, load_model, save_model

    state = torch.load(args.run / "refiner.pt", map_location="cpu", weights_only=False)
    run_args = json.loads((args.run / "args.json").read_text())
    network = ClickRefiner(**state["kwargs"])
    network.load_state_dict(state["model"])
    trained_with = resolve_model(run_args["backbone"])
    # The card the refiner will name must lie beside the output and hold the same weights.
    backbone_card = args.output.parent / Path(trained_with.source).name
    if not backbone_card.is_file():
        raise SystemExit(f"copy the backbone card and weights ({Path(trained_with.source).name}) beside {args.output}")
    backbone = resolve_model(str(backbone_card))
    if backbone.card.sha256 != trained_with.card.sha256:
        raise SystemExit(f"{backbone_card} holds other weights than the backbone the refiner was trained with")
    card = ModelCard(
        name=args.name,
        description=(
            "Two-stage interactive SA-Swin for whole-tumour segmentation from T1, T1ce, T2 and FLAIR with clicks "
            f"and a box. Stage 1 (once per scan): the automatic SA-Swin {backbone.card.name} {backbone.card.version} "
            "(SACA against the mirrored counterpart) gives its region probabilities on the brain box. Stage 2 (each "
            "click): a small 3D U-Net (MONAI UNet) on one 64^3 window takes the image, its mirrored counterpart, "
            "those probabilities and the click guidance. Trained on synthetic brain phantoms only. NOT FOR CLINICAL "
            "USE: it has never seen a real tumour, and its figures are on phantoms."
        ),
        preprocessing=dict(backbone.card.preprocessing),
        version=args.version or "0.1.0",
        licence="Apache-2.0",
        training_data=(
            "lesion cases of " + ", ".join(Path(p).parent.name + "/" + Path(p).name for p in run_args["datalist"])
            + f" (fold {run_args['exclude_fold']} of each held out where folds exist): synthetic glioma phantoms at "
            "3 mm and 2 mm, standard contrast and lesion contrast 0.5 and 0.3 (variation 2); "
            f"{state['steps']} steps of simulated-click training of the refiner only (backbone frozen), batch "
            f"{run_args['batch']}, {run_args['crop']}^3 crops, 1 CPU thread (SymmetryAwareTraining.click_refiner)"
        ),
        extra={
            "interactive": {**card_interactive_block(run_args.get("sigma") or DEFAULT_SIGMA, "WT"),
                            "counterpart_guidance": "not used: the refiner takes the counterpart's image channels; "
                                                    "the backbone's counterpart is its own (no clicks)",
                            BACKBONE_KEY: backbone_card.name, BACKBONE_SHA_KEY: backbone.card.sha256,
                            "two_stage": "backbone probabilities once per scan (predict_box), refiner per click"},
            "training_run": {"args": run_args, "steps": state["steps"], "cases": len(state["cases"]),
                             "final_loss_mean_last_50": float(sum(state["history"][-50:]) / max(1, len(state["history"][-50:])))},
            "limits": "synthetic training data only; whole tumour of glioma-like lesions; 3 mm frame, so structures "
                      "under ~6 mm are not resolved; one 64^3 window per click; not for clinical use",
        },
        channels=list(backbone.card.channels),
        modality=backbone.card.modality,
        labels=[Label(1, "lesion", (250, 120, 40))],
        postprocessing={"activation": "sigmoid", "regions": {"lesion": [1]}, "threshold": 0.5},
    )
    path = save_model(network, args.output, card)
    load_model(args.output)  # what users will load: hash and keys checked
    print(f"wrote {path} ({args.output.stat().st_size / 1e6:.2f} MB), refiner of {state['steps']} steps")


def vars_deep(obj):
    import dataclasses

    return dataclasses.asdict(obj)


if __name__ == "__main__":
    main()
