"""Checks on output locations, run before any computation so a bad one fails in a second.

Every command checks each of its output files and folders with these functions before it
reads a scan or builds a network. Each failure is an :class:`InputError` naming the output
path, which the command line prints as one line with exit code 2:

- an output is never one of the inputs: compared after resolving ``..`` and symbolic
  links, and by inode, so a hard link to an input is caught too;
- an output is never inside a folder given as an input (a DICOM series folder, a case
  folder): writing there would change the input;
- a file is not meant where a folder exists, nor a folder where a file exists;
- every folder on the way is a folder (not a file), and the nearest existing one is
  writable: probed by creating an anonymous temporary file, which is the only test that
  is right for read-only mounts, ACLs and root alike;
- two outputs of one command are not the same file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from ..errors import InputError

__all__ = [
    "check_output_path",
    "check_output_file",
    "check_output_dir",
    "check_distinct_outputs",
    "check_path_text",
]

PathLike = Union[str, Path]


def check_path_text(path: PathLike, what: str = "path") -> Path:
    """Refuse empty paths and paths holding control characters (NUL cannot reach the OS)."""
    text = os.fspath(path)
    if not text:
        raise InputError(f"empty {what}")
    if any(ord(c) < 32 for c in text):
        raise InputError(f"{what} {text!r} holds a control character")
    return Path(text)


def _resolve(path: Path) -> Path:
    """``path.resolve()``; a symbolic link loop (RuntimeError or OSError) is an InputError."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        raise InputError("is a symbolic link loop or cannot be resolved", path) from None


def _same(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file or folder (links resolved, hard links by inode)."""
    try:
        b_resolved = b.resolve()
    except (RuntimeError, OSError):
        return False  # an input that cannot be resolved is refused by its reader
    if _resolve(a) == b_resolved:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    try:
        child, folder = child.resolve(), folder.resolve()
    except (RuntimeError, OSError):
        return False
    return folder in child.parents


def check_output_path(out: PathLike, inputs: Sequence[Optional[PathLike]]) -> Path:
    """Refuse to write ``out`` over one of the ``inputs`` it was computed from.

    Paths are compared after resolving links and ``..``; an existing file reached by another
    name (a hard link) is caught too. ``None`` entries in ``inputs`` are ignored.

    Returns:
        ``out`` as a :class:`Path`.
    Raises:
        InputError: naming ``out`` when it is one of the inputs.
    """
    out = check_path_text(out, "output path")
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        if _same(out, source):
            raise InputError(f"refusing to overwrite the input {source} with a result", out)
    return out


def _input_folders(inputs: Iterable[Optional[PathLike]]) -> list:
    return [Path(p) for p in inputs if p is not None and Path(p).is_dir()]


def _check_creatable(path: Path, shown: Path) -> None:
    """Every existing folder on the way to ``path`` is a folder, the nearest one writable."""
    ancestor = path
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling link: creating through it lands somewhere else
            raise InputError(f"{ancestor} is a broken symbolic link", shown)
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{ancestor} is a file, so no folder can be made under it", shown)
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise InputError(f"cannot write in {ancestor}: {error.strerror or error}", shown) from None


def check_output_file(
    path: PathLike,
    inputs: Sequence[Optional[PathLike]] = (),
    *,
    suffixes: Optional[Sequence[str]] = None,
    overwrite: bool = True,
) -> Path:
    """Check a file the command will write, before any work (see the module docstring).

    Args:
        path: the output file.
        inputs: files and folders the command reads (``None`` entries ignored).
        suffixes: lower-case endings the writer needs (``(".nii", ".nii.gz")``), or None.
        overwrite: whether an existing file may be replaced.
    Returns:
        ``path`` as a :class:`Path`.
    """
    path = check_output_path(path, inputs)
    _resolve(path)
    if path.is_dir():
        raise InputError("is a folder; a file name is needed here", path)
    if path.exists() and not path.is_file():
        raise InputError("exists and is not a regular file (a device or pipe); refusing to replace it", path)
    if suffixes and not path.name.lower().endswith(tuple(suffixes)):
        raise InputError(f"the file name must end in {' or '.join(suffixes)}", path)
    for folder in _input_folders(inputs):
        if _inside(path, folder):
            raise InputError(f"is inside the input folder {folder}; writing there would change the input", path)
    if path.exists() and not overwrite:
        raise InputError("output file exists; use --overwrite to replace it", path)
    _check_creatable(path.parent, path)
    return path


def check_output_dir(path: PathLike, inputs: Sequence[Optional[PathLike]] = (), *, holds_inputs_ok: bool = True) -> Path:
    """Check a folder the command will write into (or create), before any work.

    Args:
        path: the output folder.
        inputs: files and folders the command reads.
        holds_inputs_ok: False for a folder that may be replaced as a whole (a case folder),
            which must then hold no input.
    """
    path = check_path_text(path, "output folder")
    _resolve(path)
    if path.exists() and not path.is_dir():
        raise InputError("is a file, not a folder", path)
    if not holds_inputs_ok and path.is_symlink():
        raise InputError("is a symbolic link; a result folder that may be replaced must be a real folder", path)
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        if _same(path, source):
            raise InputError(f"is the input {source}; choose another output folder", path)
        if source.is_dir() and _inside(path, source):
            raise InputError(f"is inside the input folder {source}; writing there would change the input", path)
        if not holds_inputs_ok and _inside(source, path):
            raise InputError(f"holds the input {source}, which writing the result would replace", path)
    _check_creatable(path, path)
    return path


def check_distinct_outputs(paths: Iterable[Optional[PathLike]]) -> None:
    """Refuse two outputs of one command that name the same file."""
    seen: list = []
    for item in paths:
        if item is None:
            continue
        path = Path(item)
        for other in seen:
            if _same(path, other):
                raise InputError(f"is given for two outputs ({other} too)", path)
        seen.append(path)
