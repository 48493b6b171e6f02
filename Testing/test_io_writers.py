"""Writers: label maps on the input's grid, Slicer segmentations, quantised maps, safety."""

import hashlib
import shutil

import nibabel as nib
import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.geometry import from_ras, move_image, reorient_to, rigid_matrix, to_ras
from SymmetryAwareCore.io import (
    Image,
    LabelInfo,
    brats_labels,
    brats_regions,
    check_output_path,
    ct_haemorrhage_labels,
    label_table,
    read_image,
    write_image,
    write_labelmap_nifti,
    write_map,
    write_seg_nrrd,
)
from SymmetryAwareCore.io.image import LPS_TO_RAS

ORIENTATIONS = ["RAS", "LPS", "PSR", "oblique"]


def stored(image: Image, orientation: str) -> Image:
    if orientation == "oblique":
        return move_image(reorient_to(image, "PSR"), rigid_matrix((10, -7, 12), (5, -3, 8)))
    return reorient_to(image, orientation)


def left_region_labels(native: Image) -> tuple:
    """Mark a block in the patient's left hemisphere on the RAS grid, return it on the native grid.

    Returns ``(native_labels, ras_image, ras_labels)``; label 2 is a left block, label 1 the
    rest of the left half, so both values and their positions are checked.
    """
    ras, record = to_ras(native)
    labels = np.zeros(ras.spatial_shape, np.uint8)
    half = ras.spatial_shape[0] // 2
    labels[:half] = 1  # low RAS x = patient's left
    labels[half // 3 : half - 2, 5:12, 4:9] = 2
    return from_ras(labels, record), ras, labels


def world_points(image_affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(N, 3)`` RAS mm of the voxel centres in ``mask``."""
    ijk = np.argwhere(mask)
    return ijk @ image_affine[:3, :3].T + image_affine[:3, 3]


def as_mask_on(grid: Image, world: np.ndarray) -> np.ndarray:
    """The voxels of ``grid`` at ``world`` points, which must be voxel centres of it (to 1e-3 voxel)."""
    ijk = grid.world_to_voxel(world)
    assert np.abs(ijk - np.rint(ijk)).max() < 1e-3
    mask = np.zeros(grid.spatial_shape, bool)
    mask[tuple(np.rint(ijk).astype(int).T)] = True
    return mask


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_labelmap_lands_on_input_grid_and_world_points(subject_epi, tmp_path, orientation):
    native = stored(subject_epi, orientation)
    labels, ras, ras_labels = left_region_labels(native)
    path = write_labelmap_nifti(labels, native, tmp_path / "labels.nii.gz")
    nii = nib.load(str(path))
    assert nii.shape == native.spatial_shape
    assert nii.get_data_dtype() == np.uint8
    np.testing.assert_allclose(nii.affine, native.affine, atol=1e-4)
    back = np.asarray(nii.dataobj)
    np.testing.assert_array_equal(back, labels)
    for value in (1, 2):
        # The file's voxels of each label sit exactly on the RAS voxels that were marked.
        np.testing.assert_array_equal(as_mask_on(ras, world_points(nii.affine, back == value)), ras_labels == value)
    # Everything marked is on the patient's left of the image's mid-sagittal voxel plane.
    centre = ras.voxel_to_world([[ras.spatial_shape[0] / 2 - 0.5, 0, 0]])[0]
    normal = ras.direction[:, 0]
    assert np.all((world_points(nii.affine, back > 0) - centre) @ normal < 0)


def test_labelmap_uses_uint16_above_255(subject_t1, tmp_path):
    labels = np.zeros(subject_t1.spatial_shape, np.int64)
    labels[2:5, 2:5, 2:5] = 1000
    nii = nib.load(str(write_labelmap_nifti(labels, subject_t1, tmp_path / "big.nii")))
    assert nii.get_data_dtype() == np.uint16
    np.testing.assert_array_equal(np.asarray(nii.dataobj), labels)
    with pytest.raises(ValueError, match="grid"):
        write_labelmap_nifti(labels[:-1], subject_t1, tmp_path / "bad.nii")
    assert not (tmp_path / "bad.nii").exists()


def _tumour_labels(native: Image, et_value: int) -> np.ndarray:
    labels = np.zeros(native.spatial_shape, np.uint8)
    labels[3:9, 4:10, 5:8] = 2
    labels[4:8, 5:9, 6:7] = 1
    labels[10:12, 2:5, 1:3] = et_value
    return labels


@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
@pytest.mark.parametrize("convention", [2021, 2023])
def test_seg_nrrd_read_back_by_slicerio(subject_t1, tmp_path, orientation, convention):
    import slicerio

    native = stored(subject_t1, orientation)
    infos = brats_labels(convention)
    labels = _tumour_labels(native, infos[2].value)
    path = write_seg_nrrd(labels, native, tmp_path / "tumour.seg.nrrd", infos)
    seg = slicerio.read_segmentation(str(path))
    np.testing.assert_allclose(seg["ijkToLPS"], LPS_TO_RAS @ native.affine, atol=1e-9)
    np.testing.assert_array_equal(seg["voxels"], labels)
    by_name = {s["name"]: s for s in seg["segments"]}
    assert list(by_name) == [info.name for info in infos]
    for info in infos:
        segment = by_name[info.name]
        assert segment["labelValue"] == info.value
        np.testing.assert_allclose(segment["color"], info.color, atol=1e-6)
        assert slicerio.segment_mask(seg, segment).sum() == (labels == info.value).sum()
        assert segment["terminology"]["type"] == info.terminology.split("~")[2].split("^")


def _read_with_slicer_core(path):
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node.GetSegmentation()


def _slicer_segment_array(segment, shape):
    """The segment's shared labelmap on the full ``shape`` grid, plus its IJK-to-RAS matrix."""
    import vtk
    from vtk.util import numpy_support

    oriented = segment.GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    oriented.GetImageToWorldMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    full = np.zeros(shape, np.int64)
    ext = oriented.GetExtent()
    if ext[1] >= ext[0]:
        dims = (ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1)
        # VTK images are stored x fastest: reshape as (k, j, i) and transpose to [i, j, k].
        values = numpy_support.vtk_to_numpy(oriented.GetPointData().GetScalars()).reshape(dims[::-1]).T
        full[ext[0] : ext[1] + 1, ext[2] : ext[3] + 1, ext[4] : ext[5] + 1] = values
    return full, ijk_to_ras


@pytest.mark.parametrize("orientation", ["RAS", "PSR", "oblique"])
def test_seg_nrrd_read_back_by_slicer_core(subject_t1, tmp_path, orientation):
    native = stored(subject_t1, orientation)
    infos = brats_labels(2021)
    labels = _tumour_labels(native, 4)
    path = write_seg_nrrd(labels, native, tmp_path / "tumour.seg.nrrd", infos)
    segmentation = _read_with_slicer_core(path)
    assert segmentation.GetNumberOfSegments() == len(infos)
    for index, info in enumerate(infos):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetName() == info.name
        np.testing.assert_allclose(segment.GetColor(), info.color, atol=1e-6)
        assert segment.GetTerminology() == info.terminology
        full, ijk_to_ras = _slicer_segment_array(segment, native.spatial_shape)
        np.testing.assert_allclose(ijk_to_ras, native.affine, atol=1e-6)
        mask = full == segment.GetLabelValue()
        assert mask.sum() == (labels == info.value).sum()
        np.testing.assert_array_equal(mask, labels == info.value)


def test_seg_nrrd_refuses_unknown_values_and_leaves_nothing(subject_t1, tmp_path):
    labels = _tumour_labels(subject_t1, 4)
    with pytest.raises(ValueError, match=r"\[4\]"):
        write_seg_nrrd(labels, subject_t1, tmp_path / "x.seg.nrrd", brats_labels(2023))
    assert list(tmp_path.iterdir()) == []


def test_label_tables():
    assert [i.value for i in brats_labels(2021)] == [1, 2, 4]
    assert [i.value for i in brats_labels(2023)] == [1, 2, 3]
    assert brats_regions(2023) == {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}
    assert label_table("ct_haemorrhage") == ct_haemorrhage_labels()
    for info in brats_labels() + ct_haemorrhage_labels():
        assert len(info.terminology.split("~")) == 7  # Slicer's TerminologyEntry layout
    with pytest.raises(ValueError):
        brats_labels(2019)
    with pytest.raises(ValueError):
        LabelInfo(0, "background", (0, 0, 0))
    with pytest.raises(ValueError):
        LabelInfo(1, "x", (0, 0, 255))


def _smooth_map(image: Image) -> np.ndarray:
    """A real-valued map with a realistic spread: the image scaled to [-1.5, 2.5]."""
    a = image.array.astype(np.float64)
    return -1.5 + 4.0 * (a - a.min()) / (a.max() - a.min())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("orientation", ["LPS", "oblique"])
def test_uint8_map_round_trip_within_half_a_step(subject_epi, tmp_path, suffix, orientation):
    native = stored(subject_epi, orientation)
    values = _smooth_map(native)
    path = write_map(values, native, tmp_path / f"map{suffix}", dtype="uint8")
    step = (values.max() - values.min()) / 255
    back = read_image(path)
    np.testing.assert_allclose(back.affine, native.affine, atol=1e-4)
    error = np.abs(back.array - values)
    assert error.max() <= step / 2 + 1e-5
    assert error.max() > step / 10  # it really was quantised
    if suffix == ".nii.gz":
        nii = nib.load(str(path))
        assert nii.get_data_dtype() == np.uint8
        assert np.abs(nii.get_fdata() - values).max() <= step / 2 + 1e-5  # nibabel applies scl_slope
    else:
        header = path.read_bytes().split(b"\n\n")[0].decode()
        assert "type: unsigned char" in header
        assert "SymmetryAware_value_scale:=" in header and "SymmetryAware_value_offset:=" in header


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_float16_map_round_trip(subject_epi, tmp_path, suffix):
    values = _smooth_map(subject_epi)
    back = read_image(write_map(values, subject_epi, tmp_path / f"map{suffix}"))
    # float16 has an 11-bit significand: relative error at most 2**-11.
    assert np.all(np.abs(back.array - values) <= np.abs(values) * 2.0**-11 + 1e-7)
    np.testing.assert_array_equal(back.array, values.astype(np.float16).astype(np.float32))


def test_constant_uint8_map(subject_t1, tmp_path):
    back = read_image(write_map(np.full(subject_t1.spatial_shape, 0.25), subject_t1, tmp_path / "c.nrrd", "uint8"), allow_constant=True)
    np.testing.assert_allclose(back.array, 0.25)


def test_multichannel_nifti_round_trip(subject_t1, tmp_path):
    stack = subject_t1.with_array(np.stack([subject_t1.array, 2 * subject_t1.array]), ("a", "b"))
    back = read_image(write_image(stack, tmp_path / "s.nii.gz"), allow_channels=True)
    np.testing.assert_array_equal(back.array, stack.array)


def test_refuses_to_overwrite_the_input(subject_t1, tmp_path):
    src = tmp_path / "in" / "t1.nii"
    src.parent.mkdir()
    shutil.copy(subject_t1.source, src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    image = read_image(src)
    labels = np.zeros(image.spatial_shape, np.uint8)
    labels[:3] = 1
    for target in (src, tmp_path / "in" / ".." / "in" / "t1.nii"):
        with pytest.raises(InputError, match="t1.nii.*refusing"):
            write_labelmap_nifti(labels, image, target)
    with pytest.raises(InputError, match="refusing"):
        write_map(labels * 1.0, image, src)
    with pytest.raises(InputError, match="refusing"):
        write_image(image, src)
    with pytest.raises(InputError, match="refusing"):
        write_seg_nrrd(labels, image, tmp_path / "in" / "t1.seg.nrrd", ct_haemorrhage_labels(), inputs=[tmp_path / "in" / "t1.seg.nrrd"])
    link = tmp_path / "in" / "hard.nii"
    link.hardlink_to(src)
    with pytest.raises(InputError, match="hard.nii"):
        check_output_path(link, [src])
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["hard.nii", "t1.nii"]
    # A different name is fine.
    assert check_output_path(tmp_path / "out.nii.gz", [src]) == tmp_path / "out.nii.gz"
