"""Run the core command line in a child process, report its progress, cancel it.

The network runs in a separate process so that Slicer stays responsive and a crash or an
out-of-memory kill of the child never takes the application down. The child speaks the
machine progress protocol of ``symmetryaware segment --progress machine``: lines
``<filter-progress>0.42</filter-progress>`` (fraction 0..1) and
``<filter-stage>aligning</filter-stage>`` on stdout; every other line is a log line.

The child is started in a new session (its own process group), so Cancel can end the
child and everything it started (data loader workers, a PythonSlicer launcher's real
Python) with one ``os.killpg``. psutil, when present, also catches descendants that left
the group. On Windows the child gets no console window (``CREATE_NO_WINDOW``; closing such
a window would kill the job) and its own process group; ``taskkill /T`` ends the tree.
Both sides speak UTF-8 (``PYTHONIOENCODING``), whatever the Windows code page.

Cancel never blocks the caller: it sends the first signal and returns; the kill after the
grace period is sent by the next :meth:`ChildProcess.poll` (the panel's timer) or by
:meth:`ChildProcess.wait`. Nothing here imports Qt: the widget polls from a timer, batch
code calls :meth:`ChildProcess.wait`. Drivers depend on the :class:`Runner` protocol only,
so tests pass a fake.
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
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

try:
    from typing import Protocol
except ImportError:  # pragma: no cover - Python < 3.8 is not supported by Slicer 5.8+ anyway
    Protocol = object

__all__ = [
    "ProgressEvent",
    "parse_progress_line",
    "Runner",
    "ChildProcess",
    "ProcessFailed",
    "ProcessCancelled",
    "python_executable",
    "child_environment",
    "popen_platform_options",
]

# Windows process creation flags (the constants exist in subprocess on Windows only).
CREATE_NEW_PROCESS_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x00000200)
CREATE_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)

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


class Runner(Protocol):
    """What the logic needs of a running child (``ChildProcess``; tests pass fakes)."""

    progress: float
    stage: str
    log: List[Tuple[str, str]]

    def start(self) -> "Runner": ...

    def poll(self) -> List[ProgressEvent]: ...

    def finished(self) -> bool: ...

    def check(self) -> int: ...

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> int: ...

    def cancel(self, grace_s: float = 3.0) -> None: ...


def child_environment(extra: Optional[Mapping[str, str]] = None, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The child's environment: ``base`` (this process's) plus ``extra``, speaking UTF-8.

    ``PYTHONIOENCODING`` makes the child write UTF-8 (a Windows console default would be
    cp1252), which is how its output is decoded here; ``PYTHONUNBUFFERED`` makes progress
    lines arrive as they are printed, not at exit.
    """
    env = dict(os.environ if base is None else base)
    env.update(extra or {})
    env["PYTHONIOENCODING"] = "utf-8"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def popen_platform_options(os_name: str = os.name) -> Dict[str, object]:
    """``subprocess.Popen`` keywords that give the child its own process group, no window."""
    if os_name == "nt":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


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
        self._kill_at: Optional[float] = None  # when a cancelled child still running gets SIGKILL
        self._victims: list = []
        self._queue: "queue.Queue[Optional[ProgressEvent]]" = queue.Queue()
        self._threads: List[threading.Thread] = []

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> "ChildProcess":
        self._popen = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
            env=child_environment(self.env),
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **popen_platform_options(),
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
        """Deliver the events that arrived since the last call; never blocks.

        After :meth:`cancel`, also sends the final kill once the grace period is over.
        """
        self._escalate()
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
        """End the child and all its descendants without blocking the caller.

        Sends SIGTERM to the child's process group now (Windows: ``taskkill /T /F``, which
        has no gentler form for a windowless child) and returns; the SIGKILL after
        ``grace_s`` seconds is sent by the next :meth:`poll` or :meth:`wait` if anything is
        still running. ``grace_s=0`` kills at once. Safe to call twice or after the end.
        """
        if self._popen is None:
            return
        first = not self.cancelled
        self.cancelled = True
        if first:
            self._victims = _descendants(self._popen.pid)
        if self._popen.poll() is None or self._victims:
            if grace_s <= 0:
                _signal_tree(self._popen, self._victims, getattr(signal, "SIGKILL", signal.SIGTERM))
                self._kill_at = None
                return
            if first:
                _signal_tree(self._popen, self._victims, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            self._kill_at = deadline if self._kill_at is None else min(self._kill_at, deadline)

    def _escalate(self) -> None:
        if self._kill_at is None or time.monotonic() < self._kill_at:
            return
        self._kill_at = None
        if self._popen.poll() is None or any(_running(v) for v in self._victims):
            _signal_tree(self._popen, self._victims, getattr(signal, "SIGKILL", signal.SIGTERM))


def _running(proc) -> bool:
    try:
        return proc.is_running()
    except Exception:  # psutil.Error: gone
        return False


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
        # No process groups to signal on Windows: taskkill /T walks the tree. Started, not
        # waited for (the GUI must not block), and without a console window of its own.
        try:
            subprocess.Popen(
                ["taskkill", "/F", "/T", "/PID", str(popen.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                creationflags=CREATE_NO_WINDOW,
            )
        except OSError:
            popen.kill()
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
