"""The JSON-lines worker behind ``symmetryaware interactive`` (protocol: docs/interactive.md).

One request per line on standard input (a UTF-8 JSON object), one reply per line on
standard output, flushed. Every reply holds ``ok``, ``cmd`` (echoed, or null), ``seconds``
(the request's time) and ``id`` when the request had one; ``error`` (one line) when ok is
false. A bad request (malformed JSON, unknown command, missing or wrong fields, a point
outside the image, a request before ``load``) gets ``ok: false`` and changes nothing; the
worker goes on. Anything printed by libraries goes to standard error, never into the
reply stream. ``quit`` (or the end of input) replies / exits with status 0.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any, Callable, Dict, Optional, TextIO

from ..errors import InputError
from .session import InteractiveSession

__all__ = ["Worker", "serve", "COMMANDS"]

COMMANDS = ("load", "click", "box", "auto", "undo", "reset", "save", "status", "quit")


def _field(request: Dict[str, Any], name: str, kind, what: str):
    if name not in request:
        raise InputError(f"missing field {name!r} ({what})")
    value = request[name]
    if kind == "paths":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise InputError(f"field {name!r} must be {what}")
        return value
    if kind is list:
        if not isinstance(value, list) or len(value) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise InputError(f"field {name!r} must be three numbers ({what})")
        return [float(v) for v in value]
    if not isinstance(value, kind):
        raise InputError(f"field {name!r} must be {what}")
    return value


class Worker:
    """Dispatches requests to an :class:`InteractiveSession`; :meth:`handle` never raises."""

    def __init__(self, session: Optional[InteractiveSession] = None):
        self.session = session or InteractiveSession()
        self.done = False

    def handle(self, line: str) -> Dict[str, Any]:
        started = time.perf_counter()
        reply: Dict[str, Any] = {"ok": False, "cmd": None}
        try:
            try:
                request = json.loads(line)
            except (ValueError, RecursionError) as error:
                raise InputError(f"malformed JSON: {str(error).splitlines()[0][:200]}") from None
            if not isinstance(request, dict):
                raise InputError("a request must be a JSON object")
            if "id" in request:
                reply["id"] = request["id"]
            cmd = request.get("cmd")
            reply["cmd"] = cmd if isinstance(cmd, str) else None
            if not isinstance(cmd, str) or cmd not in COMMANDS:
                raise InputError(f"unknown cmd {cmd!r}; known: {', '.join(COMMANDS)}")
            reply.update(self._dispatch(cmd, request))
            reply["ok"] = True
        except InputError as error:
            reply["error"] = str(error)
        except MemoryError:
            reply["error"] = "out of memory"
        except Exception as error:  # a bug: one line here, the traceback on stderr
            traceback.print_exc(file=sys.stderr)
            first = (str(error).strip().splitlines() or [""])[0]
            reply["error"] = f"internal error: {type(error).__name__}: {first}"[:500]
        reply["seconds"] = round(time.perf_counter() - started, 4)
        return reply

    def _dispatch(self, cmd: str, request: Dict[str, Any]) -> Dict[str, Any]:
        s = self.session
        if cmd == "quit":
            self.done = True
            return {}
        if cmd == "status":
            return s.status()
        if cmd == "load":
            images = _field(request, "images", "paths", "a non-empty list of image paths")
            model = request.get("model")
            if model is not None and not isinstance(model, str):
                raise InputError("field 'model' must be a model name or card path")
            bias_correction = request.get("bias_correction")  # absent or null: as the model card says
            if bias_correction is not None and not isinstance(bias_correction, bool):
                raise InputError("field 'bias_correction' must be true, false or null")
            return s.load(images, model, bias_correction)
        if cmd == "save":
            path = _field(request, "path", str, "the output file")
            region = request.get("region")
            return s.save(path, region)
        if cmd == "click":
            ras = _field(request, "ras", list, "RAS mm")
            positive = request.get("positive", True)
            if not isinstance(positive, bool):
                raise InputError("field 'positive' must be true or false")
            return s.click(ras, positive).to_dict()
        if cmd == "box":
            return s.box(_field(request, "ras_min", list, "RAS mm"), _field(request, "ras_max", list, "RAS mm")).to_dict()
        return getattr(s, cmd)().to_dict()  # auto, undo, reset


def serve(stdin: TextIO, stdout: TextIO, worker: Optional[Worker] = None) -> int:
    """Read requests from ``stdin`` until ``quit`` or end of input; reply on ``stdout``."""
    worker = worker or Worker()
    for line in stdin:
        if not line.strip():
            continue
        reply = worker.handle(line)
        stdout.write(json.dumps(reply, allow_nan=False, default=str) + "\n")
        stdout.flush()
        if worker.done:
            break
    return 0
