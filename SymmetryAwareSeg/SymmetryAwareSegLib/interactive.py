"""Client of the interactive worker (``symmetryaware interactive``): protocol, process, grid mapping.

Pure Python (numpy, no slicer, no Qt), so scripts and tests use it without Slicer. The
protocol is JSON lines: one request per line on the worker's stdin, one reply per line on
its stdout (docs/interactive.md of the core). Its command names and field names are
written here once; the Slicer side (``interactive_edit``) builds requests only through the
functions below.

Threading: requests run one at a time on a background thread of :class:`WorkerClient`
(write a line, wait for the reply carrying the same ``id``), so the caller never blocks.
Finished requests are handed back by :meth:`WorkerClient.poll`, from the caller's thread
(the panel's timer), so callbacks may touch the MRML scene. The worker is started on the
first request, restarted when it has died (the last ``load`` and the edits made since are
sent again, so its state is the one the segment shows), and stopped by :meth:`close`.

Geometry: the worker's grid is its first image's ``[i, j, k]`` voxel grid, with ``affine``
IJK-to-RAS (as in its ``load`` reply). :class:`GridMap` maps a block of that grid onto a
volume node's grid, whose arrays are VTK-ordered ``[k, j, i]``. Points go to the worker as
RAS millimetres, unchanged.
"""

from __future__ import annotations

import collections
import itertools
import json
import queue
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .process import child_environment, popen_platform_options, python_executable

__all__ = [
    "EDIT_COMMANDS",
    "ChangedBox",
    "Reply",
    "Pending",
    "WorkerClient",
    "WorkerError",
    "WorkerDied",
    "GridMap",
    "interactive_command",
    "load_request",
    "interactive_model",
    "session_bias_correction",
    "click_request",
    "box_request",
    "command_request",
    "save_changed_request",
    "parse_reply",
]

# -- the protocol: names written once ---------------------------------------------------
LOAD, CLICK, BOX, AUTO, UNDO, RESET, SAVE, STATUS, QUIT = (
    "load", "click", "box", "auto", "undo", "reset", "save", "status", "quit")
EDIT_COMMANDS = (CLICK, BOX, AUTO, UNDO, RESET)
"""Requests that change the mask; their replies hold ``voxels``, ``clicks`` and ``changed``."""
F_CMD, F_ID, F_OK, F_ERROR, F_SECONDS, F_CHANGED = "cmd", "id", "ok", "error", "seconds", "changed"
F_IJK_MIN, F_IJK_MAX = "ijk_min", "ijk_max"
# Reply fields the module reads (load: grid and model; edits: the mask's size).
F_SHAPE, F_AFFINE, F_GRID_FILE, F_MODEL = "shape", "affine", "grid_file", "model"
F_PLANE_CONFIDENCE, F_AUTO_AVAILABLE = "plane_confidence", "auto_available"
F_VOXELS, F_VOLUME_ML = "voxels", "volume_ml"
REGION_CHANGED = "changed"

DEFAULT_TIMEOUT_S = 120.0
"""A click is about a second on a CPU; two minutes means the worker is stuck."""
LOAD_TIMEOUT_S = 900.0
"""``load`` reads the scan, aligns it and may load the model from disk first."""


def load_request(images: Sequence[str], model: Optional[str] = None, bias_correction: Optional[bool] = None) -> Dict[str, Any]:
    """``images``: one file per model channel, any order (the worker matches them by name);
    ``bias_correction``: True/False N4 on each channel first or not (the contract's
    ``--bias-correction`` / ``--no-bias-correction``); None: as the model card says."""
    request: Dict[str, Any] = {F_CMD: LOAD, "images": [str(p) for p in images]}
    if model:
        request[F_MODEL] = str(model)
    if bias_correction is not None:
        request["bias_correction"] = bool(bias_correction)
    return request


def interactive_model(card) -> Optional[str]:
    """The card's path when it describes a promptable model, else None (the worker's default,
    the bundled interactive model)."""
    if card is None:
        return None
    raw = card.raw or {}
    block = raw.get("interactive") or (raw.get("extra") or {}).get("interactive")
    return str(card.path) if block else None


def session_bias_correction(box_checked: bool, card) -> Optional[bool]:
    """What the interactive session's ``load`` asks of N4, given the panel's *Remove MRI bias
    field first* box and the selected model ``card`` (a :class:`~.models.ModelCard` or None).

    The box starts at the selected card's own setting (``card.default_bias_correction``).
    When that card is the promptable model the session runs, the box is its setting. When it
    is a segmentation or CT model, the session runs the bundled interactive model, whose own
    card decides (None), unless the user changed the box from the selected card's starting
    value: that is a choice about these scans (already corrected, say) and holds for every
    model. Before this rule the box was sent as it stood, so a segmentation model without N4
    switched N4 off for an interactive model that asks for it (docs/interactive.md).
    """
    if card is None:
        return None
    if interactive_model(card) is not None:
        return bool(box_checked)
    return bool(box_checked) if bool(box_checked) != card.default_bias_correction else None


def _three(values, what: str) -> List[float]:
    out = [float(v) for v in values]
    if len(out) != 3 or not all(np.isfinite(out)):
        raise ValueError(f"{what} must be three finite numbers, got {values!r}")
    return out


def click_request(ras: Sequence[float], positive: bool) -> Dict[str, Any]:
    """A point in RAS millimetres (Slicer's world coordinates, not LPS), sent unchanged."""
    return {F_CMD: CLICK, "ras": _three(ras, "a click"), "positive": bool(positive)}


def box_request(ras_min: Sequence[float], ras_max: Sequence[float]) -> Dict[str, Any]:
    """An axis-aligned box in RAS millimetres; corners in any order are sorted here."""
    lo, hi = _three(ras_min, "a box corner"), _three(ras_max, "a box corner")
    return {F_CMD: BOX, "ras_min": [min(a, b) for a, b in zip(lo, hi)], "ras_max": [max(a, b) for a, b in zip(lo, hi)]}


def command_request(cmd: str) -> Dict[str, Any]:
    """``auto``, ``undo``, ``reset``, ``status`` or ``quit`` (requests without fields)."""
    if cmd not in (AUTO, UNDO, RESET, STATUS, QUIT):
        raise ValueError(f"{cmd!r} needs fields: use its own request builder")
    return {F_CMD: cmd}


def save_changed_request(path) -> Dict[str, Any]:
    """The last changed block, uint8 ``[i, j, k]`` of the worker's grid, as a ``.npy`` file."""
    return {F_CMD: SAVE, "path": str(path), "region": REGION_CHANGED}


@dataclass(frozen=True)
class ChangedBox:
    """Half-open box ``[ijk_min, ijk_max)`` on the worker's grid (``[i, j, k]`` order)."""

    ijk_min: Tuple[int, int, int]
    ijk_max: Tuple[int, int, int]

    @classmethod
    def parse(cls, value) -> Optional["ChangedBox"]:
        if value is None:
            return None
        try:
            lo = tuple(int(v) for v in value[F_IJK_MIN])
            hi = tuple(int(v) for v in value[F_IJK_MAX])
        except (KeyError, TypeError, ValueError):
            raise WorkerError(f"malformed 'changed' box in the worker's reply: {value!r}") from None
        if len(lo) != 3 or len(hi) != 3 or any(a < 0 or b < a for a, b in zip(lo, hi)):
            raise WorkerError(f"malformed 'changed' box in the worker's reply: {value!r}")
        return cls(lo, hi)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.ijk_min, self.ijk_max))


@dataclass
class Reply:
    """One reply. ``data`` is the whole JSON object (fields beyond the minimum included)."""

    ok: bool
    cmd: Optional[str]
    seconds: float = 0.0
    error: str = ""
    data: Dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> Optional[ChangedBox]:
        return ChangedBox.parse(self.data.get(F_CHANGED))

    def get(self, key: str, default=None):
        return self.data.get(key, default)


def parse_reply(line: str) -> Reply:
    """A reply line as a :class:`Reply`; anything that is not a reply object raises ``WorkerError``."""
    try:
        data = json.loads(line)
    except ValueError:
        raise WorkerError(f"the worker wrote a line that is not JSON: {line.strip()[:200]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get(F_OK), bool):
        raise WorkerError(f"the worker wrote a line that is not a reply: {line.strip()[:200]!r}")
    return Reply(ok=data[F_OK], cmd=data.get(F_CMD), seconds=float(data.get(F_SECONDS) or 0.0),
                 error=str(data.get(F_ERROR) or ""), data=data)


class WorkerError(RuntimeError):
    """The worker cannot answer: it did not start, died, timed out or broke the protocol."""


class WorkerDied(WorkerError):
    """The worker's process ended while a request was on its way or being answered."""


def interactive_command(python: Optional[str] = None, core_module: str = "SymmetryAwareCore",
                        device: Optional[str] = None) -> List[str]:
    """``PythonSlicer -m SymmetryAwareCore interactive [--device D]`` (the segment run's launcher).

    Without ``device`` the worker picks its own default (the CPU)."""
    command = [python or python_executable(), "-m", core_module, "interactive"]
    if device:
        command += ["--device", device]
    return command


# -- the client -----------------------------------------------------------------------------
@dataclass
class Pending:
    """A submitted request: ``reply`` (or ``error``) once ``done``; ``block`` for fetched edits.

    ``block``: for an edit with a changed box and ``fetch_block``, the uint8 ``[i, j, k]``
    array of that box (the worker's ``save`` of region ``changed``). ``restarted``: the
    worker had died and was started again (and given its state back) before this request.
    """

    request: Dict[str, Any]
    on_done: Optional[Callable[["Pending"], None]] = None
    fetch_block: bool = False
    timeout_s: Optional[float] = None
    reply: Optional[Reply] = None
    error: str = ""
    block: Optional[np.ndarray] = None
    restarted: bool = False
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def done(self) -> bool:
        return self._event.is_set()

    @property
    def ok(self) -> bool:
        return self.done and not self.error and self.reply is not None and self.reply.ok

    @property
    def message(self) -> str:
        """One line: the client's error, else the worker's, else empty."""
        if self.error:
            return self.error
        if self.reply is not None and not self.reply.ok:
            return self.reply.error or f"the worker refused {self.request.get(F_CMD)!r}"
        return ""

    def wait(self, timeout: Optional[float] = None) -> "Pending":
        if not self._event.wait(timeout):
            raise TimeoutError(f"{self.request.get(F_CMD)!r} not answered after {timeout} s")
        return self


class WorkerClient:
    """One long-running worker process and the requests sent to it, one at a time.

    Args:
        command: the worker's argument vector (:func:`interactive_command`; tests pass a fake).
        env: extra environment (the child also speaks UTF-8 and gets no console window on
            Windows: the segment run's :func:`~.process.child_environment` and
            :func:`~.process.popen_platform_options`).
        timeout_s: seconds a request may take (``load``: ``load_timeout_s``) before the worker
            is stopped and the request fails with a message saying so.
        work_dir: where fetched blocks are written (default: a temporary folder of its own).
    """

    def __init__(self, command: Sequence[str], env: Optional[Mapping[str, str]] = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, load_timeout_s: float = LOAD_TIMEOUT_S,
                 work_dir: Optional[str] = None):
        self.command = [str(c) for c in command]
        self.env = dict(env or {})
        self.timeout_s = float(timeout_s)
        self.load_timeout_s = float(load_timeout_s)
        self.starts = 0
        self.log: Deque[str] = collections.deque(maxlen=200)  # the worker's stderr, last lines
        self._own_dir = None if work_dir else tempfile.TemporaryDirectory(prefix="SymmetryAwareSeg_interactive_")
        self.work_dir = Path(work_dir or self._own_dir.name)
        self._popen: Optional[subprocess.Popen] = None
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._ids = itertools.count(1)
        self._todo: "queue.Queue[Optional[Pending]]" = queue.Queue()
        self._finished: "queue.Queue[Pending]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._last_load: Optional[Dict[str, Any]] = None
        self._history: List[Dict[str, Any]] = []  # edits since the last load, undone ones removed

    # -- public -------------------------------------------------------------------------
    def submit(self, request: Dict[str, Any], on_done: Optional[Callable[[Pending], None]] = None,
               fetch_block: bool = False, timeout_s: Optional[float] = None) -> Pending:
        """Queue ``request``; returns at once. ``on_done`` runs in :meth:`poll`'s caller."""
        if self._closed:
            raise WorkerError("the interactive worker was shut down")
        pending = Pending(dict(request), on_done, fetch_block, timeout_s)
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="SymmetryAwareSeg interactive", daemon=True)
            self._thread.start()
        self._todo.put(pending)
        return pending

    def call(self, request: Dict[str, Any], fetch_block: bool = False, timeout_s: Optional[float] = None) -> Pending:
        """Blocking :meth:`submit` (scripts, tests): the finished request (check ``.ok``)."""
        pending = self.submit(request, fetch_block=fetch_block, timeout_s=timeout_s)
        limit = (timeout_s or max(self.timeout_s, self.load_timeout_s)) * 3 + 30
        return pending.wait(limit)

    def poll(self) -> List[Pending]:
        """Requests finished since the last call, their ``on_done`` called here; never blocks."""
        out = []
        while True:
            try:
                pending = self._finished.get_nowait()
            except queue.Empty:
                return out
            if pending.on_done is not None:
                pending.on_done(pending)
            out.append(pending)

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return None if self._popen is None else self._popen.pid

    def last_error_line(self) -> str:
        for line in reversed(self.log):
            if line.strip():
                return line.strip()
        return ""

    def close(self, grace_s: float = 2.0) -> None:
        """Stop the worker (``quit``, then a kill after ``grace_s``); later submits fail."""
        if self._closed:
            return
        self._closed = True
        self._todo.put(None)
        if self._thread is not None:
            self._thread.join(timeout=grace_s + 1.0)
        self._stop(grace_s)
        if self._own_dir is not None:
            self._own_dir.cleanup()

    # -- the background thread ------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            pending = self._todo.get()
            if pending is None or self._closed:
                if pending is not None:
                    pending.error = "the interactive worker was shut down"
                    self._finish(pending)
                return
            try:
                self._run(pending)
            except WorkerError as error:
                pending.error = str(error)
            except Exception as error:  # a bug here must still end the request, never hang it
                pending.error = f"interactive client error: {type(error).__name__}: {error}"
            self._finish(pending)

    def _finish(self, pending: Pending) -> None:
        pending._event.set()
        self._finished.put(pending)

    def _run(self, pending: Pending) -> None:
        cmd = pending.request.get(F_CMD)
        timeout = pending.timeout_s or (self.load_timeout_s if cmd == LOAD else self.timeout_s)
        # A worker found dead is started again (and given its state back), and a request it
        # died on is tried once more: a crash the request itself causes then ends in its error.
        for attempt in (1, 2):
            if self._closed:  # close() while this request waited: never start a worker again
                raise WorkerError("the interactive worker was shut down")
            if not self.running():
                pending.restarted = pending.restarted or self.starts > 0
                self._start()
                if self._last_load is not None and cmd != LOAD:
                    self._restore()
            try:
                reply = self._exchange(pending.request, timeout)
                break
            except WorkerDied:
                if attempt == 2:
                    raise
        pending.reply = reply
        if not reply.ok:
            return
        if cmd == LOAD:
            self._last_load, self._history = dict(pending.request), []
        elif cmd == UNDO:
            if self._history:
                self._history.pop()
        elif cmd in EDIT_COMMANDS:
            self._history.append(dict(pending.request))
        if pending.fetch_block and cmd in EDIT_COMMANDS and reply.changed is not None:
            pending.block = self._fetch(reply.changed, timeout)

    def _restore(self) -> None:
        """A restarted worker gets the last load and the edits made since, so that its mask
        is the one the segment shows (the model is deterministic)."""
        reply = self._exchange(self._last_load, self.load_timeout_s)
        if not reply.ok:
            self._last_load, self._history = None, []
            raise WorkerError(f"the worker was restarted but could not load the scan again: {reply.error}")
        for request in list(self._history):
            reply = self._exchange(request, self.timeout_s)
            if not reply.ok:
                self._history = self._history[: self._history.index(request)]
                raise WorkerError(f"the worker was restarted but could not repeat {request.get(F_CMD)!r}: {reply.error}")

    def _fetch(self, box: ChangedBox, timeout: float) -> np.ndarray:
        path = self.work_dir / f"changed_{next(self._ids)}.npy"
        reply = self._exchange(save_changed_request(path), timeout)
        if not reply.ok:
            raise WorkerError(f"the worker could not save the changed region: {reply.error}")
        try:
            block = np.load(path, allow_pickle=False)
        finally:
            try:
                path.unlink()
            except OSError:
                pass
        if tuple(block.shape) != box.shape:
            raise WorkerError(f"the changed region has shape {tuple(block.shape)}, its box says {box.shape}")
        return block.astype(np.uint8, copy=False)

    def _start(self) -> None:
        self._lines = queue.Queue()
        try:
            self._popen = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=child_environment(self.env), text=True, encoding="utf-8", errors="replace", bufsize=1,
                **popen_platform_options(),
            )
        except OSError as error:
            raise WorkerError(f"cannot start the interactive worker ({self.command[0]}): {error}") from None
        self.starts += 1
        lines = self._lines
        threading.Thread(target=self._read, args=(self._popen.stdout, lines), daemon=True).start()
        threading.Thread(target=self._read_log, args=(self._popen.stderr,), daemon=True).start()

    @staticmethod
    def _read(stream, lines: "queue.Queue[Optional[str]]") -> None:
        for line in iter(stream.readline, ""):
            lines.put(line)
        lines.put(None)  # end of stream: the worker has gone

    def _read_log(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self.log.append(line.rstrip("\r\n"))

    def _exchange(self, request: Dict[str, Any], timeout: float) -> Reply:
        """Send one request and wait for the reply with its id. Stops the worker on a timeout
        (its state is then unknown; the next request starts it again)."""
        request = dict(request)
        request[F_ID] = next(self._ids)
        popen = self._popen  # close() may drop it from the other thread
        try:
            popen.stdin.write(json.dumps(request) + "\n")
            popen.stdin.flush()
        except (OSError, ValueError, AttributeError):
            raise WorkerDied(self._died_message()) from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._stop(0.0)
                raise WorkerError(f"the interactive worker did not answer {request[F_CMD]!r} within {timeout:g} s; "
                                  "it was stopped and starts again with the next request") from None
            if line is None:
                raise WorkerDied(self._died_message())
            if not line.strip():
                continue
            reply = parse_reply(line)
            if reply.data.get(F_ID) == request[F_ID]:
                return reply
            # A reply to an abandoned request (not ours): skip it.

    def _died_message(self) -> str:
        code, popen = None, self._popen
        if popen is not None:
            try:
                code = popen.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
        last = self.last_error_line()
        return f"the interactive worker stopped (exit code {code})" + (f": {last}" if last else "")

    def _stop(self, grace_s: float) -> None:
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        try:
            popen.stdin.write(json.dumps({F_CMD: QUIT}) + "\n")
            popen.stdin.flush()
        except (OSError, ValueError):
            pass
        try:
            popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            try:
                popen.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass


# -- geometry ---------------------------------------------------------------------------------
class GridMap:
    """The worker's voxel grid onto a volume node's grid, when they are the same lattice.

    ``worker_ijk_to_ras`` and ``node_ijk_to_ras``: 4x4 IJK-to-RAS matrices. The two grids
    must differ only by an axis permutation, flips and a whole-voxel shift (the worker reads
    the file the node was written to; readers may order axes differently): anything else
    raises ``ValueError``. ``node_shape_ijk``: the node's ``(I, J, K)``.
    """

    def __init__(self, worker_ijk_to_ras, node_ijk_to_ras, node_shape_ijk: Sequence[int], tolerance: float = 1e-3):
        worker = np.asarray(worker_ijk_to_ras, dtype=np.float64)
        node = np.asarray(node_ijk_to_ras, dtype=np.float64)
        if worker.shape != (4, 4) or node.shape != (4, 4):
            raise ValueError("IJK-to-RAS matrices must be 4x4")
        relation = np.linalg.inv(node) @ worker  # worker ijk -> node ijk
        linear, shift = relation[:3, :3], relation[:3, 3]
        rounded = np.rint(linear)
        if (np.abs(linear - rounded).max() > tolerance or np.abs(shift - np.rint(shift)).max() > tolerance
                or sorted(np.abs(rounded).sum(axis=0)) != [1, 1, 1] or sorted(np.abs(rounded).sum(axis=1)) != [1, 1, 1]):
            raise ValueError("the worker's image grid is not the volume's grid (not a permutation of its axes): "
                             "resample the inputs onto one grid")
        self.axis = [int(np.flatnonzero(rounded[:, a])[0]) for a in range(3)]  # worker axis a -> node axis
        self.sign = [int(rounded[self.axis[a], a]) for a in range(3)]
        self.shift = [int(v) for v in np.rint(shift)]
        self.node_shape_ijk = tuple(int(n) for n in node_shape_ijk)

    def node_region(self, box: ChangedBox) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
        """``(ijk_min, ijk_max)`` half-open on the node's grid covering ``box``."""
        lo, hi = [0, 0, 0], [0, 0, 0]
        for a in range(3):
            n = self.axis[a]
            if self.sign[a] > 0:
                lo[n], hi[n] = box.ijk_min[a] + self.shift[n], box.ijk_max[a] + self.shift[n]
            else:
                lo[n], hi[n] = self.shift[n] - box.ijk_max[a] + 1, self.shift[n] - box.ijk_min[a] + 1
        if any(l < 0 or h > s for l, h, s in zip(lo, hi, self.node_shape_ijk)):
            raise ValueError(f"the changed region {lo}..{hi} lies outside the volume {self.node_shape_ijk}")
        return tuple(lo), tuple(hi)

    def block_to_node_kji(self, block_ijk: np.ndarray) -> np.ndarray:
        """A worker ``[i, j, k]`` block as the node's VTK-ordered ``[k, j, i]`` block."""
        out = np.asarray(block_ijk)
        flips = tuple(a for a in range(3) if self.sign[a] < 0)
        if flips:
            out = np.flip(out, axis=flips)
        # Output axis 0 is the node's k, 1 its j, 2 its i: each takes the worker axis mapped there.
        order = [self.axis.index(n) for n in range(3)]
        return np.ascontiguousarray(np.transpose(out, order[::-1]))
