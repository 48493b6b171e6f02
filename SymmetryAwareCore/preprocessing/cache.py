"""Prepared cases on disk, content-addressed, so training aligns each case once, not per epoch.

A prepared case is :func:`.prepare.prepare_case`'s brain box: the network input
``(C', w, h, d)`` float32 and the label ``(w, h, d)`` uint8, stored as ``.npy`` files
(read memory-mapped, so workers share the page cache instead of each holding a copy) with
a small JSON record (plane, frame, box). The key is a SHA-256 of the files' resolved paths,
sizes and modification times, the channel names, the preprocessing block and
:data:`PREPARE_VERSION`: editing a file, the card's preprocessing or the preparation code
(bump the version) gives a new entry, never a stale one. Entries are written to a temporary
folder and renamed into place, so concurrent workers or a killed run cannot leave half an
entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from .prepare import prepare_case
from .spec import Preprocessing

__all__ = ["PREPARE_VERSION", "PreparedStore", "default_cache_dir", "cache_key"]

# Bump when prepare_case's output changes for the same inputs and card.
PREPARE_VERSION = 1


def default_cache_dir() -> Path:
    """``$SYMMETRYAWARE_CACHE``, else ``$XDG_CACHE_HOME/symmetryaware/prepared`` (``~/.cache``)."""
    env = os.environ.get("SYMMETRYAWARE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "symmetryaware" / "prepared"


def _file_id(path: Path) -> list:
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return [str(resolved), stat.st_size, stat.st_mtime_ns]


def cache_key(paths: Sequence[Path], label_path: Optional[Path], channel_names: Sequence[str], spec: Preprocessing) -> str:
    record = {
        "version": PREPARE_VERSION,
        "files": [_file_id(Path(p)) for p in paths],
        "label": None if label_path is None else _file_id(Path(label_path)),
        "channels": list(channel_names),
        "preprocessing": spec.to_card(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


class PreparedStore:
    """Get-or-prepare of cases in one cache folder (see the module docstring)."""

    def __init__(self, folder: Optional[Path] = None):
        self.folder = Path(folder) if folder else default_cache_dir()

    def get(self, paths: Sequence[Path], channel_names: Sequence[str], spec: Preprocessing,
            label_path: Optional[Path] = None) -> Tuple[np.ndarray, Optional[np.ndarray], dict]:
        """``(volume (C', w, h, d), label (w, h, d) or None, record)`` of one case, memory-mapped."""
        key = cache_key(paths, label_path, channel_names, spec)
        entry = self.folder / key
        if not (entry / "record.json").is_file():
            self._write(entry, paths, channel_names, spec, label_path)
        record = json.loads((entry / "record.json").read_text())
        volume = np.load(entry / "volume.npy", mmap_mode="r")
        label = np.load(entry / "label.npy", mmap_mode="r") if (entry / "label.npy").is_file() else None
        return volume, label, record

    def _write(self, entry: Path, paths, channel_names, spec: Preprocessing, label_path) -> None:
        prepared = prepare_case(paths, channel_names, spec, label_path=label_path)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=self.folder))
        try:
            np.save(tmp / "volume.npy", prepared.cropped)
            if prepared.label is not None:
                np.save(tmp / "label.npy", prepared.cropped_label)
            record = {
                "inputs": [str(p) for p in paths],
                "label": None if label_path is None else str(label_path),
                "box": [[s.start, s.stop] for s in prepared.box],
                "plane": prepared.plane.to_dict(),
                "frame": prepared.frame.to_dict(),
                "notes": prepared.notes,
                "preprocessing": spec.to_card(),
            }
            (tmp / "record.json").write_text(json.dumps(record))
            try:
                tmp.rename(entry)
            except OSError:
                if not (entry / "record.json").is_file():  # not another worker's finished entry
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
