"""The panel's Interactive section: points, a box, undo, reset, the automatic first pass.

Inside Slicer only (imports qt). The work is done by
:class:`~.interactive_edit.InteractiveSession` (one worker per scene, in the background);
a QTimer calls its ``poll`` so that replies are pasted on the GUI thread and Slicer never
waits for the worker.

Slicer API used, as declared in Slicer's sources:

- ``qSlicerMarkupsPlaceWidget`` (Modules/Loadable/Markups/Widgets/qSlicerMarkupsPlaceWidget.h):
  ``setCurrentNode``, ``buttonsVisible``, ``placeButton()``, ``deleteButton()``,
  ``placeMultipleMarkups = ForcePlaceMultipleMarkups`` (place mode stays on for point after point).
- ``qMRMLSegmentSelectorWidget`` (qMRMLSegmentSelectorWidget.h): ``currentNode()``,
  ``currentSegmentID()``, ``setCurrentNode``; with ``multiSelection``: ``selectedSegmentIDs()``.
- ``vtkMRMLMarkupsNode::PointPositionDefinedEvent`` (Libs/MRML/Core/vtkMRMLMarkupsNode.h): a
  point was placed; positions are read with ``GetNthControlPointPositionWorld`` (RAS, the
  point list's parent transform applied), control points are found again by their id
  (``GetNthControlPointID``, ``GetControlPointIndexByID``, ``RemoveNthControlPoint``).
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

import qt
import slicer

from .interactive import (AUTO, BOX, CLICK, F_CMD, LOAD, RESET, UNDO, interactive_command, interactive_model,
                          session_bias_correction)
from .interactive_edit import InteractiveSession

try:
    from slicer.i18n import tr as _
except ImportError:  # a Slicer without translations: strings stay as written
    def _(text: str) -> str:
        return text

__all__ = ["InteractivePanel", "interactive_model"]

POLL_MS = 100
POINT_LISTS = (("positive", True, (0.1, 0.85, 0.2)), ("negative", False, (0.95, 0.15, 0.15)))


class InteractivePanel:
    """Connects the Interactive widgets of ``ui`` to an :class:`InteractiveSession`.

    Args:
        ui: the .ui's child widgets.
        logic: the module logic (interpreter, core module, environment, ``export_inputs``).
        input_nodes: callable giving the panel's input volumes (None for empty selectors).
        current_card: callable giving the selected model card (or None).
        dependencies_ready: callable asking for / checking the Python dependencies.
    """

    def __init__(self, ui, logic, input_nodes: Callable[[], List], current_card: Callable[[], object],
                 dependencies_ready: Callable[[], bool]):
        self.ui = ui
        self.logic = logic
        self.input_nodes = input_nodes
        self.current_card = current_card
        self.dependencies_ready = dependencies_ready
        self.session: Optional[InteractiveSession] = None
        self._lists = {}  # "positive" / "negative" -> point list node
        self._observations: List[Tuple[object, int]] = []
        self._sent = set()  # control point ids already sent as clicks
        self._tracked: List[Tuple[object, Optional[Tuple[object, str]]]] = []  # (pending, placed point)
        self._placed: List[Optional[Tuple[object, str]]] = []  # one per edit the worker holds
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._connect()
        self.update_state()

    # -- wiring ---------------------------------------------------------------------------
    def _connect(self) -> None:
        ui = self.ui
        ui.interactiveStartButton.clicked.connect(self.on_start)
        ui.boxButton.clicked.connect(self.on_box)
        ui.autoButton.clicked.connect(lambda: self._edit(AUTO))
        ui.undoButton.clicked.connect(self.on_undo)
        ui.resetButton.clicked.connect(lambda: self._edit(RESET))
        # By signature: newer Slicers also declare currentNodeChanged(bool) on this widget.
        ui.interactiveSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._on_segmentation_changed)
        ui.interactiveSegmentSelector.connect("currentSegmentChanged(QString)", lambda _sid: self.update_state())
        ui.interactiveRoiSelector.currentNodeChanged.connect(lambda _node: self.update_state())
        for widget in (ui.positivePlaceWidget, ui.negativePlaceWidget):
            widget.buttonsVisible = False
            widget.placeButton().show()
            widget.deleteButton().show()
            widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

    def _on_segmentation_changed(self, node) -> None:
        # The locked-segment list shows the segments of the segmentation being edited.
        self.ui.lockedSegmentsSelector.setCurrentNode(node)
        self.update_state()

    def update_state(self) -> None:
        loaded = self.session is not None and self.session.loaded
        has_target = bool(self.ui.interactiveSegmentSelector.currentNode() is not None
                          and self.ui.interactiveSegmentSelector.currentSegmentID())
        ready = loaded and has_target
        for widget in (self.ui.positivePlaceWidget, self.ui.negativePlaceWidget, self.ui.autoButton, self.ui.resetButton):
            widget.enabled = ready
        self.ui.boxButton.enabled = ready and self.ui.interactiveRoiSelector.currentNode() is not None
        self.ui.undoButton.enabled = loaded and bool(self._placed)
        auto = self.session.auto_available if loaded else True
        self.ui.autoButton.enabled = ready and auto
        self.ui.interactiveStartButton.text = _("Reload volumes") if loaded else _("Start interactive session")

    def _status(self, text: str) -> None:
        self.ui.interactiveStatusLabel.text = text

    # -- session --------------------------------------------------------------------------
    def _session(self) -> InteractiveSession:
        if self.session is None:
            device = str(self.ui.deviceComboBox.currentText or "") or None
            command = interactive_command(self.logic.python, self.logic.core_module, device=device)
            self.session = InteractiveSession(slicer.mrmlScene, command=command, env=self.logic.env,
                                              export_inputs=self.logic.export_inputs)
        return self.session

    def on_start(self) -> None:
        if not self.dependencies_ready():
            return
        nodes = [n for n in self.input_nodes() if n is not None]
        try:
            # Advanced's "Remove MRI bias field first" follows the selected card; the session may
            # run another model (session_bias_correction says when the box holds for it).
            card = self.current_card()
            bias_correction = session_bias_correction(bool(self.ui.biasCorrectionCheckBox.checked), card)
            pending = self._session().load(nodes, interactive_model(card), bias_correction)
        except (ValueError, RuntimeError, OSError) as error:
            self._status(_("Cannot start: {error}").format(error=error))
            return
        self._forget_points()
        self._ensure_point_lists()
        self._tracked.append((pending, None))
        self._status(_("Loading the volumes into the interactive worker (the first time also starts it)..."))
        self._timer.start()
        self.update_state()

    def _target(self):
        selector = self.ui.interactiveSegmentSelector
        locked = []
        if hasattr(self.ui.lockedSegmentsSelector, "selectedSegmentIDs"):
            locked = [str(s) for s in self.ui.lockedSegmentsSelector.selectedSegmentIDs()]
        return self.session.target(selector.currentNode(), str(selector.currentSegmentID() or ""), locked)

    def _edit(self, kind: str, point=None, ras=None, positive: bool = True) -> None:
        if self.session is None:
            return
        try:
            target = self._target()
            if kind == CLICK:
                pending = self.session.click(ras, positive, target)
            elif kind == BOX:
                pending = self.session.box_from_roi(self.ui.interactiveRoiSelector.currentNode(), target)
            elif kind == AUTO:
                pending = self.session.auto(target)
            else:
                pending = self.session.reset(target)
        except (ValueError, RuntimeError) as error:
            self._status(str(error))
            if point is not None:
                self._remove_point(point)
            return
        self._tracked.append((pending, point))
        self._status(_("Working..."))
        self._timer.start()

    def on_box(self) -> None:
        self._edit(BOX)

    def on_undo(self) -> None:
        if self.session is None:
            return
        try:
            self._tracked.append((self.session.undo(), None))
        except ValueError as error:
            self._status(str(error))
            return
        self._timer.start()

    # -- points ---------------------------------------------------------------------------
    def _ensure_point_lists(self) -> None:
        scene = slicer.mrmlScene
        for name, positive, color in POINT_LISTS:
            node = self._lists.get(name)
            if node is None or node.GetScene() is None:
                node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(f"SymmetryAwareSeg {name} points"))
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetSelectedColor(*color)
                node.GetDisplayNode().SetColor(*color)
                tag = node.AddObserver(node.PointPositionDefinedEvent,
                                       lambda caller, _event, p=positive: self._on_point_defined(caller, p))
                self._observations.append((node, tag))
                self._lists[name] = node
            widget = self.ui.positivePlaceWidget if positive else self.ui.negativePlaceWidget
            widget.setCurrentNode(node)

    def _on_point_defined(self, node, positive: bool) -> None:
        for index in range(node.GetNumberOfControlPoints()):
            point_id = node.GetNthControlPointID(index)
            if point_id in self._sent or node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
                continue
            self._sent.add(point_id)
            ras = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(index, ras)
            self._edit(CLICK, point=(node, point_id), ras=ras, positive=positive)

    @staticmethod
    def _remove_point(point) -> None:
        node, point_id = point
        if node.GetScene() is None:
            return
        index = node.GetControlPointIndexByID(point_id)
        if index >= 0:
            node.RemoveNthControlPoint(index)

    def _forget_points(self) -> None:
        """A new load starts a new case: the points of the last one no longer count."""
        for node in self._lists.values():
            if node.GetScene() is not None:
                node.RemoveAllControlPoints()
        self._sent.clear()
        self._placed.clear()

    # -- replies --------------------------------------------------------------------------
    def _poll(self) -> None:
        if self.session is None:
            self._timer.stop()
            return
        try:
            finished = self.session.poll_pendings()
        except Exception as error:  # a scene error while pasting: say so, keep the panel alive
            logging.exception("SymmetryAwareSeg interactive")
            self._status(_("Interactive update failed: {error}").format(error=error))
            finished = []
        for pending, line in finished:
            self._status(line)
            self._account(pending)
        if not self.session.busy:
            self._timer.stop()
        self.update_state()

    def _account(self, pending) -> None:
        """Keep the point lists in step with the worker's history (refused points go away,
        undo takes its point back)."""
        point = None
        for index, (tracked, placed) in enumerate(self._tracked):
            if tracked is pending:
                point = placed
                del self._tracked[index]
                break
        cmd = pending.request.get(F_CMD)
        if not pending.ok:
            if point is not None:
                self._remove_point(point)
            return
        if cmd == LOAD:
            self._placed.clear()
        elif cmd == UNDO:
            undone = self._placed.pop() if self._placed else None
            if undone is not None:
                self._remove_point(undone)
        else:
            self._placed.append(point)

    # -- life cycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Scene closing or module cleanup: stop the worker, drop observers and point lists."""
        self._timer.stop()
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations.clear()
        self._lists.clear()
        self._sent.clear()
        self._tracked.clear()
        self._placed.clear()
        if self.session is not None:
            self.session.close()
        self.session = None
        self._status(_("Interactive: not started."))
        self.update_state()
