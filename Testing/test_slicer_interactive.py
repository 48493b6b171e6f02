"""Interactive segmentation in the Slicer module: the worker client and the pasting into segments.

The worker is a REAL child process: ``fake_interactive_worker.py``, a small script speaking
the protocol of ``symmetryaware interactive`` (clicks set 3x3x3 voxel cubes on its grid).
The scene is a real MRML scene (slicer-core) holding a volume whose IJK-to-RAS is tilted
and LPS-like (i runs to the left, j up, k to the back), so that any mix-up of RAS and LPS,
of voxel and world coordinates or of ``[i, j, k]`` and ``[k, j, i]`` lands voxels elsewhere.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SymmetryAwareSeg"))
from SymmetryAwareSegLib.interactive import (  # noqa: E402
    ChangedBox,
    GridMap,
    WorkerClient,
    box_request,
    click_request,
    command_request,
    interactive_command,
    load_request,
    parse_reply,
)

FAKE = Path(__file__).with_name("fake_interactive_worker.py")


def fake_command():
    return [sys.executable, str(FAKE)]


def requests_seen(log: Path):
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []


# -- protocol and geometry, no Slicer -------------------------------------------------------
def test_requests_carry_ras_unchanged_and_reject_bad_points():
    assert click_request([-12.5, 3.25, 40.0], False) == {"cmd": "click", "ras": [-12.5, 3.25, 40.0], "positive": False}
    assert box_request([5, -1, 2], [-5, 1, -2]) == {"cmd": "box", "ras_min": [-5.0, -1.0, -2.0], "ras_max": [5.0, 1.0, 2.0]}
    assert load_request(["a.nii.gz"]) == {"cmd": "load", "images": ["a.nii.gz"]}
    assert load_request(["a.nii.gz"], bias_correction=True) == {"cmd": "load", "images": ["a.nii.gz"], "bias_correction": True}
    # False is sent (it turns off a card's N4); None leaves it to the card.
    assert load_request(["a.nii.gz"], bias_correction=False)["bias_correction"] is False
    with pytest.raises(ValueError):
        click_request([1.0, float("nan"), 2.0], True)
    with pytest.raises(ValueError):
        click_request([1.0, 2.0], True)
    with pytest.raises(ValueError):
        command_request("click")
    assert interactive_command("py", device="cpu") == ["py", "-m", "SymmetryAwareCore", "interactive", "--device", "cpu"]


def test_reply_parsing():
    reply = parse_reply('{"ok": true, "cmd": "click", "seconds": 0.5, "changed": {"ijk_min": [1, 2, 3], "ijk_max": [4, 5, 6]}}')
    assert reply.ok and reply.changed == ChangedBox((1, 2, 3), (4, 5, 6)) and reply.changed.shape == (3, 3, 3)
    assert parse_reply('{"ok": false, "cmd": null, "error": "bad", "seconds": 0}').error == "bad"
    from SymmetryAwareSegLib.interactive import WorkerError

    for line in ("not json", "[1, 2]", '{"cmd": "x"}'):
        with pytest.raises(WorkerError):
            parse_reply(line)
    with pytest.raises(WorkerError):
        parse_reply('{"ok": true, "changed": {"ijk_min": [3, 0, 0], "ijk_max": [1, 1, 1]}}').changed


@pytest.mark.parametrize("seed", range(6))
def test_grid_map_puts_each_worker_voxel_on_the_node_voxel_at_the_same_place(seed):
    rng = np.random.default_rng(seed)
    node_shape = (7, 5, 6)  # I, J, K
    node = np.eye(4)
    node[:3, :3] = np.array([[-1.0, 0.1, 0.0], [0.0, 0.2, 1.5], [0.1, -1.2, 0.0]])  # tilted, LPS-like
    node[:3, 3] = [30.0, -20.0, 10.0]
    # The worker's grid: the same lattice with permuted, flipped axes (another reader's order).
    perm = rng.permutation(3)
    flips = rng.integers(0, 2, 3) * 2 - 1
    relation = np.zeros((4, 4))
    relation[3, 3] = 1
    for a in range(3):  # worker axis a -> node axis perm[a]
        relation[perm[a], a] = flips[a]
        relation[perm[a], 3] = node_shape[perm[a]] - 1 if flips[a] < 0 else 0
    worker = node @ relation
    worker_shape = tuple(node_shape[perm[a]] for a in range(3))
    grid = GridMap(worker, node, node_shape)
    box = ChangedBox((1, 0, 2), (worker_shape[0], 3, worker_shape[2] - 1))
    block = rng.integers(0, 2, box.shape).astype(np.uint8)
    lo, hi = grid.node_region(box)
    pasted = np.zeros(node_shape[::-1], np.uint8)
    pasted[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = grid.block_to_node_kji(block)
    for index in np.argwhere(np.ones(box.shape)):
        w = np.asarray(box.ijk_min) + index
        ras = worker @ np.append(w, 1.0)
        i, j, k = np.rint(np.linalg.solve(node, ras)[:3]).astype(int)
        assert pasted[k, j, i] == block[tuple(index)]
    assert pasted.sum() == block.sum()


def test_grid_map_refuses_another_grid():
    node = np.diag([1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="not the volume's grid"):
        GridMap(np.diag([2.0, 1.0, 1.0, 1.0]), node, (4, 4, 4))
    with pytest.raises(ValueError, match="outside the volume"):
        GridMap(node, node, (4, 4, 4)).node_region(ChangedBox((0, 0, 0), (5, 1, 1)))


# -- the client against a real child --------------------------------------------------------
@pytest.fixture
def image_file(tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.array([[-2.0, 0, 0, 20.0], [0, 0, 2.0, -10.0], [0, -2.0, 0, 12.0], [0, 0, 0, 1]])
    path = tmp_path / "case_t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 8, 6), np.float32), affine), path)
    return path, affine


@pytest.fixture
def client(tmp_path, monkeypatch):
    log = tmp_path / "requests.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    made = WorkerClient(fake_command(), timeout_s=20)
    made.request_log = log
    yield made
    made.close()


def test_client_starts_the_worker_once_and_survives_refusals(client, image_file):
    path, affine = image_file
    assert not client.running() and client.starts == 0  # nothing starts before the first request
    before = client.call(click_request([0, 0, 0], True))
    assert not before.ok and "load" in before.message
    assert client.call(load_request([str(path)])).ok
    outside = client.call(click_request([500.0, 0, 0], True))
    assert not outside.ok and "outside" in outside.message
    unknown = client.call({"cmd": "nonsense"})
    assert not unknown.ok and "unknown" in unknown.message
    ras = (affine @ [4, 3, 2, 1])[:3].tolist()
    done = client.call(click_request(ras, True), fetch_block=True)
    assert done.ok and done.reply.changed == ChangedBox((3, 2, 1), (6, 5, 4))
    assert done.block.shape == (3, 3, 3) and done.block.all()
    assert client.starts == 1 and client.running()
    assert requests_seen(client.request_log)[-2]["ras"] == ras  # sent unchanged
    assert any("stderr" in line for line in client.log)  # the worker's stderr is kept, not parsed


def test_client_restarts_a_dead_worker_and_gives_it_its_state_back(client, image_file):
    path, affine = image_file
    client.call(load_request([str(path)]))
    first = (affine @ [2, 2, 2, 1])[:3].tolist()
    assert client.call(click_request(first, True)).ok
    # A request that kills the worker: restarted, given its state back, tried once more, then refused.
    crashed = client.call(click_request([666.0, 0, 0], True))
    assert not crashed.ok and "stopped" in crashed.message and "exit code 3" in crashed.message
    assert crashed.restarted and client.starts == 2
    sent = [(r["cmd"], r.get("ras")) for r in requests_seen(client.request_log)]
    assert sent[-3:] == [("load", None), ("click", first), ("click", [666.0, 0.0, 0.0])]
    second = (affine @ [6, 5, 3, 1])[:3].tolist()
    after = client.call(click_request(second, True))
    assert after.ok and after.restarted and client.starts == 3
    assert after.reply.get("clicks") == 2  # the first click was given back before this one


def test_a_stuck_worker_times_out_with_a_clear_message_and_restarts(tmp_path, monkeypatch, image_file):
    path, _ = image_file
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    client = WorkerClient(fake_command(), timeout_s=1.5)
    try:
        client.call(load_request([str(path)]))
        stuck = client.call(click_request([777.0, 0, 0], True))
        assert not stuck.ok and "did not answer 'click' within 1.5 s" in stuck.message
        status = client.call(command_request("status"))
        assert status.ok and status.restarted and client.starts == 2
    finally:
        client.close()


def test_requests_do_not_block_the_caller_and_finish_in_poll(client, image_file):
    path, _ = image_file
    seen = []
    pending = client.submit(load_request([str(path)]), on_done=seen.append)
    assert seen == []  # submit returned before the reply
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        client.poll()
        time.sleep(0.02)
    assert seen == [pending] and pending.ok


def test_close_during_a_request_ends_it_and_starts_nothing(client, image_file):
    path, _ = image_file
    client.call(load_request([str(path)]))
    stuck = client.submit(click_request([777.0, 0, 0], True))  # the worker sleeps 30 s on it
    time.sleep(0.5)
    started = time.monotonic()
    client.close()
    stuck.wait(15)
    assert time.monotonic() - started < 15 and not stuck.ok and client.starts == 1 and not client.running()


def test_close_stops_the_worker(client, image_file):
    path, _ = image_file
    client.call(load_request([str(path)]))
    popen = client._popen
    client.close()
    assert popen.poll() is not None
    with pytest.raises(Exception, match="shut down"):
        client.submit(command_request("status"))


# -- the scene: pasting into segments (slicer-core) ------------------------------------------
def _scene_parts():
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the scene tests")
    from SymmetryAwareSegLib.interactive_edit import InteractiveSession, segment_array, set_segment_array
    from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic
    from SymmetryAwareSegLib.nodes import new_scene, set_volume_array

    return slicer, InteractiveSession, segment_array, set_segment_array, SymmetryAwareSegLogic, new_scene, set_volume_array


def _tilted_lps_like() -> np.ndarray:
    """i runs to the left, j up (superior), k to the back (posterior), tilted by 8 degrees."""
    axes = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]).T  # columns: i, j, k directions
    t = np.deg2rad(8.0)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    out = np.eye(4)
    out[:3, :3] = tilt @ axes @ np.diag([1.5, 1.8, 2.0])
    out[:3, 3] = [14.0, 9.0, -11.0]
    return out


NODE_IJK_TO_RAS = _tilted_lps_like()
SHAPE_KJI = (9, 11, 12)


def wait_for(session, pending, limit=60.0):
    lines = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        lines += session.poll()
        if pending.done and not session.busy:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{pending.request} did not finish: {lines}")


@pytest.fixture
def scene_session(request, tmp_path, monkeypatch):
    """A scene, a volume, a segmentation (lesion, ventricle) and a loaded session. The fake
    worker reads the file in another axis order (``canonical reader``) unless the test asks
    for ``same axes``."""
    slicer, InteractiveSession, segment_array, set_segment_array, Logic, new_scene, set_volume_array = _scene_parts()
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "requests.log"))
    # The worker may read the file in another axis order: the paste must not care.
    monkeypatch.setenv("FAKE_CANONICAL", "0" if getattr(request, "param", "") == "same axes" else "1")
    scene = new_scene()
    logic = Logic(scene=scene)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case_t1")
    set_volume_array(volume, np.zeros(SHAPE_KJI, np.float32), NODE_IJK_TO_RAS)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    lesion = segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion", [1.0, 0.0, 0.0])
    ventricle = segmentation.GetSegmentation().AddEmptySegment("ventricle", "ventricle", [0.0, 0.0, 1.0])
    session = InteractiveSession(scene, command=fake_command(), export_inputs=logic.export_inputs)
    load = session.load([volume])
    wait_for(session, load)
    assert load.ok, load.message
    parts = dict(scene=scene, volume=volume, segmentation=segmentation, lesion=lesion, ventricle=ventricle,
                 session=session, read=lambda sid: segment_array(scene, segmentation, sid, volume),
                 write=lambda sid, a: set_segment_array(scene, segmentation, sid, a, volume),
                 log=tmp_path / "requests.log", reader=getattr(request, "param", "canonical reader"))
    yield parts
    session.close()


def ras_of(ijk):
    return (NODE_IJK_TO_RAS @ np.append(np.asarray(ijk, float), 1.0))[:3]


def cube_kji(center_ijk, value=1):
    out = np.zeros(SHAPE_KJI, np.uint8)
    i, j, k = center_ijk
    out[max(0, k - 1):k + 2, max(0, j - 1):j + 2, max(0, i - 1):i + 2] = value
    return out


@pytest.mark.parametrize("scene_session", ["same axes", "canonical reader"], indirect=True)
def test_a_click_lands_on_the_clicked_voxels_of_the_selected_segment_only(scene_session):
    s = scene_session
    session = s["session"]
    target = session.target(s["segmentation"], s["lesion"])
    click = ras_of((4, 6, 3)) + np.array([0.3, -0.2, 0.25])  # off the voxel centre, nearest is still (4, 6, 3)
    pending = session.click(click.tolist(), True, target)
    lines = wait_for(session, pending)
    assert pending.ok, lines
    assert json.loads(s["log"].read_text().splitlines()[-2])["ras"] == click.tolist()  # RAS unchanged
    np.testing.assert_array_equal(s["read"](s["lesion"]), cube_kji((4, 6, 3)))
    assert s["read"](s["ventricle"]).sum() == 0
    assert "click: 27 voxels" in lines[-1]
    identity = (session.grid.axis, session.grid.sign) == ([0, 1, 2], [1, 1, 1])
    assert identity == (s["reader"] == "same axes")  # the canonical reader really sees other axes


def test_locked_segment_is_untouched_and_kept_out(scene_session):
    s = scene_session
    session = s["session"]
    held = np.zeros(SHAPE_KJI, np.uint8)
    held[3, 6, 4] = held[4, 7, 5] = 1  # inside the coming cube
    held[8, 10, 11] = 1  # far away
    s["write"](s["ventricle"], held)
    target = session.target(s["segmentation"], s["lesion"], locked=[s["ventricle"]])
    wait_for(session, session.click(ras_of((4, 6, 3)).tolist(), True, target))
    np.testing.assert_array_equal(s["read"](s["ventricle"]), held)
    expected = cube_kji((4, 6, 3)) & (1 - held)
    np.testing.assert_array_equal(s["read"](s["lesion"]), expected)


def test_unlocked_segments_are_not_modified_either(scene_session):
    s = scene_session
    session = s["session"]
    held = np.zeros(SHAPE_KJI, np.uint8)
    held[3, 6, 4] = 1
    s["write"](s["ventricle"], held)
    wait_for(session, session.click(ras_of((4, 6, 3)).tolist(), True, session.target(s["segmentation"], s["lesion"])))
    np.testing.assert_array_equal(s["read"](s["ventricle"]), held)
    np.testing.assert_array_equal(s["read"](s["lesion"]), cube_kji((4, 6, 3)))  # overlap allowed


def test_undo_round_trip_restores_the_segment_exactly(scene_session):
    s = scene_session
    session = s["session"]
    painted = np.zeros(SHAPE_KJI, np.uint8)
    painted[2:5, 5:8, 1:4] = 1  # drawn by hand before the session: partly under the coming edits
    painted[7, 1, 1] = 1
    s["write"](s["lesion"], painted)
    target = session.target(s["segmentation"], s["lesion"])
    states = [s["read"](s["lesion"])]
    for ijk, positive in (((4, 6, 3), True), ((8, 8, 6), True), ((4, 6, 3), False)):
        pending = session.click(ras_of(ijk).tolist(), positive, target)
        wait_for(session, pending)
        assert pending.ok, pending.message
        states.append(s["read"](s["lesion"]))
    # Far from the edits, the painted voxel stays; the positive click added to what was painted.
    assert states[1][7, 1, 1] == 1 and states[1].sum() > painted.sum()
    assert (states[3] & cube_kji((4, 6, 3))).sum() == 0  # the negative click cleared its cube
    for expected in reversed(states[:-1]):
        pending = session.undo()
        wait_for(session, pending)
        assert pending.ok, pending.message
        np.testing.assert_array_equal(s["read"](s["lesion"]), expected)
    nothing = session.undo()
    wait_for(session, nothing)
    assert not nothing.ok and "nothing to undo" in nothing.message
    np.testing.assert_array_equal(s["read"](s["lesion"]), painted)


def test_box_auto_and_reset(scene_session):
    s = scene_session
    session = s["session"]
    target = session.target(s["segmentation"], s["lesion"])
    centre = ras_of((6, 5, 4))
    pending = session.box((centre - 1.0).tolist(), (centre + 1.0).tolist(), target)
    wait_for(session, pending)
    assert pending.ok and s["read"](s["lesion"])[4, 5, 6] == 1
    auto = session.auto(target)
    wait_for(session, auto)
    assert auto.ok and s["read"](s["lesion"]).sum() > 1
    reset = session.reset(target)
    wait_for(session, reset)
    assert reset.ok and s["read"](s["lesion"]).sum() == 0


def test_a_refused_click_changes_nothing_and_the_session_goes_on(scene_session):
    s = scene_session
    session = s["session"]
    target = session.target(s["segmentation"], s["lesion"])
    outside = session.click([900.0, 0.0, 0.0], True, target)
    lines = wait_for(session, outside)
    assert not outside.ok and "outside" in lines[-1]
    assert s["read"](s["lesion"]).sum() == 0
    inside = session.click(ras_of((4, 6, 3)).tolist(), True, target)
    wait_for(session, inside)
    assert inside.ok and session.client.starts == 1


def test_the_worker_dies_mid_session_and_the_next_click_still_lands(scene_session):
    s = scene_session
    session = s["session"]
    target = session.target(s["segmentation"], s["lesion"])
    wait_for(session, session.click(ras_of((4, 6, 3)).tolist(), True, target))
    session.client._popen.kill()
    later = session.click(ras_of((8, 8, 6)).tolist(), True, target)
    lines = wait_for(session, later)
    assert later.ok and later.restarted and lines[-1].startswith("worker restarted")
    np.testing.assert_array_equal(s["read"](s["lesion"]), cube_kji((4, 6, 3)) | cube_kji((8, 8, 6)))


def test_roi_bounds_enclose_a_rotated_roi():
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed for markups")
    import vtk

    from SymmetryAwareSegLib.interactive_edit import roi_ras_bounds
    from SymmetryAwareSegLib.nodes import new_scene

    scene = new_scene()
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    if roi is None:
        pytest.skip("this scene cannot hold a markups ROI")
    roi.SetCenter(10.0, -5.0, 3.0)
    roi.SetSize(20.0, 10.0, 4.0)
    turn = vtk.vtkMatrix4x4()  # 90 degrees about S: the box's x axis points to A
    turn.SetElement(0, 0, 0.0), turn.SetElement(0, 1, -1.0), turn.SetElement(1, 0, 1.0), turn.SetElement(1, 1, 0.0)
    roi.SetAndObserveObjectToNodeMatrix(turn)
    lo, hi = roi_ras_bounds(roi)
    centre = [0.0, 0.0, 0.0]
    roi.GetCenterWorld(centre)
    np.testing.assert_allclose(hi - lo, [10.0, 20.0, 4.0], atol=1e-6)
    np.testing.assert_allclose((hi + lo) / 2, centre, atol=1e-6)
    request = box_request(lo, hi)
    assert request["ras_min"] == [float(v) for v in lo]


# -- the real worker (runs once the core's interactive package is merged) ----------------------
@pytest.mark.slow
def test_real_worker_drives_the_segment_and_matches_its_saved_mask(tmp_path):
    """The real ``symmetryaware interactive`` with a tiny random-weight promptable model on a
    tilted, LPS-stored glioma phantom: after each edit the segment equals the worker's own
    saved mask (``save`` .nii.gz, on the first file's grid), compared in RAS through the grids."""
    pytest.importorskip("slicer", reason="slicer-core is needed for the scene tests")
    pytest.importorskip("SymmetryAwareCore.interactive.session", reason="the core's interactive worker is not here")
    torch = pytest.importorskip("torch")
    nib = pytest.importorskip("nibabel")
    from SymmetryAwareCore.inference.model_source import brats_card_fields
    from SymmetryAwareCore.interactive.session import card_interactive_block
    from SymmetryAwareCore.io.writers import write_nifti
    from SymmetryAwareCore.models.model_card import Label, ModelCard, save_model
    from SymmetryAwareCore.models.promptable import PromptableSASwinUNETR
    from SymmetryAwareCore.phantoms.generator import make_subject

    from SymmetryAwareSegLib.command import default_child_env
    from SymmetryAwareSegLib.interactive_edit import InteractiveSession, segment_array
    from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic
    from SymmetryAwareSegLib.nodes import ijk_to_ras, new_scene

    phantom = make_subject(11, "glioma", "mri", spacing=3.0, scenario="unilateral", orientation="LPS")
    paths = []
    for c, name in enumerate(phantom.image.channel_names):
        paths.append(tmp_path / f"p011_{name}.nii.gz")
        write_nifti(phantom.image.channel(c), paths[-1])
    torch.manual_seed(0)
    net = PromptableSASwinUNETR(image_channels=4, guidance_channels=3, out_channels=1, feature_size=12,
                                depths=(1, 1, 1, 1), use_saca=True)
    fields = brats_card_fields()
    card = ModelCard(channels=fields["channels"], modality="MRI", labels=[Label(1, "lesion", (250, 120, 40))],
                     preprocessing={"spacing": [3.0, 3.0, 3.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"},
                     postprocessing={"activation": "sigmoid", "regions": {"lesion": [1]}, "threshold": 0.5},
                     name="tiny-interactive-slicer-test", extra={"interactive": card_interactive_block(2.0)})
    card_path = save_model(net, tmp_path / "tiny.safetensors", card)

    scene = new_scene()
    logic = SymmetryAwareSegLogic(scene=scene, env={**default_child_env(), "OMP_NUM_THREADS": "2"})
    volumes = [logic.read_volume(p) for p in reversed(paths)]  # any order: the worker matches names
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.CreateDefaultDisplayNodes()
    lesion = segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion", [1.0, 0.5, 0.1])
    command = [sys.executable, "-m", "SymmetryAwareCore", "interactive", "--threads", "2"]
    session = InteractiveSession(scene, command=command, env=logic.env, export_inputs=logic.export_inputs, timeout_s=300)
    try:
        load = session.load(volumes, str(card_path))
        wait_for(session, load, limit=600)
        assert load.ok, load.message
        grid_volume = session.volume
        target = session.target(segmentation, lesion)
        affine = phantom.label.affine
        centre = (affine @ np.append((np.asarray(phantom.label.spatial_shape) - 1) / 2.0, 1.0))[:3]
        edits = [lambda: session.click(centre.tolist(), True, target),
                 lambda: session.box((centre - 20).tolist(), (centre + 20).tolist(), target),
                 lambda: session.undo()]
        voxels = []
        for index, edit in enumerate(edits):
            pending = edit()
            wait_for(session, pending, limit=600)
            assert pending.ok, pending.message
            voxels.append(pending.reply.get("voxels"))
            saved = tmp_path / f"mask_{index}.nii.gz"
            assert session.client.call({"cmd": "save", "path": str(saved)}).ok
            image = nib.load(str(saved))
            worker_mask = np.asarray(image.dataobj) > 0
            # Each node voxel centre, found on the worker's grid through RAS.
            node = segment_array(scene, segmentation, lesion, grid_volume)
            k, j, i = np.meshgrid(*(np.arange(n) for n in node.shape), indexing="ij")
            ras = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4) @ ijk_to_ras(grid_volume).T
            w = np.rint(ras @ np.linalg.inv(image.affine).T)[:, :3].astype(int)
            np.testing.assert_array_equal(node.ravel() > 0, worker_mask[w[:, 0], w[:, 1], w[:, 2]])
        assert session.client.starts == 1
        assert voxels[2] == voxels[0] and any(voxels), voxels  # undo is back to the click's mask
    finally:
        session.close()


def test_direct_read_equals_slicers_export_for_shared_and_separate_layers(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the scene tests")
    from SymmetryAwareSegLib import interactive_edit
    from SymmetryAwareSegLib.interactive_edit import segment_array, set_segment_array
    from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic
    from SymmetryAwareSegLib.nodes import new_scene, set_volume_array

    scene = new_scene()
    SymmetryAwareSegLogic(scene=scene)  # registers the segmentation converters
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    set_volume_array(volume, np.zeros(SHAPE_KJI, np.float32), NODE_IJK_TO_RAS)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    ids = [segmentation.GetSegmentation().AddEmptySegment(n, n) for n in ("a", "b", "c")]
    rng = np.random.default_rng(3)
    a = (rng.random(SHAPE_KJI) > 0.7).astype(np.uint8)
    b = (rng.random(SHAPE_KJI) > 0.7).astype(np.uint8) & (1 - a)  # disjoint: may share a layer
    c = np.zeros(SHAPE_KJI, np.uint8)
    c[2:4, 3:9, 1:5] = 1  # overlaps a: its own layer
    for sid, values in zip(ids, (a, b, c)):
        set_segment_array(scene, segmentation, sid, values, volume)
    for sid, values in zip(ids, (a, b, c)):
        direct = interactive_edit._internal_array(segmentation, sid, volume, SHAPE_KJI)
        assert direct is not None  # the stored labelmaps are on the volume's grid here
        np.testing.assert_array_equal(direct, values)
        np.testing.assert_array_equal(segment_array(scene, segmentation, sid, volume), values)
    # Another grid: the direct read steps aside and the export resamples.
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "other")
    shifted = NODE_IJK_TO_RAS.copy()
    shifted[:3, 3] += NODE_IJK_TO_RAS[:3, 0]  # one voxel along i
    set_volume_array(other, np.zeros(SHAPE_KJI, np.float32), shifted)
    assert interactive_edit._internal_array(segmentation, ids[2], other, SHAPE_KJI) is None
    moved = segment_array(scene, segmentation, ids[2], other)
    np.testing.assert_array_equal(moved[:, :, :-1], c[:, :, 1:])


# -- the panel, with a fake Qt and fake widgets ---------------------------------------------
class _Signal:
    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)

    def emit(self, *args):
        for slot in self.slots:
            slot(*args)


class _Widget:
    """Stands for a Qt widget: properties as attributes, signals as ``_Signal``."""

    def __init__(self, **fields):
        self.enabled, self.text = True, ""
        self.clicked, self.currentNodeChanged = _Signal(), _Signal()
        self.by_signature = {}
        self.__dict__.update(fields)

    def connect(self, signature, slot):
        self.by_signature.setdefault(signature, _Signal()).connect(slot)


class _SegmentSelector(_Widget):
    def __init__(self):
        super().__init__(node=None, segment="", selected=[])

    def currentNode(self):
        return self.node

    def currentSegmentID(self):
        return self.segment

    def setCurrentNode(self, node):
        self.node = node

    def selectedSegmentIDs(self):
        return list(self.selected)


class _PlaceWidget(_Widget):
    def __init__(self):
        super().__init__(buttonsVisible=True, placeMultipleMarkups=None, node=None)

    def placeButton(self):
        return _Widget(show=lambda: None)

    def deleteButton(self):
        return _Widget(show=lambda: None)

    def setCurrentNode(self, node):
        self.node = node


class _Timer:
    def __init__(self):
        self.timeout, self.active = _Signal(), False

    def setInterval(self, _ms):
        pass

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


def test_panel_sends_placed_points_removes_refused_ones_and_undo_takes_its_point_back(tmp_path, monkeypatch):
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed for the scene tests")
    import types

    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=_Timer))
    from SymmetryAwareSegLib.logic import SymmetryAwareSegLogic
    from SymmetryAwareSegLib.nodes import new_scene, set_volume_array

    scene = new_scene()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "qSlicerMarkupsPlaceWidget",
                        types.SimpleNamespace(ForcePlaceMultipleMarkups=3), raising=False)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "requests.log"))
    # Imported afresh on the fake Qt, and forgotten after the test (monkeypatch restores "absent").
    monkeypatch.setitem(sys.modules, "SymmetryAwareSegLib.interactive_panel", None)
    del sys.modules["SymmetryAwareSegLib.interactive_panel"]
    from SymmetryAwareSegLib.interactive_panel import InteractivePanel

    # The panel builds the worker's command from the logic (interpreter, core module, environment)
    # and the device box: here ``python -m fake_interactive_worker interactive --device cpu``.
    logic = SymmetryAwareSegLogic(scene=scene, python=sys.executable, core_module=FAKE.stem,
                                  env={"PYTHONPATH": str(FAKE.parent)})
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case_t1")
    set_volume_array(volume, np.zeros(SHAPE_KJI, np.float32), NODE_IJK_TO_RAS)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    lesion = segmentation.GetSegmentation().AddEmptySegment("lesion")
    ui = types.SimpleNamespace(
        interactiveStartButton=_Widget(), boxButton=_Widget(), autoButton=_Widget(), undoButton=_Widget(),
        resetButton=_Widget(), interactiveSegmentSelector=_SegmentSelector(), lockedSegmentsSelector=_SegmentSelector(),
        interactiveRoiSelector=_Widget(currentNode=lambda: None), positivePlaceWidget=_PlaceWidget(),
        negativePlaceWidget=_PlaceWidget(), interactiveStatusLabel=_Widget(), deviceComboBox=_Widget(currentText="cpu"),
        biasCorrectionCheckBox=_Widget(checked=False))
    panel = InteractivePanel(ui, logic, lambda: [volume, None], lambda: None, lambda: True)

    def settle():
        deadline = time.monotonic() + 60
        while panel.session.busy and time.monotonic() < deadline:
            panel._poll()
            time.sleep(0.02)
        panel._poll()

    assert ui.positivePlaceWidget.placeMultipleMarkups == 3 and not ui.positivePlaceWidget.buttonsVisible
    panel.on_start()
    settle()
    assert panel.session.loaded and ui.interactiveStartButton.text == "Reload volumes"
    assert panel.session.command == [sys.executable, "-m", FAKE.stem, "interactive", "--device", "cpu"]
    # No card selected: the interactive model's own card decides N4 (the box is not sent).
    loads = [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()
             if json.loads(line).get("cmd") == "load"]
    assert len(loads) == 1 and "bias_correction" not in loads[0] and "model" not in loads[0]
    assert not ui.autoButton.enabled  # no segment chosen yet
    ui.interactiveSegmentSelector.node, ui.interactiveSegmentSelector.segment = segmentation, lesion
    ui.interactiveSegmentSelector.by_signature["currentNodeChanged(vtkMRMLNode*)"].emit(segmentation)
    assert ui.lockedSegmentsSelector.node is segmentation and ui.autoButton.enabled and ui.positivePlaceWidget.enabled
    positive = ui.positivePlaceWidget.node
    assert positive is not None and positive.GetScene() is scene

    import vtk

    positive.AddControlPointWorld(vtk.vtkVector3d(*ras_of((4, 6, 3))))  # fires PointPositionDefinedEvent
    settle()
    from SymmetryAwareSegLib.interactive_edit import segment_array

    def read():
        return segment_array(scene, segmentation, lesion, volume)

    np.testing.assert_array_equal(read(), cube_kji((4, 6, 3)))
    assert positive.GetNumberOfControlPoints() == 1 and ui.undoButton.enabled
    positive.AddControlPointWorld(vtk.vtkVector3d(900.0, 0.0, 0.0))  # outside: refused, the point goes away
    settle()
    assert positive.GetNumberOfControlPoints() == 1 and "outside" in ui.interactiveStatusLabel.text
    panel.on_undo()
    settle()
    assert positive.GetNumberOfControlPoints() == 0 and read().sum() == 0 and not ui.undoButton.enabled
    popen = panel.session.client._popen
    panel.close()
    assert popen.wait(timeout=10) is not None and panel.session is None



def test_the_interactive_session_asks_n4_of_the_model_it_runs_not_of_the_selected_card():
    """The panel's *Remove MRI bias field first* starts at the selected card's setting; the
    interactive session runs the bundled interactive model unless that card is promptable.
    With the 0.4.0 segmentation model selected (no N4) the session used to send N4 off to an
    interactive model whose card asks for it."""
    from SymmetryAwareCore import contract
    from SymmetryAwareSegLib.interactive import interactive_model, session_bias_correction
    from SymmetryAwareSegLib.models import find_models

    cards = {card.name: card for card in find_models([Path(contract.BUNDLED_MODELS_DIR)])}
    interactive = next(c for c in cards.values() if interactive_model(c) is not None)
    default = cards[contract.default_model([(c.name, c.raw) for c in cards.values()])]
    older, ct = cards["glioma-phantom-saswin-f12"], cards["ct-haemorrhage-phantom-saswin-f12"]
    assert interactive.default_bias_correction and default.default_bias_correction
    assert not older.default_bias_correction and not ct.default_bias_correction

    # The box at the selected card's starting value: the model that runs decides.
    for card in (default, older, ct):
        assert interactive_model(card) is None
        assert session_bias_correction(card.default_bias_correction, card) is None
    # The user changed the box: a choice about these scans, sent whichever model runs.
    assert session_bias_correction(False, default) is False
    assert session_bias_correction(True, older) is True
    # The interactive card selected: the box is its own setting, as it stands.
    assert session_bias_correction(True, interactive) is True
    assert session_bias_correction(False, interactive) is False
    assert session_bias_correction(True, None) is None and session_bias_correction(False, None) is None
    # What the worker receives: no key when the card decides.
    assert "bias_correction" not in load_request(["a.nii.gz"], None, session_bias_correction(False, older))
