"""Interactive segmentation in the scene: the worker's edits pasted into one segment.

No Qt: the panel calls :meth:`InteractiveSession.poll` from its timer and every scene change
happens there, on the caller's thread. One :class:`InteractiveSession` per scene holds one
:class:`~.interactive.WorkerClient` (one worker process, started on the first request).

What an edit does to the scene (click, box, automatic first pass, reset, undo):

- The worker replies with the half-open box of its grid that holds every voxel whose
  mask value changed; the client fetches that block (``save`` region ``changed``).
- A copy of the worker's mask is kept here, on the grid volume's ``[k, j, i]`` array. Only
  voxels whose worker value changed are written into the target segment, so what the
  segment held before (painted by hand, or from an Apply run) stays wherever the worker
  did not change its mind. Nothing outside the box changes.
- Other segments are never modified. A **locked** segment also keeps the edited segment
  out: the edited segment never gains a voxel that a locked segment holds (an explicit
  rule applied here, on the arrays, not the Segment Editor's masking settings). Unlocked
  segments may overlap it (Slicer then keeps them on separate layers).
- **Undo** asks the worker to undo (so its state follows) and puts the target segment's
  block back exactly as it was before that edit.

Geometry: points are sent as RAS millimetres, as markups give them (world coordinates;
a volume under a transform is refused when the session starts). The worker's grid is its
first matched image, the file written from one of the input volumes; its ``affine`` from
the ``load`` reply is related to that node's IJK-to-RAS by :class:`~.interactive.GridMap`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import slicer

from .interactive import (
    AUTO,
    F_AFFINE,
    F_AUTO_AVAILABLE,
    F_CMD,
    F_GRID_FILE,
    F_MODEL,
    F_PLANE_CONFIDENCE,
    F_SHAPE,
    F_VOLUME_ML,
    F_VOXELS,
    LOAD,
    RESET,
    UNDO,
    GridMap,
    Pending,
    WorkerClient,
    box_request,
    click_request,
    command_request,
    interactive_command,
    load_request,
)
from .nodes import array_from_volume, ijk_to_ras, set_volume_array
from .tables import roi_geometry

__all__ = ["InteractiveSession", "segment_array", "set_segment_array", "roi_ras_bounds", "shape_kji"]


def segment_array(scene, segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    """The segment as uint8 0/1, ``[k, j, i]`` on ``reference_volume``'s grid.

    When the segment's stored labelmap is on that very grid (the usual case: the
    segmentation's geometry was taken from the volume), its voxels are read directly
    (``vtkMRMLSegmentationNode::GetBinaryLabelmapInternalRepresentation``; in a shared layer
    the segment is the voxels holding its ``GetLabelValue()``), in a few milliseconds.
    Otherwise it is exported onto the volume's grid, the route of
    ``slicer.util.arrayFromSegmentBinaryLabelmap`` (Slicer's Base/Python/slicer/util.py),
    on an explicit scene so that it also runs headless.
    """
    shape = shape_kji(reference_volume)
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise ValueError(f"{segmentation_node.GetName()} has no segment {segment_id!r}")
    direct = _internal_array(segmentation_node, segment_id, reference_volume, shape)
    if direct is not None:
        return direct
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__symmetryaware_segment__")
    try:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        # EXTENT_REFERENCE_GEOMETRY: the whole reference grid, not the segment's bounding box.
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, [segment_id], labelmap, reference_volume,
                                                  slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise RuntimeError(f"could not export segment {segment.GetName()!r} on {reference_volume.GetName()}")
        if labelmap.GetImageData() is None:
            return np.zeros(shape, np.uint8)
        out = (array_from_volume(labelmap) > 0).astype(np.uint8)
        if out.shape != shape:
            raise RuntimeError(f"segment {segment.GetName()!r} exported as {out.shape}, the volume is {shape}")
        return out
    finally:
        scene.RemoveNode(labelmap)


def shape_kji(volume_node) -> Tuple[int, int, int]:
    """``(K, J, I)`` of a volume node, without copying its voxels."""
    return tuple(int(n) for n in volume_node.GetImageData().GetDimensions()[::-1])


def _internal_array(segmentation_node, segment_id: str, reference_volume, shape) -> Optional[np.ndarray]:
    """The segment read from its stored labelmap when that is on the volume's grid, else None."""
    import vtk
    from vtk.util import numpy_support

    if segmentation_node.GetParentTransformNode() is not None or reference_volume.GetParentTransformNode() is not None:
        return None
    getter = getattr(segmentation_node, "GetBinaryLabelmapInternalRepresentation", None)
    image = getter(segment_id) if getter is not None else None
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        return None
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    stored = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    if not np.allclose(stored, ijk_to_ras(reference_volume), atol=1e-6):
        return None
    extent = image.GetExtent()
    out = np.zeros(shape, np.uint8)
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return out  # an empty segment
    dims = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    label = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    # The stored extent may reach beyond the volume, or cover part of it: copy the overlap.
    src, dst = [], []
    for a in (2, 1, 0):  # k, j, i
        lo, hi = max(extent[2 * a], 0), min(extent[2 * a + 1] + 1, shape[2 - a])
        if lo >= hi:
            return out
        src.append(slice(lo - extent[2 * a], hi - extent[2 * a]))
        dst.append(slice(lo, hi))
    out[tuple(dst)] = values[tuple(src)] == label
    return out


def set_segment_array(scene, segmentation_node, segment_id: str, array_kji: np.ndarray, reference_volume) -> None:
    """Replace the segment's voxels by ``array_kji`` (0/1, ``[k, j, i]`` on the reference grid).

    Same route as ``slicer.util.updateSegmentBinaryLabelmapFromArray``: a label map node
    imported into the named segment only (the other segments are left as they are).
    """
    import vtk

    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__symmetryaware_segment__")
    try:
        # No display node: the node lives for this call only.
        set_volume_array(labelmap, (np.asarray(array_kji) > 0).astype(np.uint8), ijk_to_ras(reference_volume))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node, ids):
            raise RuntimeError(f"could not update segment {segment_id!r} of {segmentation_node.GetName()}")
    finally:
        scene.RemoveNode(labelmap)


def roi_ras_bounds(roi_node) -> Tuple[np.ndarray, np.ndarray]:
    """``(ras_min, ras_max)``: the axis-aligned RAS box around a (possibly rotated) markups ROI."""
    center, size, axes = roi_geometry(roi_node)
    corners = np.array(list(itertools.product((-0.5, 0.5), repeat=3))) * size
    world = corners @ axes.T + center
    return world.min(axis=0), world.max(axis=0)


@dataclass
class _Target:
    segmentation_node: object
    segment_id: str
    locked: Tuple[str, ...]


@dataclass
class _UndoEntry:
    target: Optional[_Target]
    lo: Tuple[int, int, int] = (0, 0, 0)
    hi: Tuple[int, int, int] = (0, 0, 0)
    before: Optional[np.ndarray] = None  # the target segment's block before the edit, [k, j, i]


class InteractiveSession:
    """One worker for a scene, kept in step with the segments it edits.

    Args:
        scene: the MRML scene.
        command: the worker's argument vector (default: ``PythonSlicer -m SymmetryAwareCore
            interactive``, the segment run's interpreter and core module).
        env: the child's extra environment (the logic's: where the shipped core is).
        client_factory: builds the :class:`WorkerClient` (tests may wrap it).
        export_inputs: writes volume nodes to files (the logic's ``export_inputs``).

    Every action returns at once; :meth:`poll` (the panel's timer) applies what came back
    and returns one line per finished request for the status line.
    """

    def __init__(self, scene, command: Optional[Sequence[str]] = None, env: Optional[Dict[str, str]] = None,
                 client_factory: Callable[..., WorkerClient] = WorkerClient, export_inputs=None,
                 timeout_s: Optional[float] = None):
        self.scene = scene
        self.command = list(command) if command else interactive_command()
        self.env = dict(env or {})
        self.client_factory = client_factory
        self.export_inputs = export_inputs
        self.timeout_s = timeout_s
        self.client: Optional[WorkerClient] = None
        self.volume = None  # the node whose grid is the worker's grid
        self.grid: Optional[GridMap] = None
        self.load_reply: Dict = {}
        self._mirror: Optional[np.ndarray] = None  # the worker's mask, [k, j, i] of self.volume
        self._undo: List[_UndoEntry] = []
        self._files: Dict[str, object] = {}  # exported file -> volume node
        self._loads = itertools.count(1)
        self._outstanding = 0

    # -- life cycle -----------------------------------------------------------------------
    def _client(self) -> WorkerClient:
        if self.client is None:
            kwargs = {} if self.timeout_s is None else {"timeout_s": self.timeout_s}
            self.client = self.client_factory(self.command, env=self.env, **kwargs)
        return self.client

    @property
    def loaded(self) -> bool:
        return self.grid is not None

    @property
    def auto_available(self) -> bool:
        """Whether the loaded model offers an automatic first pass (assumed until known)."""
        return bool(self.load_reply.get(F_AUTO_AVAILABLE, True))

    @property
    def busy(self) -> bool:
        """Requests submitted and not yet applied by :meth:`poll`."""
        return self._outstanding > 0

    def close(self) -> None:
        """Stop the worker (scene closed, module cleaned up); a later request starts a new one."""
        if self.client is not None:
            self.client.close()
        self.client = None
        self.grid, self.volume, self._mirror, self._undo, self._outstanding = None, None, None, [], 0

    def poll(self) -> List[str]:
        """Apply finished requests to the scene; one status line each."""
        return [line for _pending, line in self.poll_pendings()]

    def poll_pendings(self) -> List[Tuple[Pending, str]]:
        """Apply finished requests to the scene; each with its status line."""
        if self.client is None:
            return []
        return [(p, self._status_line(p)) for p in self.client.poll()]

    # -- requests -------------------------------------------------------------------------
    def load(self, volume_nodes: Sequence, model: Optional[str] = None, bias_correction: Optional[bool] = None) -> Pending:
        """Send the volumes (written as files) to the worker: the start of a session.

        ``volume_nodes``: one per model channel, in any order (the worker matches names).
        """
        nodes = [n for n in volume_nodes if n is not None]
        if not nodes:
            raise ValueError("select the input volume(s) first")
        if self.export_inputs is None:
            raise ValueError("no exporter for the volumes (pass the logic's export_inputs)")
        client = self._client()
        folder = Path(client.work_dir) / f"inputs_{next(self._loads)}"
        paths = self.export_inputs(nodes, folder)  # refuses a volume under a transform
        self._files = {str(Path(p).resolve()): n for p, n in zip(paths, nodes)}
        self.grid, self._mirror, self._undo = None, None, []
        return self._submit(load_request([str(p) for p in paths], model, bias_correction), self._loaded)

    def click(self, ras: Sequence[float], positive: bool, target: _Target) -> Pending:
        """A point in RAS mm (``GetNthControlPointPositionWorld``), sent unchanged."""
        return self._edit(click_request(ras, positive), target)

    def box(self, ras_min: Sequence[float], ras_max: Sequence[float], target: _Target) -> Pending:
        return self._edit(box_request(ras_min, ras_max), target)

    def box_from_roi(self, roi_node, target: _Target) -> Pending:
        return self.box(*roi_ras_bounds(roi_node), target)

    def auto(self, target: _Target) -> Pending:
        return self._edit(command_request(AUTO), target)

    def reset(self, target: _Target) -> Pending:
        return self._edit(command_request(RESET), target)

    def undo(self) -> Pending:
        return self._edit(command_request(UNDO), None)

    @staticmethod
    def target(segmentation_node, segment_id: str, locked: Sequence[str] = ()) -> _Target:
        """What an edit writes into: a segment, and the segments it must stay out of."""
        if segmentation_node is None or not segment_id:
            raise ValueError("select a segmentation and the segment to edit")
        if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            raise ValueError(f"{segmentation_node.GetName()} has no segment {segment_id!r}")
        return _Target(segmentation_node, segment_id, tuple(s for s in locked if s != segment_id))

    def _edit(self, request, target: Optional[_Target]) -> Pending:
        if not self.loaded and not self.busy:
            raise ValueError("start the interactive session first (the volumes are not loaded)")
        return self._submit(request, lambda p: self._edited(p, target), fetch_block=True)

    def _submit(self, request, on_done, fetch_block: bool = False) -> Pending:
        self._outstanding += 1

        def done(pending: Pending) -> None:
            self._outstanding -= 1
            on_done(pending)

        return self._client().submit(request, done, fetch_block=fetch_block)

    # -- replies (poll's thread) ------------------------------------------------------------
    def _loaded(self, pending: Pending) -> None:
        if not pending.ok:
            return
        reply = pending.reply
        grid_file = reply.get(F_GRID_FILE)
        volume = self._files.get(str(Path(grid_file).resolve())) if grid_file else None
        volume = volume or next(iter(self._files.values()))
        node_matrix = ijk_to_ras(volume)
        shape = shape_kji(volume)
        affine = reply.get(F_AFFINE)
        try:
            # Without an affine in the reply, the worker's grid is taken to be the node's own.
            self.grid = GridMap(node_matrix if affine is None else affine, node_matrix, shape[::-1])
            worker_shape = reply.get(F_SHAPE)
            if worker_shape is not None and sorted(int(v) for v in worker_shape) != sorted(shape):
                raise ValueError(f"the worker's image is {list(worker_shape)} voxels, the volume {list(shape[::-1])}")
        except ValueError as error:
            self.grid = None
            pending.error = str(error)
            return
        self.volume, self.load_reply = volume, dict(reply.data)
        self._mirror = np.zeros(shape, np.uint8)
        self._undo = []

    def _edited(self, pending: Pending, target: Optional[_Target]) -> None:
        if not pending.ok or self.grid is None:
            return
        reply = pending.reply
        box = reply.changed
        try:
            if pending.request.get(F_CMD) == UNDO:
                entry = self._undo.pop() if self._undo else None
                if box is not None:
                    new = self._worker_block(box, pending.block)
                    if entry is not None and entry.target is not None:
                        self._restore(entry)
                    self._mirror_update(box, new)
                return
            if box is None:
                self._undo.append(_UndoEntry(None))
                return
            new = self._worker_block(box, pending.block)
            self._undo.append(self._paste(target, box, new))
            self._mirror_update(box, new)
        except (ValueError, RuntimeError) as error:
            pending.error = f"the reply could not be applied: {error}"

    def _worker_block(self, box, block) -> Tuple[Tuple, Tuple, np.ndarray]:
        if block is None:
            raise ValueError("the changed region was not fetched")
        lo, hi = self.grid.node_region(box)
        return lo, hi, self.grid.block_to_node_kji(block)

    @staticmethod
    def _slices(lo, hi):
        return tuple(slice(lo[a], hi[a]) for a in (2, 1, 0))  # [k, j, i]

    def _mirror_update(self, box, new) -> None:
        lo, hi, block = new
        self._mirror[self._slices(lo, hi)] = block

    def _paste(self, target: _Target, box, new) -> _UndoEntry:
        lo, hi, block = new
        region = self._slices(lo, hi)
        node, sid = target.segmentation_node, target.segment_id
        self._prepare(node)
        current = segment_array(self.scene, node, sid, self.volume)
        before = current[region].copy()
        flipped = block != self._mirror[region]  # voxels the worker changed its mind about
        after = before.copy()
        after[flipped] = block[flipped]
        for locked_id in target.locked:
            if node.GetSegmentation().GetSegment(locked_id) is None:
                continue
            held = segment_array(self.scene, node, locked_id, self.volume)[region] > 0
            after[held & (before == 0)] = 0  # never grow into a locked segment
        if not np.array_equal(after, before):
            current[region] = after
            set_segment_array(self.scene, node, sid, current, self.volume)
        return _UndoEntry(target, lo, hi, before)

    def _restore(self, entry: _UndoEntry) -> None:
        node, sid = entry.target.segmentation_node, entry.target.segment_id
        if node.GetScene() is None or node.GetSegmentation().GetSegment(sid) is None:
            return  # the segment is gone: nothing to put back
        current = segment_array(self.scene, node, sid, self.volume)
        region = self._slices(entry.lo, entry.hi)
        if not np.array_equal(current[region], entry.before):
            current[region] = entry.before
            set_segment_array(self.scene, node, sid, current, self.volume)

    def _prepare(self, segmentation_node) -> None:
        """A segmentation without a geometry takes the grid volume's (so nothing is resampled)."""
        segmentation = segmentation_node.GetSegmentation()
        if not segmentation_node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) \
                and not any(_has_voxels(segmentation, segmentation.GetNthSegmentID(i)) for i in range(segmentation.GetNumberOfSegments())):
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)

    def _status_line(self, pending: Pending) -> str:
        cmd = pending.request.get(F_CMD)
        prefix = "worker restarted; " if pending.restarted else ""
        if pending.message:
            return f"{prefix}{cmd}: {pending.message}"
        reply = pending.reply
        if cmd == LOAD:
            plane = "" if reply.get(F_PLANE_CONFIDENCE, True) else " (mid-sagittal plane uncertain)"
            return f"{prefix}loaded, model {reply.get(F_MODEL, '?')}{plane} in {reply.seconds:.1f} s"
        volume = reply.get(F_VOLUME_ML)
        size = f", {float(volume):.2f} mL" if volume is not None else ""
        return f"{prefix}{cmd}: {reply.get(F_VOXELS, '?')} voxels{size} in {reply.seconds:.2f} s"


def _has_voxels(segmentation, segment_id: str) -> bool:
    segment = segmentation.GetSegment(segment_id)
    if segment is None:
        return False
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())
    if image is None:
        return False
    extent = image.GetExtent()
    return extent[0] <= extent[1] and extent[2] <= extent[3] and extent[4] <= extent[5]
