"""Turn a ``finetune-interactive`` run into the bundled interactive model, with its card.

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
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--name", default="interactive-glioma-saswin-f12")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--benchmark", type=Path, help="interactive_benchmark.py JSON of the shipped file: into metrics")
    args = parser.parse_args()

    from SymmetryAwareCore.inference.model_source import brats_card_fields
    from SymmetryAwareCore.interactive.session import card_interactive_block
    from SymmetryAwareCore.models.model_card import Label, ModelCard, load_model, save_model
    from SymmetryAwareCore.preprocessing import Preprocessing
    from SymmetryAwareTraining.checkpoint import load_latest
    from SymmetryAwareTraining.config import load_config
    from SymmetryAwareTraining.tasks import _card_common, build_model

    config = load_config(args.run / "config.yaml")
    if args.benchmark and args.output.with_suffix(".json").is_file():
        card_path = args.output.with_suffix(".json")
        data = json.loads(card_path.read_text())
        bench = json.loads(args.benchmark.read_text())
        data["metrics"] = {"evaluated_on": f"fold {bench['fold']} of {Path(bench['datalist']).name} (held out of "
                           "training), Benchmarks/interactive_benchmark.py with the shipped float16 weights",
                           "max_clicks": bench["max_clicks"],
                           **{name: c["summary"] for name, c in bench["conditions"].items()}}
        card_path.write_text(json.dumps(data, indent=2) + "\n")
        print(json.dumps(data["metrics"], indent=2))
        return
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
        version=args.version,
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


def vars_deep(obj):
    import dataclasses

    return dataclasses.asdict(obj)


if __name__ == "__main__":
    main()
