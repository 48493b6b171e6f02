"""Write files and folders so that a reader never sees half of one.

Files: everything is written to a temporary name in the target folder, then renamed over
the target (atomic on one file system). A failure removes the temporary file, so nothing
half-written is left behind, and an operating-system error (disk full, read-only file
system, no permission) becomes one :class:`InputError` naming the target.

Folders (a case's results, an imported model): :func:`staged_folder` yields a hidden
``.<name>.<random>.partial`` folder beside the target and renames it into place when the
block succeeds. While it works it holds the lock file ``.<name>.lock`` (an ``flock`` on
POSIX, a pid file on Windows), so:

- two runs writing the same target cannot interleave: the second is refused at once;
- a finished target is never removed unless ``overwrite``, even one that another run
  finished while this one worked;
- hidden folders left by a killed run (its lock died with it) are removed by the next run
  that writes into the same folder (:func:`sweep_stale`), never those of a live run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

from ..errors import InputError

__all__ = ["atomic_path", "staged_folder", "sweep_stale"]

PathLike = Union[str, Path]

_PARTIAL = ".partial"
_OLD = ".old"
_LOCK = ".lock"
# .<name>.<token>.partial (any word token: older versions and other writers vary) and
# .<name>.<mkdtemp's 8 characters>.old (only ever made here).
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:[A-Za-z0-9_]+\.partial|[A-Za-z0-9_]{8}\.old)$")


def _write_error(error: OSError, target: Path) -> InputError:
    reason = error.strerror or str(error) or type(error).__name__
    return InputError(f"cannot write: {reason}", target)


def _default_mode(path: Path, mode: int) -> None:
    # mkstemp / mkdtemp create owner-only entries; give them what a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.seg.nrrd``), so
    writers that choose the format from the file name still work.

    Raises:
        InputError: naming ``target`` for any OSError while writing (disk full, ...).
    """
    target = Path(target)
    suffix = "".join(target.suffixes)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=".tmp" + suffix, dir=target.parent)
        os.close(fd)
    except OSError as error:
        raise _write_error(error, target) from error
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _default_mode(tmp_path, 0o666)
        os.replace(tmp_path, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(error, OSError):
            raise _write_error(error, target) from error
        raise


# ----------------------------------------------------------------------------- locks


class _Lock:
    """A held lock file; ``release`` removes it."""

    def __init__(self, path: Path, fd: Optional[int]):
        self.path, self.fd = path, fd

    def release(self) -> None:
        # Unlink before closing: a run that opens the name afterwards makes a new file,
        # and _acquire checks that the file it locked is still the one with that name.
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(path: Path) -> Optional[_Lock]:
    """Take the lock file ``path`` without waiting; None when a live process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: an exclusive pid file
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if _pid_alive(pid):
                    return None
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return _Lock(path, None)
        return None
    while True:
        # O_NOFOLLOW: a lock "file" planted as a link must not make us truncate its target.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:  # a file system without locks (some network mounts): go on unlocked
            return _Lock(path, fd)
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return _Lock(path, fd)
        os.close(fd)  # the holder released and removed it meanwhile: lock the new file


def _lock_path(folder: Path, name: str) -> Path:
    return folder / f".{name}{_LOCK}"


def _is_our_lock(path: Path) -> bool:
    """Lock files written here hold a pid (or nothing yet); leave anyone else's alone."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 32:
            return False
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return text == "" or text.isdigit()


def _staging_dirs(folder: Path, name: Optional[str] = None) -> dict:
    """``{name: [staging folders]}`` of the hidden folders left in ``folder``."""
    found: dict = {}
    try:
        entries = list(folder.iterdir())
    except OSError:
        return found
    for entry in entries:
        match = _STAGING.match(entry.name)
        if not match or (name is not None and match["name"] != name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            found.setdefault(match["name"], []).append(entry)
    return found


def sweep_stale(folder: PathLike, name: Optional[str] = None) -> List[Path]:
    """Remove hidden staging folders in ``folder`` that no live run holds; return them.

    ``name`` limits the sweep to one target's folders. A target whose lock a live run holds
    is left alone; a left-over lock file of a dead run is removed as well.
    """
    folder = Path(folder)
    removed: List[Path] = []
    groups = _staging_dirs(folder, name)
    if name is None:
        try:
            for entry in folder.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(_LOCK) and _is_our_lock(entry):
                    groups.setdefault(entry.name[1 : -len(_LOCK)], [])
        except OSError:
            pass
    elif _lock_path(folder, name).exists():
        groups.setdefault(name, [])
    for key, dirs in groups.items():
        try:
            lock = _acquire(_lock_path(folder, key))
        except OSError:
            continue
        if lock is None:
            continue  # a live run is writing this target
        try:
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
                if not d.exists():
                    removed.append(d)
        finally:
            lock.release()
    return removed


def _renamed(error: InputError, staging: Path, target: Path) -> InputError:
    """The same error, naming the final path instead of the hidden staging one."""
    if error.path is None or not error.path.startswith(str(staging)):
        return error
    final = str(target) + error.path[len(str(staging)) :]
    text = str(error)
    message = text[len(error.path) + 2 :] if text.startswith(error.path + ": ") else text
    return InputError(message, final)


@contextlib.contextmanager
def staged_folder(target: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target``; when the block succeeds it becomes ``target``.

    Holds ``.<name>.lock`` meanwhile and sweeps stale staging folders of the same name first
    (see the module docstring). On failure the staging folder is removed and ``target`` is
    as before.

    Raises:
        InputError: another run holds the lock; ``target`` exists (before or after the
            block) and ``overwrite`` is False; an OSError while staging or renaming
            (naming the final path).
    """
    target = Path(target)
    parent, name = target.parent, target.name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        lock = _acquire(_lock_path(parent, name))
    except OSError as error:
        raise _write_error(error, target) from error
    if lock is None:
        raise InputError(f"another run is writing this result now (lock file {_lock_path(parent, name).name}); "
                         "run again when it has finished", target)
    try:
        _sweep_locked(parent, name)
        if target.exists() and not overwrite:
            raise InputError("exists (another run may have just finished it); kept it, use --overwrite to replace it", target)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=_PARTIAL, dir=parent))
        except OSError as error:
            raise _write_error(error, target) from error
        old = staging.with_name(staging.name[: -len(_PARTIAL)] + _OLD)
        try:
            yield staging
            _default_mode(staging, 0o777)
            if target.exists() or target.is_symlink():
                if not overwrite:
                    raise InputError("was finished by another run while this one worked; kept it "
                                     "(use --overwrite to replace it)", target)
                if target.is_symlink() or not target.is_dir():
                    raise InputError("is not a folder; refusing to replace it", target)
                target.rename(old)  # two renames: never a moment with half of either
            staging.rename(target)
        except BaseException as error:
            if old.exists() and not target.exists():
                with contextlib.suppress(OSError):
                    old.rename(target)  # put the previous result back
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, InputError):
                raise _renamed(error, staging, target) from error
            if isinstance(error, OSError):
                raise _write_error(error, target) from error
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        lock.release()


def _sweep_locked(folder: Path, name: str) -> None:
    """Remove the staging folders of ``name`` while this process holds its lock."""
    for d in _staging_dirs(folder, name).get(name, []):
        shutil.rmtree(d, ignore_errors=True)
