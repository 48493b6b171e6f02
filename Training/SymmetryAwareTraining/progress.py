"""A progress line on stderr: step, loss, learning rate, speed (steps and samples per second
per device) and ETA."""

from __future__ import annotations

import sys
import time
from typing import Mapping, Optional, TextIO

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Redraws one line on a terminal; on a pipe or log file prints a line every ``every`` steps."""

    def __init__(self, total: int, start: int = 0, every: int = 10, stream: Optional[TextIO] = None,
                 enabled: bool = True, samples_per_step: int = 0):
        self.total, self.start, self.every = total, start, max(1, every)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.samples_per_step = samples_per_step
        self.t0 = time.perf_counter()
        self.paused = 0.0

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` (validation, checkpoints) out of the speed; the ETA keeps them."""
        self.paused += max(0.0, seconds)

    def update(self, step: int, values: Mapping[str, float], lr: float) -> None:
        if not self.enabled or (not self.tty and step % self.every and step != self.total):
            return
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        training = elapsed - self.paused
        rate = done / training if training > 0 else 0.0
        overall = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / overall if overall > 0 else float("nan")
        shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        width = len(str(self.total))
        speed = f"{rate:.2f} it/s"
        if self.samples_per_step:
            speed += f" {rate * self.samples_per_step:.3g} samples/s/device"
        line = (f"step {step:>{width}}/{self.total} {shown} lr {lr:.3g} "
                f"{speed} elapsed {format_seconds(elapsed)} ETA "
                f"{format_seconds(eta) if eta == eta else '--:--'}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
