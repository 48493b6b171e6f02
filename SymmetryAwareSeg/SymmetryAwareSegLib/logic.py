"""Logic of the SymmetryAwareSeg module: MRML nodes in, core command line, MRML nodes out.

No widgets and no Qt here (the module must import in PythonSlicer, in a headless
``slicer-core`` environment and in tests): every method takes the scene and nodes it works
on, and the child process is a collaborator that tests may replace. The logic is made of
its seams, one file each:

- ``command``: volumes written as files, the core's command line (the contract's), the child;
- ``results``: a finished case folder loaded into the scene (segments with terminology and
  laterality, maps, plane), 3D display, mirroring a point across the plane;
- ``attention``: point mode (where a placed point attends; its mirror marked);
- ``tables``: volumes per segment and hemisphere;
- ``batch``: saving nodes, and :class:`~SymmetryAwareSegLib.batch.BatchRun` for folders;
- ``classification``: scan-level classifiers (probabilities as a table, lesion maps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

import slicer

from .attention import ExportedInputs, PointAttention, PointAttentionMixin
from .batch import BatchRun, SavingMixin, find_cases
from .classification import ClassificationMixin, ClassificationResult, LoadedClassification
from .command import CaseResult, CommandMixin, build_segment_command, default_child_env
from .nodes import new_scene, register_segmentation_converters
from .process import ChildProcess, python_executable
from .results import LoadedResults, ResultsMixin
from .tables import TablesMixin, hemisphere_volumes_ml, roi_geometry, roi_mask, voxel_centres_ras

__all__ = [
    "SymmetryAwareSegLogic",
    "CaseResult",
    "LoadedResults",
    "PointAttention",
    "ExportedInputs",
    "BatchRun",
    "ClassificationResult",
    "LoadedClassification",
    "build_segment_command",
    "default_child_env",
    "find_cases",
    "new_scene",
    "hemisphere_volumes_ml",
    "roi_geometry",
    "roi_mask",
    "voxel_centres_ras",
]


class SymmetryAwareSegLogic(CommandMixin, ResultsMixin, PointAttentionMixin, TablesMixin, SavingMixin,
                            ClassificationMixin):
    """Run SA-Swin segmentation (or a scan-level classifier) on volume nodes and load its
    results into a scene.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` inside Slicer; any ``vtkMRMLScene``
            headless, preferably from :func:`nodes.new_scene`).
        python: interpreter that runs the core (default: PythonSlicer, else this Python).
        core_module: module run with ``-m`` (tests substitute a fake core).
        process_factory: builds the child process (a ``process.Runner``); ``ChildProcess``.
        env: extra environment for the child (e.g. ``PYTHONPATH`` to the shipped core).
    """

    def __init__(
        self,
        scene=None,
        python: Optional[str] = None,
        core_module: str = "SymmetryAwareCore",
        process_factory: Callable[..., ChildProcess] = ChildProcess,
        env: Optional[Dict[str, str]] = None,
    ):
        self.scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
        if self.scene is None:
            raise ValueError("no MRML scene: pass scene=nodes.new_scene() outside Slicer")
        self.python = python or python_executable()
        self.core_module = core_module
        self.process_factory = process_factory
        self.env = dict(env) if env is not None else default_child_env()
        register_segmentation_converters()

    def for_scene(self, scene) -> "SymmetryAwareSegLogic":
        """The same logic (interpreter, core, process factory, environment) on another scene."""
        return SymmetryAwareSegLogic(scene=scene, python=self.python, core_module=self.core_module,
                                     process_factory=self.process_factory, env=self.env)

    def batch(self, input_dir, output_dir, options=None, save_bundle: bool = True, on_event=None, scene_factory=new_scene):
        """Blocking batch over a folder (headless scripts); see :class:`BatchRun`. Returns summaries."""
        return BatchRun(self, input_dir, output_dir, options, save_bundle=save_bundle, on_event=on_event,
                        scene_factory=scene_factory).run()

    def start_batch(self, input_dir, output_dir, options=None, save_bundle: bool = True, on_event=None, scene_factory=new_scene) -> BatchRun:
        """Non-blocking batch: the caller polls the returned :class:`BatchRun` (the panel's timer)."""
        return BatchRun(self, input_dir, output_dir, options, save_bundle=save_bundle, on_event=on_event,
                        scene_factory=scene_factory).start()

    def read_volume(self, path, class_name: str = "vtkMRMLScalarVolumeNode", name: Optional[str] = None):
        """An image file as a new node of ``self.scene`` (Slicer's reader, nibabel as fallback)."""
        from .nodes import read_volume

        return read_volume(self.scene, path, class_name, name or Path(path).name.split(".")[0])
