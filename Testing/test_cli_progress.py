"""The command line's progress display (SymmetryAwareCore/cli/progress.py)."""

from __future__ import annotations

import argparse
import io

import pytest

from SymmetryAwareCore.cli.progress import PROGRESS_MODES, ProgressPrinter, add_progress_argument
from SymmetryAwareCore.contract import PROGRESS_PROTOCOL


def test_a_stage_detail_does_not_outlive_its_stage():
    stream = io.StringIO()  # not a terminal: one line per stage
    printer = ProgressPrinter("bar", stream)
    printer.start_case(0, 1, "case")
    printer.update(0.2, "inference")
    printer.detail = "window 2/2"
    printer.update(0.5, "inference")  # same stage within 10 s: not redrawn
    printer.update(0.9, "writing")
    printer.update(1.0, "done")
    lines = stream.getvalue().splitlines()
    assert [line.split("%")[1].split()[0] for line in lines] == ["inference", "writing", "done"]
    assert not any("window" in line for line in lines)


def test_machine_lines_follow_the_protocol_the_slicer_module_parses():
    stream = io.StringIO()
    printer = ProgressPrinter("machine", stream)
    printer.start_case(1, 2, "b")  # the second of two cases: fractions are overall
    printer.update(0.5, "aligning")
    lines = stream.getvalue().splitlines()
    start_p, end_p, start_s, end_s = PROGRESS_PROTOCOL
    assert lines == [f"{start_s}aligning{end_s}", f"{start_p}0.7500{end_p}"]


def test_the_option_is_one_definition():
    parser = argparse.ArgumentParser()
    add_progress_argument(parser)
    assert parser.parse_args([]).progress == "bar"
    assert parser.parse_args(["--progress", "machine"]).progress == "machine"
    with pytest.raises(SystemExit):
        parser.parse_args(["--progress", "loud"])
    with pytest.raises(ValueError, match="bar, machine, none"):
        ProgressPrinter("loud")
    assert PROGRESS_MODES == ("bar", "machine", "none")
