"""Progress reporting for the command line: a text bar with ETA, or machine-readable lines.

``machine`` prints Slicer's CLI convention on stdout, one line each, flushed at once:
``<filter-progress>0.42</filter-progress>`` (overall fraction) and
``<filter-stage>aligning</filter-stage>``; the Slicer module parses these.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

__all__ = ["PROGRESS_MODES", "ProgressPrinter", "add_progress_argument", "format_seconds"]

PROGRESS_MODES = ("bar", "machine", "none")


def add_progress_argument(parser) -> None:
    """``--progress bar|machine|none``, the same option for every command that reports progress."""
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="bar",
                        help="progress display: a bar on stderr, machine lines on stdout (for Slicer), or none")


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class ProgressPrinter:
    """Reports ``(fraction, stage)`` updates of case ``index`` of ``total`` cases.

    Args:
        mode: ``"bar"`` (stderr, redrawn in place on a terminal, a line per stage otherwise),
            ``"machine"`` (stdout tags) or ``"none"``.
    """

    def __init__(self, mode: str = "bar", stream: Optional[TextIO] = None):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
        self.mode = mode
        self.stream = stream or (sys.stdout if mode == "machine" else sys.stderr)
        self.total_cases = 1
        self.case_index = 0
        self.case_name = ""
        self._case_start = time.perf_counter()
        self._stage = ""
        self.detail = ""
        self._last_draw = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def start_case(self, index: int, total: int, name: str) -> None:
        self.case_index, self.total_cases, self.case_name = index, total, name
        self._case_start = time.perf_counter()
        self._stage = ""
        self.detail = ""

    def _overall(self, fraction: float) -> float:
        return (self.case_index + fraction) / max(self.total_cases, 1)

    def update(self, fraction: float, stage: str) -> None:
        if self.mode == "none":
            return
        if stage != self._stage and self._stage:
            self.detail = ""  # a detail ("window 2/4") belongs to the stage that set it
        if self.mode == "machine":
            if stage != self._stage:
                print(f"<filter-stage>{stage}</filter-stage>", file=self.stream, flush=True)
            print(f"<filter-progress>{self._overall(fraction):.4f}</filter-progress>", file=self.stream, flush=True)
            self._stage = stage
            return
        now = time.perf_counter()
        new_stage = stage != self._stage
        self._stage = stage
        if not new_stage and now - self._last_draw < (0.2 if self._tty else 10.0) and fraction < 1.0:
            return
        self._last_draw = now
        elapsed = now - self._case_start
        eta = elapsed / fraction * (1.0 - fraction) if fraction > 0.02 else float("nan")
        width = 24
        filled = int(round(width * fraction))
        bar = "#" * filled + "-" * (width - filled)
        eta_text = "--:--" if eta != eta else format_seconds(eta)
        text = (
            f"[{self.case_index + 1}/{self.total_cases}] {self.case_name} |{bar}| {100 * fraction:5.1f}% "
            f"{stage:<10}{(' ' + self.detail) if self.detail else ''} {format_seconds(elapsed)} elapsed, ETA {eta_text}"
        )
        if self._tty:
            print("\r" + text, end="\n" if fraction >= 1.0 else "", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line for the user (stderr in every mode, so machine-readable stdout stays clean)."""
        if self.mode == "bar" and self._tty:
            print("", file=sys.stderr)
        print(text, file=sys.stderr, flush=True)
