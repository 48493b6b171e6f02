"""DICOM SEG output: a small oblique DICOM series is made here, segmented by hand on the grid
the core's reader gives it, written as a SEG and read back with pydicom."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from SymmetryAwareCore.errors import InputError  # noqa: E402
from SymmetryAwareCore.io.dicom_seg import labels_on_source_frames, read_source_series, write_dicom_seg  # noqa: E402
from SymmetryAwareCore.io.labels import brats_labels  # noqa: E402
from SymmetryAwareCore.io.readers import read_image  # noqa: E402

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def make_series(folder, rows=12, cols=10, slices=6, spacing=(0.9, 1.1), thickness=2.0, tilt_deg=12.0,
                pixels=None, origin=(-5.0, -7.0, 3.0)):
    """An MR series whose slices are tilted about the LPS x axis (so geometry is not trivial).

    ``pixels``: optional ``(slices, rows, cols)`` uint16 voxels (random otherwise).
    """
    folder.mkdir(parents=True, exist_ok=True)
    angle = np.deg2rad(tilt_deg)
    row_dir = np.array([1.0, 0.0, 0.0])
    col_dir = np.array([0.0, np.cos(angle), np.sin(angle)])
    normal = np.cross(row_dir, col_dir)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    if pixels is not None:
        slices, rows, cols = pixels.shape
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "P1", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, k + 1
        ds.Manufacturer = "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + k * thickness * normal]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = thickness
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        plane = rng.integers(100, 1000, (rows, cols)) if pixels is None else pixels[k]
        ds.PixelData = np.ascontiguousarray(plane, dtype=np.uint16).tobytes()
        # Files in shuffled name order: the writer must sort by position, not by name.
        ds.save_as(str(folder / f"im{(k * 7) % slices:03d}.dcm"), enforce_file_format=True)
    return series


def test_dicom_seg_references_the_source_series_with_its_geometry(tmp_path):
    series_uid = make_series(tmp_path / "series")
    image = read_image(tmp_path / "series")  # the grid segment's outputs are on
    labels = np.zeros(image.spatial_shape, dtype=np.uint8)
    labels[2:5, 3:8, 1:3] = 1
    labels[5:8, 3:6, 3:5] = 4
    out = write_dicom_seg(labels, image.affine, tmp_path / "series", tmp_path / "seg.dcm", brats_labels(2021))

    seg = pydicom.dcmread(str(out))
    source = read_source_series(tmp_path / "series")
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in source[0].ImageOrientationPatient], atol=1e-6,
    )
    np.testing.assert_allclose(
        [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], [float(v) for v in source[0].PixelSpacing]
    )
    assert (seg.Rows, seg.Columns) == (source[0].Rows, source[0].Columns)

    # Every frame lies on a source slice and holds exactly the labels there.
    expected = labels_on_source_frames(labels, image.affine, source)
    positions = {tuple(np.round([float(v) for v in d.ImagePositionPatient], 4)): k for k, d in enumerate(source)}
    names = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert names == {1: "necrotic tumour core", 2: "peritumoral oedema", 3: "enhancing tumour"}
    values = {1: 1, 2: 2, 3: 4}
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        position = tuple(np.round([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient], 4))
        assert position in positions, "a SEG frame is not on a source slice"
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(frame.astype(bool), expected[positions[position]] == values[number])
    assert pixels.astype(bool).sum() == np.count_nonzero(labels)
    # The category/type codes come from the labels' terminology.
    necrosis = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (necrosis.CodingSchemeDesignator, necrosis.CodeValue) == ("SCT", "6574001")


def test_labels_off_the_source_grid_are_refused(tmp_path):
    make_series(tmp_path / "series")
    image = read_image(tmp_path / "series")
    shifted = image.affine.copy()
    shifted[:3, 3] += 0.4  # half a voxel or so: not the series' grid
    with pytest.raises(InputError, match="grid"):
        write_dicom_seg(np.ones(image.spatial_shape, np.uint8), shifted, tmp_path / "series", tmp_path / "x.dcm", brats_labels())
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.slow
def test_segment_command_writes_a_dicom_seg_for_a_dicom_input(tmp_path):
    """`symmetryaware segment <DICOM folder> --dicom-seg`: the real command, a tiny one-channel model."""
    import nibabel as nib
    import torch

    from SymmetryAwareCore.cli.main import main
    from SymmetryAwareCore.contract import DICOM_SEG_FILE, OUTPUT_FILES
    from SymmetryAwareCore.inference.model_source import standin_card
    from SymmetryAwareCore.models.model_card import InputChannel, save_model
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR
    from SymmetryAwareCore.phantoms import sample_case_paths

    torch.manual_seed(0)
    card = standin_card()
    card.name, card.channels = "tiny-t1", [InputChannel("t1", ("*",))]
    card.kwargs = {"in_channels": 1, "out_channels": 3, "feature_size": 12}
    card.preprocessing = {"spacing": [4.0, 4.0, 4.0], "roi_size": [64, 64, 64], "normalisation": "zscore-nonzero"}
    model = save_model(SASwinUNETR(in_channels=1, out_channels=3, feature_size=12), tmp_path / "m" / "tiny.safetensors", card)
    # The bundled T1 (RAS, 2 mm) as an axial DICOM series: rows run posterior, columns left.
    volume = np.asarray(nib.load(str(sample_case_paths()["t1"])).dataobj)
    pixels = np.clip(np.transpose(volume[::-1, ::-1, :], (2, 1, 0)), 0, None).astype(np.uint16)
    series_uid = make_series(tmp_path / "dicom" / "case1", spacing=(2.0, 2.0), thickness=2.0, tilt_deg=0.0, pixels=pixels)

    code = main(["segment", str(tmp_path / "dicom" / "case1"), "-o", str(tmp_path / "out"), "--model", str(model),
                 "--device", "cpu", "--dicom-seg", "--msp-fallback", "axes", "--no-overview", "--progress", "none"])
    assert code == 0
    case = tmp_path / "out" / "case1"
    seg = pydicom.dcmread(str(case / DICOM_SEG_FILE))
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    source = read_source_series(tmp_path / "dicom" / "case1")
    assert len(seg.PerFrameFunctionalGroupsSequence) == len(source) * len(seg.SegmentSequence)
    labelmap = nib.load(str(case / OUTPUT_FILES["labelmap"]))
    expected = labels_on_source_frames(np.asarray(labelmap.dataobj), labelmap.affine, source)
    assert seg.pixel_array.astype(bool).sum() == np.count_nonzero(expected)


def test_dicom_seg_with_image_files_is_refused_before_any_work(tmp_path, capsys):
    from SymmetryAwareCore.cli.main import main
    from SymmetryAwareCore.phantoms import sample_case_paths

    paths = sample_case_paths()
    code = main(["segment", *[str(paths[c]) for c in ("t1", "t1ce", "t2", "flair")], "-o", str(tmp_path),
                 "--model", "glioma-phantom-saswin-f12", "--dicom-seg", "--progress", "none"])
    assert code == 2
    assert "--dicom-seg needs a DICOM series folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
