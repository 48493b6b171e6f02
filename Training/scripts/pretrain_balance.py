"""Measure each pretraining task's encoder gradient norm and print balanced loss weights.

At initialisation the four proxy losses steer the encoder very unequally (this project
measured rotation 18.9, symmetry 10.0, contrastive 0.53, inpainting 0.22 with the authors'
setup), so with gradient clipping only the two largest train anything. This builds the
run's model and data exactly as ``symmetryaware-train pretrain`` would (same config, same
init checkpoint, same dataset), takes ``--batches`` batches, measures the gradient norm of
each UNWEIGHTED task loss with respect to the encoder (``swinViT.*``)
(:func:`SymmetryAwareTraining.tasks.pretrain_gradient_norms`), and prints the weights
``w_t = total / (4 g_t)`` (:func:`SymmetryAwareCore.models.losses.balanced_weights`) as
``--set`` overrides and YAML. With ``--check`` it also prints the weighted norms the
config's current weights give.

Run (from the repository root, PYTHONPATH=.:Training)::

    OMP_NUM_THREADS=1 python Training/scripts/pretrain_balance.py --config Training/configs/sah_pretrain.yaml --batches 3
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    from SymmetryAwareCore.errors import InputError
    from SymmetryAwareCore.models.losses import balanced_weights
    from SymmetryAwareTraining.config import load_config
    from SymmetryAwareTraining.engine import collate
    from SymmetryAwareTraining.tasks import PretrainTask, pretrain_gradient_norms

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--total", type=float, default=1.0, help="norm bound of the weighted sum (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write norms and weights here")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        torch.manual_seed(args.seed)
        task = PretrainTask(config)
        model = task.build_model()
        model.train()
        dataset = task.train_dataset()
        b = config.data.batch_size
        batches = [collate([dataset[(0, (k * b + j) % len(dataset))] for j in range(b)]) for k in range(args.batches)]
        norms = pretrain_gradient_norms(model, task, batches)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    weights = balanced_weights(norms, args.total)
    p = config.pretrain
    current = {"rotation": p.rotation_weight, "contrastive": p.contrastive_weight,
               "inpainting": p.inpainting_weight, "symmetry": p.symmetry_weight}
    share = {k: current[k] * norms[k] for k in norms}
    print(f"encoder gradient norms at these weights' init, unweighted, mean of {args.batches} batch(es) of "
          f"{b * task.supervised_per_item} scans:")
    for k in norms:
        print(f"  {k:12s} g = {norms[k]:.4g}   current weight {current[k]:g} -> weighted {share[k]:.4g} "
              f"({100 * share[k] / sum(share.values()):.1f} % of the sum of norms)   balanced weight {weights[k]:.4g}")
    print("overrides: " + " ".join(f"--set pretrain.{k}_weight={weights[k]:.4g}" for k in weights))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"norms": norms, "current_weights": current, "balanced_weights": weights,
                       "batches": args.batches, "scans_per_batch": b * task.supervised_per_item}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
