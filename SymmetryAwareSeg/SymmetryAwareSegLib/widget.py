"""The SymmetryAwareSeg panel: binds the .ui to the parameters and drives the logic.

Inside Slicer only (imports qt/ctk). The ScriptedLoadableModuleWidget of
``SymmetryAwareSeg.py`` loads the .ui and hands it here. Nothing blocks Slicer: a single run
and a batch both run as child processes polled by one QTimer; Apply (or Run batch) becomes
Cancel meanwhile, and Cancel returns at once. Point mode ("Where does this point look?")
places one fiducial and runs the core's ``attention`` command on it through the same child
and timer; re-placing the point re-runs (a run in progress is cancelled first). Every failure, dependency installation
included, ends in a dialog with the details, never in a console traceback.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import List, Optional

import qt
import slicer

from SymmetryAwareCore.contract import OptionError

from .attention import POINT_LIST_NAME, ExportedInputs, point_summary
from .install import DependencyError, ensure_dependencies
from .command import dicom_source_folder
from .models import ModelCard, channel_assignment_text, find_models, import_model, read_model_card
from .parameters import MAX_INPUTS, run_options
from .process import ProcessCancelled, ProcessFailed
from .results import run_summary

try:
    from slicer.i18n import tr as _
except ImportError:  # headless or a Slicer without translations: strings stay as written
    def _(text: str) -> str:
        return text

__all__ = ["SymmetryAwareSegPanel", "model_folders", "user_model_folder", "refine_in_segment_editor"]

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


def refine_in_segment_editor(segmentation_node, source_volume) -> None:
    """Open the Segment Editor on ``segmentation_node`` with ``source_volume`` as its source."""
    slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentation_node)
    if hasattr(editor, "setSourceVolumeNode"):
        editor.setSourceVolumeNode(source_volume)
    else:  # before Slicer 5.3 the source volume was called the master volume
        editor.setMasterVolumeNode(source_volume)


class SymmetryAwareSegPanel:
    """Connects widgets, parameter node and logic. ``ui`` holds the .ui's child widgets."""

    def __init__(self, ui, logic, parameters_getter):
        self.ui = ui
        self.logic = logic
        self.parameters = parameters_getter  # callable returning the wrapped parameter node
        self.models: List[ModelCard] = []
        self._child = None
        self._batch = None
        self._pending = None  # (case result, reference volume, roi) of the running case
        self._pending_kind = None  # "segment" or "point": what the running child computes
        self._inputs = ExportedInputs()  # exported input files, reused while the volumes are unchanged
        self._point_node = None  # the fiducial list holding the query point
        self._point_observers: List = []
        self._point_again = False  # the point was moved while its run was running: run again after it
        self._point_asked = None  # the RAS point of the last point run started (one run per position)
        self._point_map = None  # the last point run's map node (replaced by the next one)
        self._mirror_node = None  # the fiducial list holding the point's mirror
        self._last = None  # (segmentation node, reference volume) of the last loaded result
        self._work_dir: Optional[tempfile.TemporaryDirectory] = None
        self._defaults_from: Optional[str] = None  # the card whose defaults the options show
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._connect()
        self.refresh_models()
        self.ui.progressBar.setVisible(False)
        from .interactive_panel import InteractivePanel

        self.interactive = InteractivePanel(ui, logic, self.input_nodes, self.current_card, self._dependencies_ready)

    # -- wiring ---------------------------------------------------------------------------
    def _connect(self) -> None:
        ui = self.ui
        ui.applyButton.clicked.connect(self.on_apply_or_cancel)
        ui.modelSelector.currentIndexChanged.connect(self.on_model_selected)
        ui.importModelButton.clicked.connect(self.on_import_model)
        ui.mirrorPointButton.clicked.connect(self.on_mirror_point)
        ui.pointAttentionButton.clicked.connect(self.on_point_attention)
        ui.batchButton.clicked.connect(self.on_batch_or_cancel)
        ui.opacitySlider.valueChanged.connect(self.on_opacity)
        ui.show3DButton.toggled.connect(self.on_show_3d)
        ui.refineButton.clicked.connect(self.on_refine)
        for index in range(1, MAX_INPUTS + 1):
            getattr(ui, f"inputVolume{index}Selector").currentNodeChanged.connect(lambda _node: self.update_state())
        ui.modelLineEdit.textChanged.connect(self.on_model_text_changed)
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
        return self.card_for(self.ui.modelLineEdit.text)

    def card_for(self, text: str) -> Optional[ModelCard]:
        """The card a model field's text names: a card file's path, or a found model's name."""
        text = str(text or "").strip()
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
        """Channel assignment, model card summary and button states (on every relevant change)."""
        nodes = [n for n in self.input_nodes() if n is not None]
        card = self.current_card()
        if not nodes:
            self.ui.channelLabel.text = _("Channels: select input volumes.")
        elif card is None:
            self.ui.channelLabel.text = _("Channels: in the order of the inputs (no model card selected).")
        else:
            self.ui.channelLabel.text = channel_assignment_text(card, [n.GetName() for n in nodes])
        self.ui.modelInfoLabel.text = card.describe() if card is not None else _("Model: none selected.")
        running = self._child is not None
        batching = self._batch is not None
        point_running = running and self._pending_kind == "point"
        self.ui.applyButton.enabled = running or (bool(nodes) and not batching)
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.pointAttentionButton.enabled = point_running or (bool(nodes) and not running and not batching)
        self.ui.pointAttentionButton.text = _("Cancel point run") if point_running else _("Where does this point look?")
        self.ui.batchButton.enabled = batching or not running
        self.ui.batchButton.text = _("Cancel batch") if batching else _("Run batch")
        has_plane = self._last_plane() is not None
        points = self.ui.pointsSelector.currentNode()
        self.ui.mirrorPointButton.enabled = has_plane and points is not None and points.GetNumberOfControlPoints() > 0
        has_result = self._last is not None and self._last[0].GetScene() is not None
        self.ui.show3DButton.enabled = has_result
        self.ui.refineButton.enabled = has_result

    def _last_plane(self):
        nodes = slicer.util.getNodesByClass("vtkMRMLMarkupsPlaneNode")
        planes = [n for n in nodes if n.GetName().endswith("mid-sagittal plane")]
        return planes[-1] if planes else None

    def _dependencies_ready(self, features=()) -> bool:
        """Ask and install; every failure (pip's CalledProcessError included) in a dialog."""
        try:
            return ensure_dependencies(ask=True, features=features)
        except DependencyError as error:
            slicer.util.errorDisplay(
                _("SymmetryAwareSeg cannot run yet:") + f"\n\n{error}", detailedText=error.detail or str(error)
            )
        except Exception as error:  # an installer bug must still end in a dialog
            logging.exception("SymmetryAwareSeg: dependency installation failed")
            slicer.util.errorDisplay(_("Installing dependencies failed: {error}").format(error=error), detailedText=repr(error))
        return False

    def on_model_text_changed(self, _text: str = "") -> None:
        """A new model: its card's own settings become the options' starting values."""
        card = self.current_card()
        if card is not None and str(card.path) != self._defaults_from:
            self._defaults_from = str(card.path)
            self.apply_card_defaults(card)
        self.update_state()

    def on_parameter_node(self, node) -> None:
        """Called before ``node`` is connected to the GUI (which writes its values into the
        widgets). A node that already names a model (a saved scene) keeps the options saved
        with it; a fresh one gets the card defaults of the first model it is given. Without
        this, the defaults applied before the node was connected were overwritten by the
        node's own (N4 off) and never applied again, so the default model ran without the
        N4 its card asks for."""
        card = self.card_for(getattr(node, "model", "")) if node is not None else None
        self._defaults_from = str(card.path) if card is not None else None

    def apply_card_defaults(self, card: ModelCard) -> None:
        """*Remove MRI bias field first* follows the card's preprocessing (checked for a model
        that asks for N4, the default's case); the user may still change it. Off and disabled
        for a CT model, where it is refused. Written to the parameter node too: a run reads
        its options from the node, and a GUI update in progress would not copy the box there."""
        box = self.ui.biasCorrectionCheckBox
        box.checked = card.default_bias_correction
        box.enabled = not card.is_ct
        parameters = self.parameters()
        if parameters is not None:
            parameters.biasCorrection = card.default_bias_correction

    # -- actions --------------------------------------------------------------------------
    def on_model_selected(self, index: int) -> None:
        if 0 <= index < len(self.models):
            self.ui.modelLineEdit.text = str(self.models[index].path)

    def on_import_model(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Import a SymmetryAwareSeg model card"), "", "Model card (*.json)")
        if not path:
            return
        try:
            card = import_model(path, user_model_folder())
        except ValueError as error:
            slicer.util.errorDisplay(_("Model not imported: {error}").format(error=error))
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
            self.ui.statusLabel.text = _("Cancelling...")
            self._child.cancel()  # returns at once; the timer sees the child end
            return
        try:
            self._start()
        except (ValueError, RuntimeError, OSError) as error:
            slicer.util.errorDisplay(_("Cannot start: {error}").format(error=error))
            self._finish()

    def _start(self) -> None:
        p = self.parameters()
        if not self._dependencies_ready(["dicom"] if p.dicomSeg else []):
            return
        nodes = [n for n in self.input_nodes() if n is not None]
        card = self.current_card()
        ordered = self.logic.assign_volumes(card, nodes) if card is not None else nodes
        self._work_dir = tempfile.TemporaryDirectory(prefix="SymmetryAwareSeg_")
        work = Path(self._work_dir.name)
        inputs = self._inputs.files(self.logic, ordered)  # kept for point runs on the same volumes
        if card is not None and card.findings:  # a scan-level classifier: probabilities (and maps)
            try:
                device = run_options(p, None, None).device
            except OptionError as error:
                raise ValueError(str(error)) from None
            self._child, result = self.logic.start_classification(inputs, work / "classification", card, device)
            self._pending = (result, ordered[0], None)
            self._pending_kind = "classify"
            self._show_progress(_("Classifying..."))
            return
        if p.dicomSeg:
            # The core references the series it reads: give it the first volume's DICOM files.
            source = dicom_source_folder(ordered[0], work / "dicom" / inputs[0].name.split(".")[0],
                                         getattr(slicer, "dicomDatabase", None))
            if source is None:
                raise ValueError(_("DICOM SEG needs the first input to be loaded from the DICOM database"))
            inputs[0] = source
        roi = p.roiNode if p.useRoi else None
        center = size = None
        if p.useRoi:
            if roi is None:
                raise ValueError(_("ROI mode needs a region of interest"))
            from .tables import roi_geometry

            center, size, _axes = roi_geometry(roi)
        try:
            options = run_options(p, center, size)
        except OptionError as error:
            raise ValueError(str(error)) from None
        self._child, result = self.logic.start_case(inputs, work / "outputs", options)
        self._pending = (result, ordered[0], roi)
        self._pending_kind = "segment"
        self._show_progress(_("Starting..."))

    def _show_progress(self, text: str) -> None:
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        self.ui.statusLabel.text = text
        self._timer.start()
        self.update_state()

    def _poll(self) -> None:
        if self._batch is not None:
            self._poll_batch()
            return
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
        point = self._pending_kind == "point"
        classify = self._pending_kind == "classify"
        again = point and self._point_again
        try:
            child.check()
            if point:
                self._load_point()
            elif classify:
                self._load_classification()
            else:
                self._load()
            self.ui.statusLabel.text = _("Done.")
        except ProcessCancelled:
            self.ui.statusLabel.text = _("Cancelled.")
            if point:
                self._point_asked = None  # the same position may be asked again
        except ProcessFailed as error:
            self.ui.statusLabel.text = _("Failed.")
            if point:
                self._point_asked = None
            what = (_("Point attention failed: {error}") if point else
                    _("Classification failed: {error}") if classify else _("Segmentation failed: {error}"))
            slicer.util.errorDisplay(what.format(error=error), detailedText="\n".join(t for _s, t in child.log[-200:]))
        except (ValueError, RuntimeError, OSError) as error:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Could not load the results: {error}").format(error=error))
        finally:
            self._finish()
        if again:  # the point moved while its previous run was being cancelled
            self._run_point()

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
        self._last = (loaded.segmentation, reference)
        self.ui.resultsTableView.setMRMLTableNode(loaded.table)
        self.ui.runInfoLabel.text = run_summary(loaded.report)
        if result.path("dicom_seg").is_file():
            self._import_dicom_seg(result.path("dicom_seg"))

    def _load_classification(self) -> None:
        from .classification import classification_summary

        result, reference, _roi = self._pending
        loaded = self.logic.load_classification(result, reference, opacity=float(self.parameters().opacity))
        self.ui.resultsTableView.setMRMLTableNode(loaded.table)
        self.ui.runInfoLabel.text = classification_summary(loaded)

    def _import_dicom_seg(self, path: Path) -> None:
        """Add the written DICOM SEG to Slicer's DICOM database, beside its source study."""
        try:
            from DICOMLib import DICOMUtils

            keep = Path(slicer.dicomDatabase.databaseDirectory) / "SymmetryAwareSeg"
            keep.mkdir(parents=True, exist_ok=True)
            target = keep / f"{path.parent.name}_{path.name}"
            target.write_bytes(path.read_bytes())  # the work folder is deleted after the run
            DICOMUtils.importDicom(str(keep))
            self.ui.runInfoLabel.text += "\n" + _("DICOM SEG added to the DICOM database: {path}").format(path=target)
        except Exception as error:  # the segmentation is loaded anyway; say why the SEG is not in the database
            logging.exception("SymmetryAwareSeg: DICOM SEG import failed")
            slicer.util.warningDisplay(_("The DICOM SEG was written but not imported: {error}").format(error=error))

    def _finish(self) -> None:
        self._child = None
        self._pending = None
        self._pending_kind = None
        self._point_again = False
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None
        self.ui.progressBar.setVisible(False)
        self.update_state()

    def on_show_3d(self, checked: bool) -> None:
        if self._last is not None:
            self.logic.show_3d(self._last[0], bool(checked))

    def on_refine(self) -> None:
        if self._last is not None:
            refine_in_segment_editor(*self._last)

    def on_mirror_point(self) -> None:
        points = self.ui.pointsSelector.currentNode()
        plane = self._last_plane()
        if points is None or plane is None or points.GetNumberOfControlPoints() == 0:
            return
        try:
            self.logic.mirror_point(points, points.GetNumberOfControlPoints() - 1, plane)
        except (RuntimeError, ValueError) as error:
            slicer.util.errorDisplay(_("Cannot mirror the point: {error}").format(error=error))
        self.update_state()

    # -- point mode -----------------------------------------------------------------------
    def on_point_attention(self) -> None:
        """Cancel the running point run, or start placing the query point (one click in a view)."""
        if self._child is not None:
            if self._pending_kind == "point":
                self.ui.statusLabel.text = _("Cancelling...")
                self._point_again = False
                self._child.cancel()
            return
        if not [n for n in self.input_nodes() if n is not None]:
            slicer.util.errorDisplay(_("Select an input volume first."))
            return
        node = self._ensure_point_node()
        node.RemoveAllControlPoints()  # re-placing: the new click defines the point again
        self._point_asked = None
        # vtkSlicerMarkupsLogic.h: SetActiveListID selects the list, StartPlaceMode(persistent)
        # puts the interaction node in place mode; one click then adds the point.
        markups_logic = slicer.modules.markups.logic()
        markups_logic.SetActiveListID(node)
        markups_logic.StartPlaceMode(False)
        self.ui.statusLabel.text = _("Click in a view to place the point; drag it later to ask again.")

    def _ensure_point_node(self):
        node = self._point_node
        if node is None or node.GetScene() is None:
            self._remove_point_observers()
            node = slicer.mrmlScene.GetFirstNodeByName(POINT_LIST_NAME)
            if node is None or not node.IsA("vtkMRMLMarkupsFiducialNode"):
                node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", POINT_LIST_NAME)
                node.CreateDefaultDisplayNodes()
            node.SetMaximumNumberOfControlPoints(1)
            if hasattr(node, "SetControlPointLabelFormat"):
                node.SetControlPointLabelFormat("P")
            # vtkMRMLMarkupsNode.h: PointPositionDefinedEvent when a click places the point,
            # PointEndInteractionEvent when a drag of it ends.
            for event in (slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent):
                self._point_observers.append((node, node.AddObserver(event, self._on_point_placed)))
            self._point_node = node
        return node

    def _remove_point_observers(self) -> None:
        for node, tag in self._point_observers:
            node.RemoveObserver(tag)
        self._point_observers = []

    def _on_point_placed(self, caller, _event) -> None:
        if caller.GetNumberOfControlPoints() == 0:
            return
        position = [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(0, position)
        if self._point_asked is not None and max(abs(a - b) for a, b in zip(position, self._point_asked)) < 1e-6:
            return  # the same position again (a click that did not move it, or both events of one placement)
        if self._child is not None:
            if self._pending_kind == "point":  # moved during a run: that run is stale
                self._point_again = True
                self._child.cancel()
                self.ui.statusLabel.text = _("Point moved: restarting...")
            else:
                self.ui.statusLabel.text = _("A segmentation is running: place the point again when it ends.")
            return
        self._run_point()

    def _run_point(self) -> None:
        try:
            self._start_point()
        except (ValueError, RuntimeError, OSError) as error:
            slicer.util.errorDisplay(_("Cannot start: {error}").format(error=error))
            self._finish()

    def _start_point(self) -> None:
        p = self.parameters()
        node = self._point_node
        if node is None or node.GetScene() is None or node.GetNumberOfControlPoints() == 0:
            raise ValueError(_("place a point first"))
        nodes = [n for n in self.input_nodes() if n is not None]
        if not nodes:
            raise ValueError(_("select an input volume first"))
        if not self._dependencies_ready():
            return
        card = self.current_card()
        ordered = self.logic.assign_volumes(card, nodes) if card is not None else nodes
        inputs = self._inputs.files(self.logic, ordered)
        point = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(0, point)
        self._point_asked = tuple(point)
        try:
            options = run_options(p)
        except OptionError as error:
            raise ValueError(str(error)) from None
        self._work_dir = tempfile.TemporaryDirectory(prefix="SymmetryAwareSeg_point_")
        # A point the contract refuses (not finite) raises OptionError, a ValueError: a dialog.
        self._child, result = self.logic.start_point_attention(inputs, Path(self._work_dir.name) / "outputs", point, options)
        self._pending = (result, ordered[0], None)
        self._pending_kind = "point"
        self._show_progress(_("Point attention: starting..."))

    def _load_point(self) -> None:
        result, reference, _roi = self._pending
        mirror = self._mirror_node if self._mirror_node is not None and self._mirror_node.GetScene() is not None else None
        previous = self._point_map if self._point_map is not None and self._point_map.GetScene() is not None else None
        loaded = self.logic.load_point_attention(
            result, reference, self._point_node, mirror_node=mirror, previous_map=previous,
            plane_node=self._last_plane(), opacity=float(self.parameters().opacity),
        )
        self._point_map, self._mirror_node = loaded.map, loaded.mirror
        self.ui.pointAttentionLabel.text = point_summary(loaded.summary)

    # -- batch ----------------------------------------------------------------------------
    def on_batch_or_cancel(self) -> None:
        if self._batch is not None:
            self.ui.statusLabel.text = _("Cancelling the batch...")
            self._batch.cancel()  # returns at once; the running case ends, no other starts
            return
        source, target = self.ui.batchInputPath.currentPath, self.ui.batchOutputPath.currentPath
        if not source or not target:
            slicer.util.errorDisplay(_("Choose an input and an output folder."))
            return
        p = self.parameters()
        if not self._dependencies_ready(["dicom"] if p.dicomSeg else []):
            return
        try:
            self._batch = self.logic.start_batch(source, target, run_options(p))
        except (ValueError, OptionError, OSError) as error:
            slicer.util.errorDisplay(_("Cannot start the batch: {error}").format(error=error))
            self._batch = None
            return
        self._show_progress(_("Batch: starting..."))

    def _poll_batch(self) -> None:
        batch = self._batch
        running = batch.poll()
        self.ui.progressBar.setValue(int(round(batch.progress * 100)))
        if running:
            done = len(batch.summaries)
            self.ui.statusLabel.text = _("Batch: case {n} of {total} ({case})").format(
                n=min(done + 1, len(batch.cases)), total=len(batch.cases), case=batch.current_case)
            return
        self._timer.stop()
        failed = [s for s in batch.summaries if "error" in s]
        self.ui.statusLabel.text = _("Batch: {ok} case(s) done, {failed} not done; summary.json in the output folder.").format(
            ok=len(batch.summaries) - len(failed), failed=len(failed))
        for summary in failed:
            logging.error("SymmetryAwareSeg batch: %s: %s", summary["case"], summary["error"])
        self._batch = None
        self.ui.progressBar.setVisible(False)
        self.update_state()

    def on_scene_close(self) -> None:
        """The scene is closing: its interactive worker goes with it (one worker per scene)."""
        self.interactive.close()

    def cleanup(self) -> None:
        # Module closing: kill at once (no timer will poll the escalation any more).
        self.interactive.close()
        if self._child is not None:
            self._child.cancel(grace_s=0)
        if self._batch is not None:
            self._batch.cancel(grace_s=0)
        self._timer.stop()
        self._batch = None
        self._finish()
        self._remove_point_observers()
        self._inputs.cleanup()
