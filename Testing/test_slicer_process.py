"""The Slicer module's child process: progress parsing and cancel, against REAL processes.

The children are small Python scripts that speak the core's machine progress protocol,
sleep, fail, or start a grandchild, so that Cancel is shown to end the whole tree.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareSegLib.process import (  # noqa: E402
    ChildProcess,
    ProcessCancelled,
    ProcessFailed,
    child_environment,
    parse_progress_line,
    popen_platform_options,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="process-group checks use /proc")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")  # whatever the locale (CI runs with ASCII)
    return path


def test_parse_progress_line():
    assert parse_progress_line("<filter-progress>0.42</filter-progress>\n").value == pytest.approx(0.42)
    assert parse_progress_line("<filter-progress>1.7</filter-progress>").value == 1.0
    assert parse_progress_line("<filter-progress>-3</filter-progress>").value == 0.0
    stage = parse_progress_line("  <filter-stage>aligning</filter-stage>")
    assert (stage.kind, stage.text) == ("stage", "aligning")
    assert parse_progress_line("<filter-progress>nan</filter-progress>").kind == "log"
    assert parse_progress_line("<filter-progress>abc</filter-progress>").kind == "log"
    assert parse_progress_line("loading model 0.5").kind == "log"
    # Tags on stderr are log lines: only stdout drives the bar.
    assert parse_progress_line("<filter-progress>0.5</filter-progress>", "stderr").kind == "log"


def test_real_child_progress_in_order_and_success(tmp_path):
    child_py = script(tmp_path, """
        import sys, time
        print("<filter-stage>aligning</filter-stage>")
        for i in range(1, 5):
            print(f"<filter-progress>{i / 4}</filter-progress>")
            time.sleep(0.05)
        print("a log line")
        print("a warning", file=sys.stderr)
    """)
    events = []
    child = ChildProcess([sys.executable, str(child_py)], on_event=events.append).start()
    assert child.wait(timeout=30) == 0
    progress = [e.value for e in events if e.kind == "progress"]
    assert progress == [0.25, 0.5, 0.75, 1.0]
    assert [e.text for e in events if e.kind == "stage"] == ["aligning"]
    assert child.progress == 1.0 and child.stage == "aligning"
    assert ("stdout", "a log line") in child.log and ("stderr", "a warning") in child.log


def test_real_child_failure_reports_its_error_line(tmp_path):
    child_py = script(tmp_path, """
        import sys
        print("<filter-progress>0.1</filter-progress>")
        print("symmetryaware segment: error: /x/t1.nii.gz: file not found", file=sys.stderr)
        sys.exit(2)
    """)
    child = ChildProcess([sys.executable, str(child_py)]).start()
    with pytest.raises(ProcessFailed) as info:
        child.wait(timeout=30)
    assert info.value.returncode == 2
    assert str(info.value) == "symmetryaware segment: error: /x/t1.nii.gz: file not found"


@posix_only
def test_cancel_kills_the_child_and_its_own_child(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    child_py = script(tmp_path, f"""
        import subprocess, sys, time
        # A worker like a data loader: same process group, ignores nothing.
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(worker.pid))
        print("<filter-stage>segmenting</filter-stage>", flush=True)
        for i in range(1000):
            print(f"<filter-progress>{{i / 1000}}</filter-progress>", flush=True)
            time.sleep(0.05)
    """)
    child = ChildProcess([sys.executable, str(child_py)]).start()
    deadline = time.monotonic() + 30
    while (not pid_file.exists() or child.progress <= 0.0) and time.monotonic() < deadline:
        child.poll()
        time.sleep(0.05)
    assert child.progress > 0.0 and child.stage == "segmenting", "no progress seen before cancel"
    grandchild = int(pid_file.read_text())
    assert alive(child.pid) and alive(grandchild)

    started = time.monotonic()
    child.cancel(grace_s=2.0)
    assert time.monotonic() - started < 0.5, "cancel must not block the GUI"
    with pytest.raises(ProcessCancelled):
        child.wait(timeout=10)
    assert not alive(child.pid)
    for _ in range(100):  # the orphaned worker may take a moment to be reaped
        if not alive(grandchild):
            break
        time.sleep(0.05)
    assert not alive(grandchild), "cancel left the child's own child running"
    child.cancel()  # a second cancel is harmless


@posix_only
def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    ready = tmp_path / "ready"
    child_py = script(tmp_path, f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write("1")
        time.sleep(120)
    """)
    child = ChildProcess([sys.executable, str(child_py)]).start()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    child.cancel(grace_s=0.5)
    assert time.monotonic() - started < 0.5, "cancel must not wait for the grace period"
    assert alive(child.pid), "SIGTERM is ignored: only the later kill can end it"
    with pytest.raises(ProcessCancelled):
        child.wait(timeout=10)  # the poll loop sends SIGKILL once the grace period is over
    assert not alive(child.pid)
    assert child.returncode is not None and child.returncode != 0


def test_child_speaks_utf8_and_windows_children_get_no_console():
    env = child_environment({"EXTRA": "1"}, base={"PATH": "/bin", "PYTHONIOENCODING": "cp1252"})
    assert env["PYTHONIOENCODING"] == "utf-8" and env["EXTRA"] == "1" and env["PATH"] == "/bin"
    flags = popen_platform_options("nt")["creationflags"]
    assert flags & 0x08000000, "CREATE_NO_WINDOW: closing a console window would kill the job"
    assert flags & 0x00000200, "CREATE_NEW_PROCESS_GROUP: cancel ends the whole tree"
    assert popen_platform_options("posix") == {"start_new_session": True}


def test_non_ascii_output_arrives_intact(tmp_path):
    child_py = script(tmp_path, """
        import os, sys
        print(os.environ["PYTHONIOENCODING"], "Öl, ß, 脳 (brain)")
        print("Fehler: Datei übersprungen", file=sys.stderr)
        sys.exit(3)
    """)
    child = ChildProcess([sys.executable, str(child_py)], env={"PYTHONIOENCODING": "latin-1"}).start()
    with pytest.raises(ProcessFailed) as info:
        child.wait(timeout=30)
    assert ("stdout", "utf-8 Öl, ß, 脳 (brain)") in child.log
    assert str(info.value) == "Fehler: Datei übersprungen"
