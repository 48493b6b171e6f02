"""A stand-in for ``symmetryaware interactive`` speaking its JSON-lines protocol (tests only).

Reads the first image's header with nibabel (its grid is the worker's grid; with
FAKE_CANONICAL=1 it reorients to the closest canonical RAS grid first, as a reader with
another axis order would). A click sets (positive) or clears (negative) the 3x3x3 voxels
around the clicked voxel; a box sets the voxels whose centres lie in it; auto sets a fixed
2x2x2 block; undo, reset, save (.npy, region "changed") and status behave as documented.
Every request line is appended to FAKE_LOG. A click at x == 666 exits at once (a crash);
a click at x == 777 sleeps 30 s (a stuck worker).
"""

import json
import os
import sys
import time

import nibabel as nib
import numpy as np

log = os.environ.get("FAKE_LOG")
state = {"mask": None, "affine": None, "undo": [], "clicks": 0, "last": None}


def bbox(diff):
    idx = np.argwhere(diff)
    if idx.size == 0:
        return None
    return [int(v) for v in idx.min(0)], [int(v) + 1 for v in idx.max(0)]


def apply(new, clicks):
    old = state["mask"]
    box = bbox(new != old)
    block = None if box is None else old[tuple(slice(a, b) for a, b in zip(*box))].copy()
    state["undo"].append((box, block, state["clicks"]))
    state["mask"], state["clicks"], state["last"] = new, clicks, box
    return edit_reply(box)


def edit_reply(box):
    voxels = int(state["mask"].sum())
    return {"voxels": voxels, "volume_ml": voxels * 0.001, "clicks": state["clicks"],
            "changed": None if box is None else {"ijk_min": box[0], "ijk_max": box[1]}}


def handle(request):
    cmd = request.get("cmd")
    if cmd == "quit":
        return {}
    if cmd == "load":
        image = nib.load(request["images"][0])
        if os.environ.get("FAKE_CANONICAL") == "1":
            image = nib.as_closest_canonical(image)
        state.update(mask=np.zeros(image.shape[:3], np.uint8), affine=image.affine, undo=[], clicks=0, last=None)
        return {"shape": list(image.shape[:3]), "affine": image.affine.tolist(), "grid_file": request["images"][0],
                "channels": ["t1"], "model": "fake", "plane_confidence": True, "auto_available": True}
    if state["mask"] is None:
        raise ValueError("no scan loaded: send load first")
    if cmd == "click":
        ras = np.asarray(request["ras"], float)
        if ras[0] == 666:
            os._exit(3)
        if ras[0] == 777:
            time.sleep(30)
        ijk = np.rint(np.linalg.solve(state["affine"], np.append(ras, 1.0))[:3]).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= state["mask"].shape):
            raise ValueError(f"the point RAS {ras.tolist()} mm is outside the image")
        new = state["mask"].copy()
        new[tuple(slice(max(0, c - 1), c + 2) for c in ijk)] = 1 if request.get("positive", True) else 0
        return apply(new, state["clicks"] + 1)
    if cmd == "box":
        shape = state["mask"].shape
        ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
        ras = ijk @ state["affine"][:3, :3].T + state["affine"][:3, 3]
        inside = np.all((ras >= request["ras_min"]) & (ras <= request["ras_max"]), axis=1).reshape(shape)
        return apply(np.maximum(state["mask"], inside.astype(np.uint8)), state["clicks"] + 1)
    if cmd == "auto":
        new = state["mask"].copy()
        new[1:3, 1:3, 1:3] = 1
        return apply(new, state["clicks"] + 1)
    if cmd == "reset":
        return apply(np.zeros_like(state["mask"]), 0)
    if cmd == "undo":
        if not state["undo"]:
            raise ValueError("nothing to undo")
        box, block, clicks = state["undo"].pop()
        if box is not None:
            state["mask"][tuple(slice(a, b) for a, b in zip(*box))] = block
        state["clicks"], state["last"] = clicks, box
        return edit_reply(box)
    if cmd == "save":
        box = state["last"]
        block = np.zeros((0, 0, 0), np.uint8) if box is None else state["mask"][tuple(slice(a, b) for a, b in zip(*box))]
        np.save(request["path"], block)
        return {"path": request["path"]}
    if cmd == "status":
        return {"loaded": True, "clicks": state["clicks"], "voxels": int(state["mask"].sum())}
    raise ValueError(f"unknown cmd {cmd!r}")


for line in sys.stdin:
    if not line.strip():
        continue
    if log:
        with open(log, "a", encoding="utf-8") as handle_log:
            handle_log.write(line.strip() + "\n")
    started = time.perf_counter()
    reply = {"ok": False, "cmd": None}
    try:
        request = json.loads(line)
        reply["cmd"] = request.get("cmd")
        if "id" in request:
            reply["id"] = request["id"]
        reply.update(handle(request))
        reply["ok"] = True
    except Exception as error:  # the protocol: one-line error, the worker goes on
        reply["error"] = str(error).splitlines()[0] if str(error) else type(error).__name__
    reply["seconds"] = round(time.perf_counter() - started, 4)
    print("diagnostics go to stderr", file=sys.stderr, flush=True)
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    if reply.get("cmd") == "quit":
        break
