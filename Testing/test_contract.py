"""The contract between the command line and its drivers: one definition, both directions."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from SymmetryAwareCore import contract
from SymmetryAwareCore.contract import (
    ChannelMatchError,
    OptionError,
    RunOptions,
    add_run_option_arguments,
    case_id_from_files,
    case_id_from_path,
    match_channels,
    segment_command,
)

BRATS = [("t1", ("*_t1.*", "*_t1_*", "*t1n*")), ("t1ce", ("*t1ce*", "*t1c*")), ("t2", ("*_t2.*", "*_t2_*")), ("flair", ("*flair*",))]


def parser():
    p = argparse.ArgumentParser()
    add_run_option_arguments(p)
    return p


def test_every_option_round_trips_through_its_command_line():
    options = RunOptions(model="card.json", device="cuda:1", overlap=0.5, sw_batch=4, tta=True, amp="bfloat16",
                         msp_fallback="axes", require_head=True, roi_center=(-30, 12.5, 20), roi_size=(50, 50, 40),
                         attention_from=(-40, 10, 20), threshold=0.35, bias_correction=True,
                         dicom_seg=True)
    assert RunOptions.from_namespace(parser().parse_args(options.as_arg_list())) == options
    assert RunOptions.from_namespace(parser().parse_args([])) == RunOptions()
    # Every field has a flag, and every flag appears once when set.
    flags = [f.metadata["flag"] for f in dataclasses.fields(RunOptions)]
    assert len(set(flags)) == len(flags)
    argv = options.as_arg_list()
    assert all(any(a == flag or a.startswith(flag + "=") for a in argv) for flag in flags)


def test_bias_correction_is_unset_on_or_off_and_unset_means_the_model_card():
    """Neither flag: None (the card's preprocessing decides); --bias-correction: True;
    --no-bias-correction: False; each round-trips through as_arg_list."""
    assert RunOptions().bias_correction is None and RunOptions.default("bias_correction") is None
    assert RunOptions.from_namespace(parser().parse_args([])).bias_correction is None
    assert RunOptions.from_namespace(parser().parse_args(["--bias-correction"])).bias_correction is True
    off = RunOptions.from_namespace(parser().parse_args(["--no-bias-correction"]))
    assert off.bias_correction is False and off.as_arg_list() == ["--model", "default", "--device", "auto", "--overlap", "0.25",
                                                                   "--sw-batch", "2", "--amp", "auto", "--msp-fallback", "error",
                                                                   "--no-bias-correction"]
    assert "bias-correction" not in " ".join(RunOptions().as_arg_list())
    for value in (True, False, None):
        options = RunOptions(bias_correction=value)
        assert RunOptions.from_namespace(parser().parse_args(options.as_arg_list())) == options
    with pytest.raises(OptionError, match="--bias-correction is a switch"):
        RunOptions(bias_correction="yes")


@pytest.mark.parametrize("argv, message", [
    (["--overlap", "0.95"], "--overlap must be in [0, 0.9]"),
    (["--overlap", "x"], "--overlap must be a number"),
    (["--sw-batch", "0"], "--sw-batch must be in [1, 64]"),
    (["--device", "tpu"], "--device must be one of auto, cpu, cuda, mps or cuda:N"),
    (["--amp", "float8"], "--amp must be one of"),
    (["--roi-size", "10,0,10"], "sizes must be positive"),
    (["--roi-center", "1,2"], "expected three numbers"),
    (["--threshold", "0"], "--threshold must be in [0.01, 0.99]"),
    (["--threshold", "half"], "--threshold must be a number"),
])
def test_bad_options_are_refused_by_the_parser_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_options_validate_on_creation_as_well():
    with pytest.raises(OptionError, match="go together"):
        RunOptions(roi_size=(1, 1, 1))
    with pytest.raises(OptionError, match="whole number"):
        RunOptions(sw_batch=1.5)
    assert RunOptions(overlap="0.5").overlap == 0.5  # text from a widget is converted
    assert RunOptions().threshold is None and RunOptions(threshold="0.3").threshold == 0.3  # unset: the card's
    assert RunOptions.range("overlap") == (0.0, 0.9) and RunOptions.default("sw_batch") == 2
    assert RunOptions.choices("device") == contract.DEVICE_CHOICES


def test_a_left_hemisphere_roi_centre_parses_with_or_without_equals_sign():
    for argv in (["--roi-center", "-30,12,20", "--roi-size", "50,50,50"], ["--roi-center=-30,12,20", "--roi-size=50,50,50"]):
        options = RunOptions.from_namespace(parser().parse_args(argv))
        assert options.roi_center == (-30.0, 12.0, 20.0) and options.roi_size == (50.0, 50.0, 50.0)
    assert "--roi-center=-30,12,20" in RunOptions(roi_center=(-30, 12, 20), roi_size=(5, 5, 5)).as_arg_list()


def test_segment_command_names_the_case_and_asks_for_machine_progress():
    command = segment_command("PythonSlicer", ["/in/BraTS_001_t1.nii.gz", "/in/BraTS_001_flair.nii.gz"], "/out", RunOptions())
    assert command[:4] == ["PythonSlicer", "-m", "SymmetryAwareCore", "segment"]
    assert command[command.index("--case-id") + 1] == "BraTS_001"
    assert command[-2:] == ["--progress", "machine"]


def test_classify_command_is_parsed_by_the_real_classify_parser():
    """The Slicer module builds this argv; the core's own parser must read it back as meant."""
    from SymmetryAwareCore.cli.main import build_parser

    command = contract.classify_command("PythonSlicer", ["/in/head_ct.nii.gz"], "ct-model", "/w/findings.json",
                                        maps_dir="/w/maps", device="cpu", overwrite=True)
    assert command[:4] == ["PythonSlicer", "-m", "SymmetryAwareCore", "classify"]
    args = build_parser().parse_args(command[3:])
    assert args.inputs == ["/in/head_ct.nii.gz"] and args.model == "ct-model" and args.device == "cpu"
    assert str(args.output) == "/w/findings.json" and str(args.maps) == "/w/maps" and args.overwrite
    plain = build_parser().parse_args(contract.classify_command("p", ["a.nii"], "m", "o.json")[3:])
    assert plain.maps is None and not plain.overwrite and plain.device == "auto"
    assert args.progress == "machine"  # the module's progress bar reads the machine lines
    with pytest.raises(ValueError):
        contract.classify_command("p", [], "m", "o.json")


def test_case_ids():
    assert case_id_from_path(Path("a/sub-01_t1.nii.gz")) == "sub-01_t1"
    assert case_id_from_path("scan.NRRD") == "scan"
    assert case_id_from_path("dicom_series_folder") == "dicom_series_folder"
    assert case_id_from_files(["x/BraTS_001_t1.nii.gz", "x/BraTS_001_flair.nii.gz"]) == "BraTS_001"
    assert case_id_from_files(["a.nii", "b.nii"]) == "a"


def test_channels_matched_by_file_or_node_name():
    files = ["c_flair.nii.gz", "c_t1.nii.gz", "c_t2.nii.gz", "c_t1ce.nii.gz"]
    order, notes = match_channels(files, BRATS)
    assert [files[i] for i in order] == ["c_t1.nii.gz", "c_t1ce.nii.gz", "c_t2.nii.gz", "c_flair.nii.gz"]
    assert "reordered" in notes[0]
    nodes = ["c_flair", "c_t1", "c_t2", "c_t1ce"]  # Slicer node names: no extension
    assert match_channels(nodes, BRATS)[0] == order
    with pytest.raises(ChannelMatchError, match="expects 4"):
        match_channels(nodes[:3], BRATS)
    with pytest.raises(ChannelMatchError, match="cannot match"):
        match_channels(["c_t1", "d_t1", "c_t2", "c_flair"], BRATS)


def test_contract_imports_without_third_party_packages():
    code = ("import sys; import SymmetryAwareCore.contract;"
            "bad = [m for m in ('torch', 'numpy', 'monai', 'nibabel', 'slicer', 'qt') if m in sys.modules];"
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_pipeline_re_exports_the_contracts_output_names():
    from SymmetryAwareCore.inference import pipeline

    assert pipeline.OUTPUT_FILES is contract.OUTPUT_FILES


def test_pipeline_defaults_do_not_drift_from_the_contract():
    """SegmentOptions (the Python API) keeps its own dataclass; its defaults must be the contract's."""
    from SymmetryAwareCore.inference.pipeline import SegmentOptions

    api = SegmentOptions()
    assert (api.device, api.overlap, api.sw_batch_size, api.tta, api.amp, api.msp_on_failure, api.threshold) == tuple(
        RunOptions.default(name) for name in ("device", "overlap", "sw_batch", "tta", "amp", "msp_fallback", "threshold"))
