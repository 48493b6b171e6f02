"""Non-learned baselines for the CT haemorrhage classifier's held-out fold (docs/models.md).

On each held-out case's prepared brain box (the training cache, the card's preparation): a voxel
mirror-difference score (99th percentile of the smoothed |x - flip(x)| over the head) and an
intensity score (99.9th percentile of the smoothed brain window over 0-80 HU tissue), each
scored by ROC AUC with the bundling script's bootstrap. Run from the repository root:

    python Training/scripts/ct_baselines.py
"""
import sys
from pathlib import Path
import numpy as np
from scipy import ndimage
sys.path.insert(0, "Training/scripts")
from bundle_classifier import auc, bootstrap_ci
from SymmetryAwareTraining.config import load_config
from SymmetryAwareTraining.tasks import run_preprocessing, _channel_names
from SymmetryAwareTraining.datalist import load_datalist, finding_value
from SymmetryAwareCore.preprocessing.cache import PreparedStore
cfg = load_config("Training/configs/ct_haemorrhage_lesion.yaml")
spec = run_preprocessing(cfg)
store = PreparedStore(Path(cfg.data.cache_dir))
_, held = load_datalist(cfg.data.datalist).split(cfg.data.fold)
root = Path(cfg.data.datalist).parent
rows = []
for e in held:
    v, lab, _ = store.get([root / p for p in e["image"]], _channel_names(cfg), spec, root / e["label"])
    v = np.asarray(v, np.float32)
    head = v.any(axis=0)
    both = head & head[::-1]
    soft = (v[0] > 0) & (v[0] < 1)           # 0-80 HU: soft tissue, blood; skull (>80 HU) saturates the brain window
    soft = ndimage.binary_erosion(soft, iterations=1)
    mirror = ndimage.gaussian_filter(np.abs(v - v[:, ::-1]).mean(axis=0), 1.0)
    intensity = ndimage.gaussian_filter(v[0], 1.0)
    rows.append((int(finding_value(e, "haemorrhage")), int(e.get("asymmetric", 0)),
                 float(np.percentile(mirror[both & soft], 99)), float(np.percentile(intensity[soft], 99.9))))
t = [r[0] for r in rows]
for i, name in ((2, "voxel mirror difference (99th pct)"), (3, "intensity, 0-80 HU tissue (99.9th pct)")):
    s = [r[i] for r in rows]
    print(f"{name}: AUC {auc(s, t):.3f} CI {bootstrap_ci(s, t, 1000)}")
print("patients", sum(t), "healthy", len(t) - sum(t), "asymmetric patients", sum(1 for r in rows if r[0] and r[1]),
      "asymmetric healthy", sum(1 for r in rows if not r[0] and r[1]))
