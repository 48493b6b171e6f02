"""Overview PNG: views oriented by the stated convention, MSP line placed, file valid and atomic."""

from __future__ import annotations

import numpy as np
import pytest

from SymmetryAwareCore.errors import InputError
from SymmetryAwareCore.inference.overview import overview_panels, write_overview_png
from SymmetryAwareCore.io.image import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _right_lesion(image):
    """Label 1 on the patient's right, high up: the subject T1 is stored LAS, so small i is right."""
    assert image.affine[0, 0] < 0  # premise: voxel axis 0 runs to the patient's left
    labels = np.zeros(image.spatial_shape, np.uint8)
    labels[3:7, 18:24, 16:20] = 1
    return labels


@pytest.mark.parametrize("convention", ["radiological", "neurological"])
def test_panels_follow_the_convention(subject_t1, convention):
    labels = _right_lesion(subject_t1)
    nx = subject_t1.spatial_shape[0]
    # Plane x = 12 mm RAS passes through voxel i = 10 of the LAS grid, i.e. RAS column nx - 11.
    point = subject_t1.voxel_to_world([[10, 0, 0]])[0]
    axial, coronal, sagittal = overview_panels(subject_t1, labels, [1, 0, 0], point, convention)
    ras_col = nx - 1 - 10
    expected_col = nx - 1 - ras_col if convention == "radiological" else ras_col
    for panel in (axial, coronal):
        cols = np.nonzero(panel.labels.any(axis=0))[0]
        on_left_of_picture = cols.max() < panel.labels.shape[1] / 2
        assert on_left_of_picture == (convention == "radiological")  # patient's right
        np.testing.assert_allclose(panel.msp[0], expected_col, atol=1e-6)
    assert (axial.left_marker, axial.right_marker) == (("R", "L") if convention == "radiological" else ("L", "R"))
    # Superior at the top: the lesion (k 16..19 of 25) sits in the upper rows of the coronal view.
    rows = np.nonzero(coronal.labels.any(axis=1))[0]
    assert rows.max() < coronal.labels.shape[0] / 2
    assert sagittal.msp is None and sagittal.labels.any()  # slices go through the lesion
    assert axial.aspect == pytest.approx(1.0)


def test_png_is_written_atomically_and_valid(subject_t1, tmp_path):
    import matplotlib.image

    labels = _right_lesion(subject_t1)
    labels[4:6, 19:23, 17:19] = 2  # inside lesion 1, so in the slices
    labels[25:28, 30:33, 3:5] = 1  # a second, distant lesion pulls the centroid off both
    path = write_overview_png(subject_t1, labels, tmp_path / "case" / "overview.png", title="case 1",
                              label_names={1: "core", 2: "oedema"}, label_colors={2: (0, 0, 255)})
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300
    # The label colours made it into the picture: pure-ish blue blended over grey.
    blue = (pixels[..., 2] > pixels[..., 0] + 0.2) & (pixels[..., 2] > pixels[..., 1] + 0.2)
    assert blue.sum() > 10
    assert [p.name for p in path.parent.iterdir()] == ["overview.png"]


def test_no_lesion_uses_the_centre_and_bad_input_writes_nothing(tmp_path):
    image = Image(np.random.default_rng(0).random((20, 22, 18)).astype(np.float32), np.eye(4))
    panels = overview_panels(image, None)
    assert panels[0].name == "axial k=9" and not any(p.labels.any() for p in panels)
    np.testing.assert_allclose(panels[0].msp[0], 9.5)  # centre plane of an aligned grid
    write_overview_png(image, None, tmp_path / "empty.png", convention="neurological")
    with pytest.raises(InputError, match="shape"):
        write_overview_png(image, np.zeros((3, 3, 3)), tmp_path / "bad.png")
    with pytest.raises(InputError, match=".png"):
        write_overview_png(image, None, tmp_path / "bad.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png"]
