"""Volumes out, command line built, child started: the logic's side of the core's contract.

Every rule here is the core's (``SymmetryAwareCore.contract``): run options and their
command line, case ids, result file names and channel assignment. This module only adds
what belongs to Slicer: volume nodes written as files, the child's environment.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import slicer

from SymmetryAwareCore.contract import (
    DICOM_SEG_FILE,
    OUTPUT_FILES,
    ChannelMatchError,
    RunOptions,
    case_id_from_files,
    match_channels,
    segment_command,
)

from .models import ModelCard
from .nodes import safe_file_name
from .process import ProgressEvent, Runner

__all__ = ["CaseResult", "CommandMixin", "build_segment_command", "default_child_env", "dicom_source_folder"]


@dataclass
class CaseResult:
    """Files of one finished case (``DIR/<case_id>/``), named by the contract."""

    case_dir: Path

    @property
    def case_id(self) -> str:
        return self.case_dir.name

    def path(self, key: str) -> Path:
        """The file of ``key`` (a key of the contract's ``OUTPUT_FILES``, or ``"dicom_seg"``)."""
        return self.case_dir / (DICOM_SEG_FILE if key == "dicom_seg" else OUTPUT_FILES[key])

    @property
    def segmentation(self) -> Path:
        """The label map (NIfTI) the scene is built from."""
        return self.path("labelmap")

    @property
    def report(self) -> Dict:
        path = self.path("report")
        if not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))


def build_segment_command(
    python: str,
    inputs: Sequence[Union[str, Path]],
    output_dir: Union[str, Path],
    options: Optional[RunOptions] = None,
    core_module: str = "SymmetryAwareCore",
    case_id: Optional[str] = None,
) -> List[str]:
    """Argument vector of ``python -m SymmetryAwareCore segment`` (the contract's, unchanged)."""
    return segment_command(python, inputs, output_dir, options or RunOptions(), case_id=case_id, core_module=core_module)


def default_child_env() -> Dict[str, str]:
    """Environment for the child: the folder holding the shipped ``SymmetryAwareCore`` first.

    Inside Slicer the core is installed beside the module (see the top CMakeLists.txt);
    headless, the installed package is found as usual.
    """
    try:
        import SymmetryAwareCore
    except ImportError:
        return {}
    root = str(Path(SymmetryAwareCore.__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": root + (os.pathsep + existing if existing else "")}


def dicom_source_folder(volume_node, folder: Path, database) -> Optional[Path]:
    """The DICOM files a volume was loaded from, linked (or copied) into ``folder``.

    ``database``: Slicer's ``slicer.dicomDatabase`` (``fileForInstance(uid)``). Returns None
    when the volume did not come from the DICOM database (no ``DICOM.instanceUIDs``
    attribute, as Slicer's DICOM scalar volume plugin sets it) or a file is missing.
    """
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or database is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for index, uid in enumerate(uids):
        source = database.fileForInstance(uid)
        if not source:
            return None
        target = folder / f"{index:05d}.dcm"
        try:
            os.link(source, target)
        except OSError:  # another drive, or no hard links: copy
            shutil.copyfile(source, target)
    return folder


class CommandMixin:
    """Inputs and runs (part of :class:`SymmetryAwareSegLogic`; needs ``self.scene``,
    ``self.python``, ``self.core_module``, ``self.process_factory``, ``self.env``)."""

    def assign_volumes(self, card: ModelCard, volume_nodes: Sequence) -> List:
        """Order ``volume_nodes`` as the model's channels, matching node names to patterns.

        Raises ``ValueError`` saying which channels lack a volume or match ambiguously.
        """
        nodes = [n for n in volume_nodes if n is not None]
        try:
            order, _notes = match_channels([n.GetName() for n in nodes], card.channels)
        except ChannelMatchError as error:
            raise ValueError(f"model {card.name}: {error}; rename the volumes or pick them in the model's order") from None
        return [nodes[i] for i in order]

    def export_inputs(self, volume_nodes: Sequence, folder: Union[str, Path]) -> List[Path]:
        """Write volume nodes as NIfTI files named after the nodes (the core's case id).

        A volume under a transform is refused: the file would silently drop the transform.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for node in volume_nodes:
            if node.GetParentTransformNode() is not None:
                raise ValueError(f"volume {node.GetName()!r} is under a transform: harden it first")
            path = folder / f"{safe_file_name(node.GetName())}.nii.gz"
            if path in paths:
                path = folder / f"{safe_file_name(node.GetName())}_{len(paths)}.nii.gz"
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(str(path))
            storage.SetUseCompression(True)
            if not storage.WriteData(node):
                raise ValueError(f"{path}: could not write volume {node.GetName()!r}")
            paths.append(path)
        return paths

    def start_case(
        self,
        inputs: Sequence[Union[str, Path]],
        output_dir: Union[str, Path],
        options: Optional[RunOptions] = None,
        on_event: Optional[Callable[[ProgressEvent], None]] = None,
        case_id: Optional[str] = None,
    ) -> Tuple[Runner, CaseResult]:
        """Start the core on input files; return the running child and where results go.

        ``case_id`` defaults to the contract's :func:`case_id_from_files`. Non-blocking:
        poll the child (a timer in the panel) or wait on it.
        """
        case_id = case_id or case_id_from_files(inputs)
        command = build_segment_command(self.python, inputs, output_dir, options, core_module=self.core_module, case_id=case_id)
        child = self.process_factory(command, env=self.env, on_event=on_event)
        child.start()
        return child, CaseResult(Path(output_dir) / case_id)

    def run_case(self, inputs, output_dir, options: Optional[RunOptions] = None, on_event=None, timeout: Optional[float] = None) -> CaseResult:
        """Blocking :meth:`start_case`: raises ``ProcessFailed``/``ProcessCancelled``."""
        child, result = self.start_case(inputs, output_dir, options, on_event=on_event)
        child.wait(timeout=timeout)
        if not result.segmentation.is_file():
            raise RuntimeError(f"{result.segmentation}: the core finished without writing it")
        return result
