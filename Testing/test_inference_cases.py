"""Case discovery: channel files matched by the model card's patterns, folders, CSV tables."""

from pathlib import Path

import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.inference.cases import ChannelSpec, assign_channels, discover_cases

BRATS = [
    ChannelSpec("t1", ("*_t1.*", "*t1n*")),
    ChannelSpec("t1ce", ("*t1c*", "*t1ce*")),
    ChannelSpec("t2", ("*_t2.*", "*t2w*")),
    ChannelSpec("flair", ("*flair*", "*t2f*")),
]


def _touch(folder: Path, *names: str) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        (folder / n).write_bytes(b"x")
        out.append(folder / n)
    return out


def test_files_are_ordered_by_pattern_not_by_argument_order(tmp_path):
    files = _touch(tmp_path, "a_flair.nii.gz", "a_t1.nii.gz", "a_t2.nii.gz", "a_t1ce.nii.gz")
    ordered, notes = assign_channels(files, BRATS)
    assert [p.name for p in ordered] == ["a_t1.nii.gz", "a_t1ce.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz"]
    assert notes and "reordered" in notes[0]


def test_unmatched_names_keep_given_order_with_a_note(tmp_path):
    files = _touch(tmp_path, "s1.nii", "s2.nii", "s3.nii", "s4.nii")
    ordered, notes = assign_channels(files, BRATS)
    assert ordered == files and "as given" in notes[0]


def test_wrong_channel_count_and_ambiguity_are_errors(tmp_path):
    files = _touch(tmp_path, "a_t1.nii.gz", "a_t2.nii.gz")
    with pytest.raises(InputError, match="expects 4 channel"):
        assign_channels(files, BRATS)
    files = _touch(tmp_path / "b", "x_flair.nii", "y_flair.nii", "a_t1.nii", "a_t2.nii")
    with pytest.raises(InputError, match="cannot match"):
        assign_channels(files, BRATS)


def test_folder_of_case_folders_and_csv(tmp_path):
    for case in ("c1", "c2"):
        _touch(tmp_path / "root" / case, f"{case}_t1.nii.gz", f"{case}_t1ce.nii.gz", f"{case}_t2.nii.gz", f"{case}_flair.nii.gz")
    cases = discover_cases([str(tmp_path / "root")], BRATS)
    assert [c.case_id for c in cases] == ["c1", "c2"]
    assert cases[1].paths[3].name == "c2_flair.nii.gz"
    # One folder holding the channel files is one case.
    single = discover_cases([str(tmp_path / "root" / "c1")], BRATS)
    assert len(single) == 1 and single[0].case_id == "c1"
    table = tmp_path / "root" / "cases.csv"
    table.write_text("case_id,t1,t1ce,t2,flair\nk,c1/c1_t1.nii.gz,c1/c1_t1ce.nii.gz,c1/c1_t2.nii.gz,c1/c1_flair.nii.gz\n")
    rows = discover_cases([str(table)], BRATS)
    assert rows[0].case_id == "k" and rows[0].paths[0] == tmp_path / "root" / "c1" / "c1_t1.nii.gz"


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        discover_cases([str(tmp_path / "missing.nii.gz")], BRATS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        discover_cases([str(tmp_path / "empty")], BRATS)
    table = tmp_path / "t.csv"
    table.write_text("case_id,t1\nx,a.nii\n")
    with pytest.raises(InputError, match="lacks column"):
        discover_cases([str(table)], BRATS)
