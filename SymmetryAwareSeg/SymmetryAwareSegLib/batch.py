"""Batch: every case of a folder, one child process after another, in the background.

:class:`BatchRun` is driven by :meth:`BatchRun.poll`, which never blocks: the panel calls it
from a timer (Slicer stays responsive, with per-case progress and Cancel), the headless
script from a loop (:meth:`BatchRun.run`). Each case runs through the same child-process
poll as a single Apply; its results are loaded into a fresh scene of its own (created by
:func:`nodes.new_scene`, which registers the markups classes Slicer 5.8 only registers in
the application scene), saved (``.seg.nrrd``, maps, optionally an ``.mrb``) and dropped.
A failing case is recorded and the batch goes on; ``summary.json`` lists every case.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import slicer

from SymmetryAwareCore.contract import IMAGE_SUFFIXES, ChannelMatchError, RunOptions, case_id_from_path, match_channels

from .models import read_model_card
from .nodes import new_scene, read_volume
from .process import ProcessCancelled, ProgressEvent

__all__ = ["find_cases", "BatchRun", "SavingMixin", "SUMMARY_FILE"]

SUMMARY_FILE = "summary.json"


def find_cases(input_dir) -> List[Tuple[str, List[Path]]]:
    """Cases of a batch folder: ``(case_id, images)`` for each sub-folder, then each loose image.

    A sub-folder is one case named after the folder (as ``symmetryaware segment`` names it);
    a loose image is a one-channel case named by the contract's :func:`case_id_from_path`.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"{input_dir}: not a folder")

    def images(folder: Path) -> List[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.startswith("."))

    cases = [(sub.name, images(sub)) for sub in sorted(p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith("."))]
    cases = [(name, files) for name, files in cases if files]
    cases += [(case_id_from_path(p), [p]) for p in images(input_dir)]
    return cases


class SavingMixin:
    """Writing nodes of ``self.scene`` to files (atomic where it matters)."""

    def save_segmentation(self, segmentation_node, path) -> Path:
        """Write a ``.seg.nrrd`` (atomic: temporary name, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name.split('.')[0]}.tmp.seg.nrrd")
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(temporary))
        try:
            if not storage.WriteData(segmentation_node):
                raise RuntimeError(f"{path}: could not write the segmentation")
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()
        return path

    def save_volume(self, volume_node, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(volume_node):
            raise RuntimeError(f"{path}: could not write {volume_node.GetName()}")
        return path

    def save_bundle(self, path) -> Path:
        """Save the whole scene as a Medical Reality Bundle (``.mrb``, a zip)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        application_logic = slicer.vtkMRMLApplicationLogic()
        application_logic.SetMRMLScene(self.scene)
        with tempfile.TemporaryDirectory(prefix="symmetryaware_mrb_") as staging:
            bundle_dir = Path(staging) / path.stem
            bundle_dir.mkdir()
            if not application_logic.SaveSceneToSlicerDataBundleDirectory(str(bundle_dir)):
                raise RuntimeError(f"{path}: could not save the scene")
            temporary = path.with_name(f".{path.stem}.tmp.mrb")
            if not application_logic.Zip(str(temporary), str(bundle_dir)):
                raise RuntimeError(f"{path}: could not zip the scene")
            os.replace(temporary, path)
        return path


class BatchRun:
    """Segment every case of ``input_dir`` into ``output_dir``, one child at a time.

    Args:
        logic: a :class:`SymmetryAwareSegLogic` (its python, core module, process factory).
        options: the contract's run options; a model card path orders each case's files.
        save_bundle: also save each case's scene as ``<case>/<case>.mrb``.
        on_event: ``on_event(case_id, event)`` for every child event, plus ``"case"``
            events (``text`` = "started"/"done"/"failed"/"cancelled") from here.
        scene_factory: builds each case's scene (default :func:`nodes.new_scene`).

    Call :meth:`start`, then :meth:`poll` until it returns False (or :meth:`run`).
    """

    def __init__(
        self,
        logic,
        input_dir,
        output_dir,
        options: Optional[RunOptions] = None,
        save_bundle: bool = True,
        on_event: Optional[Callable[[str, ProgressEvent], None]] = None,
        scene_factory: Callable[[], object] = new_scene,
    ):
        self.logic = logic
        self.output_dir = Path(output_dir)
        self.options = options or RunOptions()
        self.save_bundle = save_bundle
        self.on_event = on_event
        self.scene_factory = scene_factory
        self.cases = find_cases(input_dir)
        if not self.cases:
            raise ValueError(f"{input_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        model = self.options.model
        self.card = read_model_card(model) if str(model).lower().endswith(".json") and Path(model).is_file() else None
        if self.card is not None and self.card.findings:
            raise ValueError(f"model {self.card.name} is a scan-level classifier; a batch segments. Classify a folder "
                             f"with: symmetryaware classify {input_dir} --model {model} --output findings.json")
        self.summaries: List[Dict] = []
        self.index = -1
        self.cancelled = False
        self._child = None
        self._result = None
        self._inputs: List[Path] = []
        self._current_summary: Dict = {}

    # -- state ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._child is not None

    @property
    def current_case(self) -> str:
        return self.cases[self.index][0] if 0 <= self.index < len(self.cases) else ""

    @property
    def progress(self) -> float:
        """Overall fraction 0..1: finished cases plus the running case's own progress."""
        done = len(self.summaries)
        running = self._child.progress if self._child is not None else 0.0
        return min(1.0, (done + running) / len(self.cases))

    # -- driving ----------------------------------------------------------------------------
    def start(self) -> "BatchRun":
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._start_next()
        return self

    def poll(self) -> bool:
        """Deliver events, finish a finished case, start the next; never blocks.

        Returns True while the batch is still running.
        """
        child = self._child
        if child is None:
            return False
        child.poll()
        if not child.finished():
            return True
        self._child = None
        self._finish_case(child)
        if self.cancelled:
            self._skip_rest()
            self._write_summary()
            return False
        self._start_next()
        return self._child is not None

    def run(self, interval: float = 0.05) -> List[Dict]:
        """Blocking: start and poll to the end (headless scripts). Returns the summaries."""
        import time

        self.start()
        while self.poll():
            time.sleep(interval)
        return self.summaries

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop after the running case ends (its child is cancelled now); never blocks.

        ``grace_s=0`` kills the running child at once (the module is closing).
        """
        self.cancelled = True
        if self._child is not None:
            self._child.cancel(grace_s=grace_s)

    # -- cases --------------------------------------------------------------------------------
    def _emit(self, case_id: str, text: str) -> None:
        if self.on_event is not None:
            self.on_event(case_id, ProgressEvent("case", text=text))

    def _start_next(self) -> None:
        while not self.cancelled and self.index + 1 < len(self.cases):
            self.index += 1
            case_id, files = self.cases[self.index]
            summary = {"case": case_id, "inputs": [str(p) for p in files]}
            try:
                files = self._ordered(files)
                summary["inputs"] = [str(p) for p in files]
                callback = None if self.on_event is None else (lambda event, c=case_id: self.on_event(c, event))
                self._child, self._result = self.logic.start_case(
                    files, self.output_dir, self.options, on_event=callback, case_id=case_id
                )
            except Exception as error:  # a case that cannot even start is recorded; the batch goes on
                summary["error"] = str(error)
                self.summaries.append(summary)
                self._emit(case_id, "failed")
                continue
            self._inputs = files
            self._current_summary = summary
            self._emit(case_id, "started")
            return
        if self._child is None:
            self._write_summary()

    def _ordered(self, files: List[Path]) -> List[Path]:
        if self.card is None:
            return files
        try:
            order, _notes = match_channels([p.name for p in files], self.card.channels)
        except ChannelMatchError as error:
            raise ValueError(str(error)) from None
        return [files[i] for i in order]

    def _finish_case(self, child) -> None:
        summary = self._current_summary
        case_id = summary["case"]
        try:
            child.check()
            summary.update(self._save_case(self._result, self._inputs[0], case_id))
            self._emit(case_id, "done")
        except ProcessCancelled:
            summary["error"] = "cancelled"
            self._emit(case_id, "cancelled")
        except Exception as error:  # one bad case must not stop a night's batch
            summary["error"] = str(error)
            self._emit(case_id, "failed")
        self.summaries.append(summary)

    def _save_case(self, result, reference_file: Path, case_id: str) -> Dict[str, str]:
        """Load a finished case into a fresh scene and save its Slicer files; drop the scene."""
        if not result.segmentation.is_file():
            raise RuntimeError(f"{result.segmentation}: the core finished without writing it")
        case_logic = self.logic.for_scene(self.scene_factory())
        reference = read_volume(case_logic.scene, reference_file, "vtkMRMLScalarVolumeNode", case_id)
        loaded = case_logic.load_results(result, reference, show_attention=False)
        saved = {"segmentation": str(case_logic.save_segmentation(loaded.segmentation, result.case_dir / f"{case_id}.seg.nrrd"))}
        for key, node in (("attention", loaded.attention), ("asymmetry", loaded.asymmetry)):
            if node is not None:
                saved[key] = str(case_logic.save_volume(node, result.case_dir / f"{case_id}_{key}.nrrd"))
        if result.path("dicom_seg").is_file():
            saved["dicom_seg"] = str(result.path("dicom_seg"))
        if self.save_bundle:
            saved["bundle"] = str(case_logic.save_bundle(result.case_dir / f"{case_id}.mrb"))
        case_logic.scene.Clear(1)
        return saved

    def _skip_rest(self) -> None:
        for case_id, files in self.cases[self.index + 1:]:
            self.summaries.append({"case": case_id, "inputs": [str(p) for p in files], "error": "not run (batch cancelled)"})

    def _write_summary(self) -> None:
        path = self.output_dir / SUMMARY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name("." + path.name + ".tmp")
        temporary.write_text(json.dumps(self.summaries, indent=2), encoding="utf-8")
        os.replace(temporary, path)
