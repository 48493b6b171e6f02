"""Case folders under attack: killed runs, two runs into one folder, finished results.

The folder commit (:func:`SymmetryAwareCore.io.atomic.staged_folder`) is tested directly,
with a real killed process for the stale-folder sweep; one end-to-end ``segment`` run with
the untrained stand-in (ROI mode, one window) shows the same guarantees through the command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from SymmetryAwareCore.cli.main import main
from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.io.atomic import atomic_path, staged_folder, sweep_stale


def _entries(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_commit_renames_into_place_and_leaves_nothing_hidden(tmp_path):
    target = tmp_path / "case"
    with staged_folder(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".case.") and staging.name.endswith(".partial")
        (staging / "report.json").write_text("{}")
        assert not target.exists()
    assert (target / "report.json").read_text() == "{}"
    assert _entries(tmp_path) == ["case"]


def test_failure_leaves_the_previous_result_and_nothing_else(tmp_path):
    target = tmp_path / "case"
    target.mkdir()
    (target / "report.json").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(target, overwrite=True) as staging:
            (staging / "report.json").write_text("half")
            raise RuntimeError("crash while writing")
    assert (target / "report.json").read_text() == "old"
    assert _entries(tmp_path) == ["case"]


def test_a_finished_result_is_never_replaced_without_overwrite(tmp_path):
    target = tmp_path / "case"
    target.mkdir()
    (target / "report.json").write_text("finished")
    with pytest.raises(InputError, match="--overwrite"):
        with staged_folder(target):
            pytest.fail("the block ran although the result exists")
    # Another run finishes the case while this one works: its result is kept.
    other = tmp_path / "other"
    with pytest.raises(InputError, match="another run"):
        with staged_folder(other) as staging:
            (staging / "report.json").write_text("mine")
            other.mkdir()
            (other / "report.json").write_text("theirs")
    assert (other / "report.json").read_text() == "theirs"
    assert (target / "report.json").read_text() == "finished"
    assert _entries(tmp_path) == ["case", "other"]


def test_overwrite_replaces_in_two_renames_without_leftovers(tmp_path):
    target = tmp_path / "case"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_folder(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert _entries(target) == ["new.txt"] and _entries(tmp_path) == ["case"]


def test_two_writers_of_one_result_cannot_interleave(tmp_path):
    target = tmp_path / "case"
    with staged_folder(target) as first:
        with pytest.raises(InputError, match="another run is writing"):
            with staged_folder(target, overwrite=True):
                pytest.fail("a second writer got in")
        (first / "report.json").write_text("first")
    assert (target / "report.json").read_text() == "first"
    assert _entries(tmp_path) == ["case"]


def test_write_errors_inside_name_the_final_file(tmp_path):
    target = tmp_path / "case"
    with pytest.raises(InputError) as info:
        with staged_folder(target) as staging:
            with atomic_path(staging / "segmentation.nii.gz"):
                raise OSError(28, "No space left on device")
    assert str(info.value).startswith(str(target / "segmentation.nii.gz") + ":")
    assert _entries(tmp_path) == []


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from SymmetryAwareCore.io.atomic import staged_folder
    with staged_folder(Path(sys.argv[1])) as staging:
        (staging / "segmentation.nii.gz").write_bytes(b"half")
        print("ready", flush=True)
        time.sleep(120)
    """
)


def test_killed_run_leaves_folders_that_the_next_run_sweeps_but_never_a_live_one(tmp_path):
    target = tmp_path / "out" / "case"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "ready"
        hidden = [p for p in (tmp_path / "out").iterdir()]
        assert len(hidden) == 2  # the staging folder and its lock file
        assert sweep_stale(tmp_path / "out") == []  # a live run's folder is never touched
        assert all(p.exists() for p in hidden)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert any(p.name.endswith(".partial") for p in (tmp_path / "out").iterdir())  # what a kill leaves
    removed = sweep_stale(tmp_path / "out")
    assert len(removed) == 1 and _entries(tmp_path / "out") == []


def test_foreign_hidden_files_are_left_alone(tmp_path):
    (tmp_path / ".git.lock").write_text("not ours, no pid")
    (tmp_path / ".notes.partial").mkdir()  # not the staging pattern
    sweep_stale(tmp_path)
    assert _entries(tmp_path) == [".git.lock", ".notes.partial"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_segment_sweeps_stale_folders_and_keeps_a_finished_case(tmp_path, capsys):
    from SymmetryAwareCore.phantoms import sample_case_paths

    out = tmp_path / "out"
    stale = out / ".sample_glioma.a1b2c3d4.partial"
    stale.mkdir(parents=True)
    (stale / "segmentation.nii.gz").write_bytes(b"half-written by a killed run")
    (out / ".sample_glioma.lock").write_text("12345")
    inputs = [str(sample_case_paths()[c]) for c in ("t1", "t1ce", "t2", "flair")]
    args = ["segment", *inputs, "-o", str(out), "--model", "untrained-standin", "--progress", "none", "--no-overview",
            "--roi-center", "0,0,0", "--roi-size", "20,20,20"]
    assert main(args) == 0
    assert _entries(out) == ["sample_glioma"]
    report = (out / "sample_glioma" / "report.json").read_bytes()
    # Run again: the finished case is skipped, never deleted or rewritten.
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().err
    assert (out / "sample_glioma" / "report.json").read_bytes() == report
    assert _entries(out) == ["sample_glioma"]


def test_stale_partials_of_any_token_and_dotted_case_ids_are_swept(tmp_path):
    for name in (".case.tmp1.partial", ".sub.01.a1b2c3d4.partial", ".x.a1b2c3d4.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("half")
    (tmp_path / "sub.01").mkdir()  # a finished case is never swept
    assert len(sweep_stale(tmp_path)) == 3
    assert _entries(tmp_path) == ["sub.01"]


def test_a_lock_file_planted_as_a_link_never_truncates_its_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".case.lock").symlink_to(victim)
    with pytest.raises(InputError):
        with staged_folder(out / "case"):
            pytest.fail("wrote through a planted link")
    assert victim.read_text() == "precious"
