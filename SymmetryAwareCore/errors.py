"""Errors that describe a user's mistake.

An :class:`InputError` carries a one-line message naming the file and the problem. The
command line prints it without a traceback and exits non-zero; any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user: a missing file, an unreadable image, a wrong shape...

    Args:
        message: what is wrong, in one line.
        path: the file concerned, if any; it is put in front of the message.
    """

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None):
        self.path = None if path is None else str(path)
        text = message if self.path is None else f"{self.path}: {message}"
        super().__init__(" ".join(text.split()))
