"""The Slicer logic driving the REAL core command line in a child process (no stand-in child).

Volumes in an MRML scene -> exported -> `python -m SymmetryAwareCore segment` with a small real
SA-Swin and its model card -> segmentation, attention and plane nodes on the input's geometry.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the Slicer logic tests")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic, new_scene  # noqa: E402
from SymmetryAwareSegLib.models import read_model_card  # noqa: E402

from SymmetryAwareCore.contract import RunOptions  # noqa: E402
from SymmetryAwareCore.inference.model_source import standin_card  # noqa: E402
from SymmetryAwareCore.models.model_card import save_model  # noqa: E402
from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR  # noqa: E402
from SymmetryAwareCore.phantoms import sample_case_paths  # noqa: E402


@pytest.fixture(scope="module")
def card_path(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    card = standin_card()
    card.name = "tiny-slicer-test"
    card.preprocessing = {"spacing": [4.0, 4.0, 4.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    return save_model(SASwinUNETR(in_channels=4, out_channels=3, feature_size=12), tmp_path_factory.mktemp("m") / "tiny.safetensors", card)


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_logic_runs_the_real_core_and_loads_results(tmp_path, card_path):
    import nibabel as nib

    logic = SymmetryAwareSegLogic(scene=new_scene(), python=sys.executable)
    paths = sample_case_paths()
    nodes = [logic.read_volume(paths[c], "vtkMRMLScalarVolumeNode", f"sample_glioma_{c}") for c in ("flair", "t2", "t1ce", "t1")]
    ordered = logic.assign_volumes(read_model_card(card_path), nodes)
    assert [n.GetName() for n in ordered] == ["sample_glioma_t1", "sample_glioma_t1ce", "sample_glioma_t2", "sample_glioma_flair"]
    inputs = logic.export_inputs(ordered, tmp_path / "inputs")
    events = []
    options = RunOptions(model=str(card_path), device="cpu")
    result = logic.run_case(inputs, tmp_path / "out", options, on_event=events.append, timeout=300)
    progress = [e.value for e in events if e.kind == "progress"]
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)
    loaded = logic.load_results(result, ordered[0])
    segmentation = loaded.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["necrotic tumour core", "peritumoral oedema", "enhancing tumour"]
    # The labelmap written for the exported T1 has the T1 node's geometry voxel for voxel.
    written = nib.load(str(result.segmentation))
    np.testing.assert_allclose(written.affine, _ijk_to_ras(ordered[0]), atol=1e-4)
    assert loaded.plane is not None
    assert loaded.attention is not None and loaded.asymmetry is not None
    # The segments carry the core's terminology codes (read from its .seg.nrrd).
    from SymmetryAwareSegLib.nodes import segment_tag
    from SymmetryAwareSegLib.results import TERMINOLOGY_TAG

    assert "SCT^6574001^Necrosis" in segment_tag(segmentation.GetNthSegment(0), TERMINOLOGY_TAG)


@pytest.fixture(scope="module")
def classifier_card_path(tmp_path_factory, save_classifier) -> Path:
    """A small random-weight classifier with a lesion map (pooling lesion, mirror pairs)."""
    from SymmetryAwareCore.models.sa_swin_classifier import SASwinClassifier

    torch.manual_seed(2)
    network = SASwinClassifier(in_channels=4, out_channels=2, feature_size=12, depths=(1, 1, 1, 1), pooling="lesion",
                               saca_stages=(1,), pairing="mirror-pair")
    return save_classifier(network, tmp_path_factory.mktemp("c") / "cls.safetensors", ["mass", "mass effect"],
                           "tiny-slicer-classifier")


def test_logic_classifies_with_the_real_core_and_shows_the_map_on_the_scan(tmp_path, classifier_card_path, card_path):
    import json

    logic = SymmetryAwareSegLogic(scene=new_scene(), python=sys.executable)
    paths = sample_case_paths()
    nodes = [logic.read_volume(paths[c], "vtkMRMLScalarVolumeNode", f"sample_glioma_{c}") for c in ("flair", "t2", "t1ce", "t1")]
    card = read_model_card(classifier_card_path)
    assert "Apply gives one probability per finding and a map of where it sees it" in card.describe()
    ordered = logic.assign_volumes(card, nodes)
    inputs = logic.export_inputs(ordered, tmp_path / "inputs")
    events = []
    child, result = logic.start_classification(inputs, tmp_path / "run", card, device="cpu", on_event=events.append)
    child.wait(timeout=300)
    child.check()
    assert result.with_maps
    # The panel's bar moves: the child reports its stages and a fraction that rises to 1.
    fractions = [e.value for e in events if e.kind == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"aligning", "classifying", "maps"} <= {e.text for e in events if e.kind == "stage"}
    loaded = logic.load_classification(result, ordered[0])
    written = json.loads(result.output_file.read_text())
    (case_id, data), = written.items()
    assert loaded.case_id == case_id and loaded.probabilities == pytest.approx(data["probabilities"])
    table = loaded.table.GetTable()
    assert table.GetNumberOfRows() == 2 and table.GetValue(1, 0).ToString() == "mass effect"
    assert table.GetValue(0, 1).ToDouble() == pytest.approx(data["probabilities"]["mass"], abs=1e-4)
    # Each map is a volume on the T1 node's grid, voxel for voxel, with values in 0..1.
    for name in ("mass", "mass effect"):
        node = loaded.maps[name]
        np.testing.assert_allclose(_ijk_to_ras(node), _ijk_to_ras(ordered[0]), atol=1e-4)
        from SymmetryAwareSegLib.nodes import array_from_volume

        values = array_from_volume(node)
        assert values.shape == array_from_volume(ordered[0]).shape and 0.0 <= values.min() and values.max() <= 1.0
    # A segmentation model is not a classifier: refused before any child starts.
    with pytest.raises(ValueError, match="not a scan-level classifier"):
        logic.start_classification(inputs, tmp_path / "run2", read_model_card(card_path), device="cpu")
