"""Linear probe: do the frozen encoder's features carry the patient / healthy signal?

Reads the stage-3 cache that ``Training/scripts/train_symmetry_head.py`` writes
(``<run>/stem3_cache.pt``: per training scan the Swin stage-3 output of the whole scan and of its
left-right flip, ``(2, 8F, 4, 4, 4)``) and the run's datalist. Per scan, the mirror difference
``d = |h(x) - flip(h(flip x))|`` (the flip's map flipped back, so each token faces its own
region's mirror) is summarised by its per-channel mean and maximum over tokens; an L2-regularised
logistic regression (standardised features, ``--folds``-fold stratified cross-validation, torch
L-BFGS) predicts patient vs healthy. Prints the cross-validated AUC per regularisation
strength, and the AUC of the unlearned norm of the mean difference.

Run (PYTHONPATH=.:Training)::

    python Training/scripts/probe_symmetry_features.py --run runs/sah_head --datalist datasets/sah/datalist.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from SymmetryAwareTraining.metrics import rank_auc as auc  # the one rank AUC


def fit_predict(x_train, y_train, x_test, l2: float) -> np.ndarray:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = torch.tensor((x_train - mean) / std, dtype=torch.float64)
    b = torch.tensor(y_train, dtype=torch.float64)
    w = torch.zeros(a.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = a @ w[:-1] + w[-1]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, b) + l2 * (w[:-1] ** 2).sum() / len(b)
        loss.backward()
        return loss

    opt.step(closure)
    t = torch.tensor((x_test - mean) / std, dtype=torch.float64)
    return (t @ w[:-1] + w[-1]).detach().numpy()


def main(argv=None) -> int:
    from SymmetryAwareTraining.datalist import load_datalist, status_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    entries = load_datalist(args.datalist).all_entries()
    cache = torch.load(args.run / "stem3_cache.pt")
    features, labels = [], []
    for i, h in sorted(cache.items()):
        d = (h[0] - torch.flip(h[1], dims=(1,))).abs()  # (C, 4, 4, 4); dim 1 is left-right
        features.append(torch.cat([d.mean((1, 2, 3)), d.amax((1, 2, 3))]).numpy())
        labels.append(status_of(entries[i]))
    x, y = np.array(features, np.float64), np.array(labels)
    rng = np.random.default_rng(args.seed)
    fold = np.empty(len(y), int)
    for cls in (0, 1):  # stratified folds
        idx = rng.permutation(np.nonzero(y == cls)[0])
        fold[idx] = np.arange(len(idx)) % args.folds
    print(f"{len(y)} scans ({int((y == 1).sum())} patient, {int((y == 0).sum())} healthy), {x.shape[1]} features, "
          f"{args.folds}-fold cross-validation")
    for l2 in (100.0, 10.0, 1.0):
        score = np.empty(len(y))
        for k in range(args.folds):
            test = fold == k
            score[test] = fit_predict(x[~test], y[~test], x[test], l2)
        print(f"  L2 {l2:g}: cross-validated AUC patient vs healthy {auc(score[y == 1], score[y == 0]):.3f}")
    norm = np.linalg.norm(x[:, : x.shape[1] // 2], axis=1)
    print(f"  unlearned: norm of the mean mirror difference, AUC {auc(norm[y == 1], norm[y == 0]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
