"""Shared fixtures: real brain images that ship inside installed wheels (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.io.image import Image

# Keep the 2-core machines responsive and results repeatable.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def _nifti_image(path: Path, volume: int | None = None) -> Image:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if volume is not None:
        data = data[..., volume]
    return Image(np.ascontiguousarray(data), img.affine, source=str(path))


@pytest.fixture(scope="session")
def mni_t1() -> Image:
    """MNI ICBM152 2009a symmetric T1, 1 mm, 197x233x189, skull-stripped (nilearn)."""
    import nilearn.datasets

    path = Path(nilearn.datasets.__file__).parent / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    return _nifti_image(path)


@pytest.fixture(scope="session")
def subject_t1() -> Image:
    """A real subject's low-resolution T1, 33x41x25, 2 mm (nibabel test data)."""
    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    return _nifti_image(path)


@pytest.fixture(scope="session")
def subject_epi() -> Image:
    """The first volume of a real subject's EPI, 128x96x24, not in template space."""
    path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    return _nifti_image(path, volume=0)


@pytest.fixture(scope="session")
def save_classifier():
    """``save(network, path, findings, name)``: a classifier's weights and card for tests (the
    MRI sample's four channels at 4 mm, a 64^3 whole-scan window); returns the card path."""
    from SymmetryAwareCore.inference.model_source import standin_card
    from SymmetryAwareCore.models.model_card import save_model

    def save(network, path: Path, findings, name: str) -> Path:
        card = standin_card()
        card.name, card.labels = name, []
        card.postprocessing = {"activation": "sigmoid", "findings": list(findings)}
        card.preprocessing = {"spacing": [4.0, 4.0, 4.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
        return save_model(network, path, card)

    return save


def import_script(name: str, folder: str = "Benchmarks"):
    """A script of ``Benchmarks/`` or ``Training/scripts`` (not packages) imported as a module, for its tests."""
    import importlib
    import sys

    where = str(Path(__file__).resolve().parents[1] / folder)
    sys.path.insert(0, where)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(where)


def import_benchmark(name: str):
    """A script of ``Benchmarks/`` imported as a module."""
    return import_script(name, "Benchmarks")


def import_training_script(name: str):
    """A script of ``Training/scripts`` imported as a module."""
    return import_script(name, "Training/scripts")


def tiny_brats_run(root: Path, card_extra: dict | None = None) -> tuple:
    """A random feature-12 SA-Swin (depths 1) with the BraTS region card saved as
    ``root/run/model.safetensors``, and one 3 mm unilateral glioma phantom (seed 5) in fold 0
    of ``root/data/datalist.json``. Returns ``(card path, datalist path, {channel: path})``."""
    import json

    import torch

    from SymmetryAwareCore.inference.model_source import brats_card_fields
    from SymmetryAwareCore.models.model_card import ModelCard, save_model
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR
    from SymmetryAwareCore.phantoms.dataset import write_case
    from SymmetryAwareCore.phantoms.generator import make_subject

    data = root / "data"
    data.mkdir(parents=True)
    paths = write_case(make_subject(5, "glioma", "mri", spacing=3.0, scenario="unilateral"), data, "p005")
    entry = {"name": "p005", "image": [paths[c].name for c in ("t1", "t1ce", "t2", "flair")],
             "label": paths["label"].name, "fold": 0}
    (data / "datalist.json").write_text(json.dumps({"training": [entry], "channels": 4}))
    torch.manual_seed(0)
    network = SASwinUNETR(in_channels=4, out_channels=3, feature_size=12, depths=(1, 1, 1, 1), use_saca=True)
    fields = brats_card_fields()
    card = ModelCard(channels=fields["channels"], modality="MRI", labels=fields["labels"],
                     postprocessing=fields["postprocessing"], name="run",
                     preprocessing={"spacing": [3.0, 3.0, 3.0], "roi_size": [64, 64, 64],
                                    "normalisation": "zscore-nonzero"},
                     extra=card_extra or {})
    card_path = save_model(network, root / "run" / "model.safetensors", card)
    return card_path, data / "datalist.json", paths
