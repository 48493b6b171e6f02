"""The SymmetryAwareSeg panel: binds the .ui to the parameters and drives the logic.

Inside Slicer only (imports qt/ctk). The ScriptedLoadableModuleWidget of
``SymmetryAwareSeg.py`` loads the .ui and hands it here. Runs never block Slicer: the core
runs in a child process and a QTimer polls its progress; Apply becomes Cancel meanwhile.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import List, Optional

import qt
import slicer

from .install import ensure_dependencies
from .models import ModelCard, assign_channels, find_models, import_model, read_model_card
from .parameters import MAX_INPUTS
from .process import ProcessCancelled, ProcessFailed

__all__ = ["SymmetryAwareSegPanel", "model_folders", "user_model_folder"]

POLL_MS = 200


def user_model_folder() -> Path:
    """Where imported models go: ``<Slicer user settings folder>/SymmetryAwareSeg/models``."""
    settings_dir = Path(slicer.app.slicerUserSettingsFilePath).parent if hasattr(slicer, "app") else Path.home()
    return settings_dir / "SymmetryAwareSeg" / "models"


def model_folders() -> List[Path]:
    """Model cards are looked for in the user folder first, then in the shipped core."""
    folders = [user_model_folder()]
    try:
        import SymmetryAwareCore

        folders.append(Path(SymmetryAwareCore.__file__).parent / "data" / "models")
    except ImportError:
        pass
    return folders


class SymmetryAwareSegPanel:
    """Connects widgets, parameter node and logic. ``ui`` holds the .ui's child widgets."""

    def __init__(self, ui, logic, parameters_getter):
        self.ui = ui
        self.logic = logic
        self.parameters = parameters_getter  # callable returning the wrapped parameter node
        self.models: List[ModelCard] = []
        self._child = None
        self._pending = None  # (case result, reference volume, roi) of the running case
        self._work_dir: Optional[tempfile.TemporaryDirectory] = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._connect()
        self.refresh_models()
        self.ui.progressBar.setVisible(False)

    # -- wiring ---------------------------------------------------------------------------
    def _connect(self) -> None:
        ui = self.ui
        ui.applyButton.clicked.connect(self.on_apply_or_cancel)
        ui.modelSelector.currentIndexChanged.connect(self.on_model_selected)
        ui.importModelButton.clicked.connect(self.on_import_model)
        ui.mirrorPointButton.clicked.connect(self.on_mirror_point)
        ui.batchButton.clicked.connect(self.on_batch)
        ui.opacitySlider.valueChanged.connect(self.on_opacity)
        for index in range(1, MAX_INPUTS + 1):
            getattr(ui, f"inputVolume{index}Selector").currentNodeChanged.connect(lambda _node: self.update_state())
        ui.modelLineEdit.textChanged.connect(lambda _text: self.update_state())
        ui.pointsSelector.currentNodeChanged.connect(lambda _node: self.update_state())

    def refresh_models(self) -> None:
        self.models = find_models(model_folders())
        selector = self.ui.modelSelector
        selector.blockSignals(True)
        selector.clear()
        for card in self.models:
            selector.addItem(card.title or card.name, str(card.path))
        selector.blockSignals(False)
        if self.models and not self.ui.modelLineEdit.text:
            self.ui.modelLineEdit.text = str(self.models[0].path)

    # -- state ----------------------------------------------------------------------------
    def input_nodes(self) -> List:
        return [getattr(self.ui, f"inputVolume{i}Selector").currentNode() for i in range(1, MAX_INPUTS + 1)]

    def current_card(self) -> Optional[ModelCard]:
        text = self.ui.modelLineEdit.text.strip()
        if text.lower().endswith(".json") and os.path.isfile(text):
            try:
                return read_model_card(text)
            except ValueError:
                return None
        for card in self.models:
            if card.name == text:
                return card
        return None

    def update_state(self) -> None:
        """Channel assignment text and button states (called on every relevant change)."""
        nodes = [n for n in self.input_nodes() if n is not None]
        card = self.current_card()
        if not nodes:
            self.ui.channelLabel.text = "Channels: select input volumes."
        elif card is None:
            self.ui.channelLabel.text = "Channels: in the order of the inputs (no model card selected)."
        else:
            picks = assign_channels(card.channels, [n.GetName() for n in nodes])
            parts = [f"{name} \u2190 {nodes[p].GetName() if p is not None else 'MISSING'}" for (name, _), p in zip(card.channels, picks)]
            self.ui.channelLabel.text = "Channels: " + ", ".join(parts)
        running = self._child is not None
        self.ui.applyButton.enabled = running or bool(nodes)
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.batchButton.enabled = not running
        has_plane = self._last_plane() is not None
        points = self.ui.pointsSelector.currentNode()
        self.ui.mirrorPointButton.enabled = has_plane and points is not None and points.GetNumberOfControlPoints() > 0

    def _last_plane(self):
        nodes = slicer.util.getNodesByClass("vtkMRMLMarkupsPlaneNode")
        planes = [n for n in nodes if n.GetName().endswith("mid-sagittal plane")]
        return planes[-1] if planes else None

    # -- actions --------------------------------------------------------------------------
    def on_model_selected(self, index: int) -> None:
        if 0 <= index < len(self.models):
            self.ui.modelLineEdit.text = str(self.models[index].path)

    def on_import_model(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, "Import a SymmetryAwareSeg model card", "", "Model card (*.json)")
        if not path:
            return
        try:
            card = import_model(path, user_model_folder())
        except ValueError as error:
            slicer.util.errorDisplay(f"Model not imported: {error}")
            return
        self.refresh_models()
        self.ui.modelLineEdit.text = str(card.path)

    def on_opacity(self, value: float) -> None:
        segmentation = self.ui.outputSegmentationSelector.currentNode()
        if segmentation is not None and segmentation.GetDisplayNode() is not None:
            segmentation.GetDisplayNode().SetOpacity(value)
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            if composite.GetForegroundVolumeID():
                composite.SetForegroundOpacity(value)

    def on_apply_or_cancel(self) -> None:
        if self._child is not None:
            self.ui.statusLabel.text = "Cancelling..."
            self._child.cancel()
            return
        try:
            self._start()
        except (ValueError, RuntimeError) as error:
            slicer.util.errorDisplay(f"Cannot start: {error}")
            self._finish()

    def _start(self) -> None:
        if not ensure_dependencies(ask=True):
            return
        p = self.parameters()
        nodes = [n for n in self.input_nodes() if n is not None]
        card = self.current_card()
        ordered = self.logic.assign_volumes(card, nodes) if card is not None else nodes
        self._work_dir = tempfile.TemporaryDirectory(prefix="SymmetryAwareSeg_")
        inputs = self.logic.export_inputs(ordered, Path(self._work_dir.name) / "inputs")
        options = dict(model=p.model.strip(), device=p.device, overlap=float(p.overlap), tta=bool(p.tta))
        roi = p.roiNode if p.useRoi else None
        if p.useRoi:
            if roi is None:
                raise ValueError("ROI mode needs a region of interest")
            from .logic import roi_geometry

            center, size, _axes = roi_geometry(roi)
            options.update(roi_center=tuple(center), roi_size=tuple(size))
        self._child, result = self.logic.start_case(inputs, Path(self._work_dir.name) / "outputs", **options)
        self._pending = (result, ordered[0], roi)
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        self.ui.statusLabel.text = "Starting..."
        self._timer.start()
        self.update_state()

    def _poll(self) -> None:
        child = self._child
        if child is None:
            self._timer.stop()
            return
        for event in child.poll():
            if event.kind == "progress":
                self.ui.progressBar.setValue(int(round(event.value * 100)))
            elif event.kind == "stage":
                self.ui.statusLabel.text = event.text.capitalize() + "..."
            else:
                logging.info("SymmetryAwareSeg: %s", event.text)
        if not child.finished():
            return
        self._timer.stop()
        try:
            child.check()
            self._load()
            self.ui.statusLabel.text = "Done."
        except ProcessCancelled:
            self.ui.statusLabel.text = "Cancelled."
        except ProcessFailed as error:
            self.ui.statusLabel.text = "Failed."
            slicer.util.errorDisplay(f"Segmentation failed: {error}", detailedText="\n".join(t for _, t in child.log[-200:]))
        except (ValueError, RuntimeError) as error:
            self.ui.statusLabel.text = "Failed."
            slicer.util.errorDisplay(f"Could not load the results: {error}")
        finally:
            self._finish()

    def _load(self) -> None:
        result, reference, roi = self._pending
        p = self.parameters()
        loaded = self.logic.load_results(
            result,
            reference,
            segmentation_node=p.outputSegmentation,
            roi_node=roi,
            opacity=float(p.opacity),
            show_attention=bool(p.showAttention),
        )
        p.outputSegmentation = loaded.segmentation
        self.ui.resultsTableView.setMRMLTableNode(loaded.table)

    def _finish(self) -> None:
        self._child = None
        self._pending = None
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None
        self.ui.progressBar.setVisible(False)
        self.update_state()

    def on_mirror_point(self) -> None:
        points = self.ui.pointsSelector.currentNode()
        plane = self._last_plane()
        if points is None or plane is None or points.GetNumberOfControlPoints() == 0:
            return
        self.logic.mirror_point(points, points.GetNumberOfControlPoints() - 1, plane)
        self.update_state()

    def on_batch(self) -> None:
        source, target = self.ui.batchInputPath.currentPath, self.ui.batchOutputPath.currentPath
        if not source or not target:
            slicer.util.errorDisplay("Choose an input and an output folder.")
            return
        if not ensure_dependencies(ask=True):
            return
        p = self.parameters()
        self.ui.statusLabel.text = "Batch running (Slicer is busy; see the log)..."
        slicer.app.processEvents()
        with slicer.util.WaitCursor():
            summaries = self.logic.batch(source, target, model=p.model.strip(), device=p.device, overlap=float(p.overlap), tta=bool(p.tta))
        failed = [s for s in summaries if "error" in s]
        self.ui.statusLabel.text = f"Batch: {len(summaries) - len(failed)} case(s) done, {len(failed)} failed."
        for summary in failed:
            logging.error("SymmetryAwareSeg batch: %s: %s", summary["case"], summary["error"])

    def cleanup(self) -> None:
        if self._child is not None:
            self._child.cancel()
        self._timer.stop()
        self._finish()
