"""Run the core command line in a child process, report its progress, cancel it.

The network runs in a separate process so that Slicer stays responsive and a crash or an
out-of-memory kill of the child never takes the application down. The child speaks the
machine progress protocol of ``symmetryaware segment --progress machine``: lines
``<filter-progress>0.42</filter-progress>`` (fraction 0..1) and
``<filter-stage>aligning</filter-stage>`` on stdout; every other line is a log line.

The child is started in a new session (its own process group), so Cancel can end the
child and everything it started (data loader workers, a PythonSlicer launcher's real
Python) with one ``os.killpg``. psutil, when present, also catches descendants that left
the group. Nothing here imports Qt: the widget polls :meth:`ChildProcess.poll` from a
timer, batch code calls :meth:`ChildProcess.wait`.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

__all__ = ["ProgressEvent", "parse_progress_line", "ChildProcess", "ProcessFailed", "ProcessCancelled", "python_executable"]

_PROGRESS = re.compile(r"^\s*<filter-progress>\s*([-+0-9.eE]+)\s*</filter-progress>\s*$")
_STAGE = re.compile(r"^\s*<filter-stage>(.*?)</filter-stage>\s*$")


@dataclass(frozen=True)
class ProgressEvent:
    """One line of the child's output, classified.

    ``kind`` is ``"progress"`` (``value`` a fraction clamped to 0..1), ``"stage"`` (``text``
    the stage name) or ``"log"`` (``text`` the raw line, ``stream`` ``"stdout"``/``"stderr"``).
    """

    kind: str
    value: float = 0.0
    text: str = ""
    stream: str = "stdout"


def parse_progress_line(line: str, stream: str = "stdout") -> ProgressEvent:
    """Classify one output line of the child (see the module docstring for the protocol).

    Progress tags count only on stdout: a library that echoes them on stderr would
    otherwise move the bar. A malformed number is kept as a log line, never raised.
    """
    text = line.rstrip("\r\n")
    if stream == "stdout":
        match = _PROGRESS.match(text)
        if match:
            try:
                value = float(match.group(1))
            except ValueError:
                return ProgressEvent("log", text=text, stream=stream)
            if value != value:  # NaN
                return ProgressEvent("log", text=text, stream=stream)
            return ProgressEvent("progress", value=min(1.0, max(0.0, value)))
        match = _STAGE.match(text)
        if match:
            return ProgressEvent("stage", text=match.group(1).strip())
    return ProgressEvent("log", text=text, stream=stream)


class ProcessFailed(RuntimeError):
    """The child ended with a non-zero exit code; ``message`` is its last error line."""

    def __init__(self, returncode: int, message: str):
        self.returncode = returncode
        super().__init__(message or f"the segmentation process failed with exit code {returncode}")


class ProcessCancelled(RuntimeError):
    """The run was cancelled by the user."""


class ChildProcess:
    """A child process whose stdout/stderr are parsed into :class:`ProgressEvent` s.

    Args:
        command: the argument vector (no shell).
        env: extra environment variables, added to a copy of ``os.environ``.
        cwd: working directory of the child.
        on_event: called with each event; from the caller's thread when it calls
            :meth:`poll` or :meth:`wait` (never from the reader threads, so a Qt slot is safe).

    Reader threads put lines in a queue; the owner drains it. Both pipes are read, so a
    chatty child never blocks on a full pipe.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        on_event: Optional[Callable[[ProgressEvent], None]] = None,
    ):
        self.command = [str(c) for c in command]
        self.env = dict(env or {})
        self.cwd = cwd
        self.on_event = on_event
        self.progress = 0.0
        self.stage = ""
        self.log: List[Tuple[str, str]] = []
        self.cancelled = False
        self._popen: Optional[subprocess.Popen] = None
        self._queue: "queue.Queue[Optional[ProgressEvent]]" = queue.Queue()
        self._threads: List[threading.Thread] = []

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> "ChildProcess":
        env = dict(os.environ)
        env.update(self.env)
        # Unbuffered, so progress lines arrive as they are printed, not at exit.
        env.setdefault("PYTHONUNBUFFERED", "1")
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        self._popen = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        for stream_name, stream in (("stdout", self._popen.stdout), ("stderr", self._popen.stderr)):
            thread = threading.Thread(target=self._read, args=(stream, stream_name), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def pid(self) -> Optional[int]:
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> Optional[int]:
        return None if self._popen is None else self._popen.poll()

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def _read(self, stream, stream_name: str) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put(parse_progress_line(line, stream_name))
        stream.close()

    def poll(self) -> List[ProgressEvent]:
        """Deliver the events that arrived since the last call; never blocks."""
        events = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self._handle(event)
            events.append(event)
        return events

    def _handle(self, event: ProgressEvent) -> None:
        if event.kind == "progress":
            self.progress = event.value
        elif event.kind == "stage":
            self.stage = event.text
        else:
            self.log.append((event.stream, event.text))
        if self.on_event is not None:
            self.on_event(event)

    def finished(self) -> bool:
        """True once the child has exited and both pipes are read to the end."""
        return self._popen is not None and self._popen.poll() is not None and not any(t.is_alive() for t in self._threads)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> int:
        """Wait for the end, delivering events; return the exit code.

        Raises:
            ProcessCancelled: :meth:`cancel` was called.
            ProcessFailed: non-zero exit; the message is the child's last stderr line.
            TimeoutError: still running after ``timeout`` seconds (the child is left running).
        """
        if self._popen is None:
            raise RuntimeError("the process was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished():
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.command[0]} still running after {timeout} s")
            time.sleep(interval)
        self.poll()
        return self.check()

    def check(self) -> int:
        """Raise for a cancelled or failed run that has ended; return the exit code."""
        code = self._popen.returncode
        if self.cancelled:
            raise ProcessCancelled("the segmentation was cancelled")
        if code != 0:
            raise ProcessFailed(code, self.error_message())
        return code

    def error_message(self) -> str:
        """The child's last non-empty stderr line (the core prints a one-line error there)."""
        for stream, text in reversed(self.log):
            if stream == "stderr" and text.strip():
                return text.strip()
        return ""

    # -- cancel -----------------------------------------------------------------------
    def cancel(self, grace_s: float = 3.0) -> None:
        """End the child and all its descendants: SIGTERM, then SIGKILL after ``grace_s``.

        Safe to call twice or after the child has ended.
        """
        if self._popen is None:
            return
        self.cancelled = True
        victims = _descendants(self._popen.pid)
        if self._popen.poll() is None or victims:
            _signal_tree(self._popen, victims, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self._popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal_tree(self._popen, victims, getattr(signal, "SIGKILL", signal.SIGTERM))
        try:
            self._popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass


def _descendants(pid: int) -> list:
    """psutil handles of every descendant of ``pid`` (empty without psutil)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_tree(popen: subprocess.Popen, victims: list, sig: int) -> None:
    if os.name == "nt":
        # No process groups to signal on Windows: taskkill /T walks the tree.
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(popen.pid)], capture_output=True, check=False)
    else:
        try:
            # The child leads its own session, so its group id is its pid; the group
            # outlives the leader, which lets a second signal reach orphaned workers.
            os.killpg(popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in victims:
        try:
            proc.send_signal(sig)
        except Exception:  # psutil.NoSuchProcess and friends: already gone
            pass


def python_executable() -> str:
    """The Python that runs the core: PythonSlicer inside Slicer, else this interpreter.

    Inside Slicer ``sys.executable`` is the Slicer application, which cannot run ``-m``.
    """
    import shutil

    found = shutil.which("PythonSlicer")
    return found or sys.executable
