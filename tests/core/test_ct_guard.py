"""``core.guard.check_ct_slice``: what the CT slice page accepts, and how it refuses the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageTooSmallError, InputError, UnsupportedInputError
from core.guard import check_chest_xray, check_ct_slice
from core.guard.ct_slice import NO_HU_WARNING, NO_MODALITY_HU_WARNING, OT_WARNING, slice_plane
from core.imaging import LUNG, apply_window
from core.io import load_image
from core.study import Study
from tests.core.conftest import IDENTIFIERS, ct_slice_hu

HU = ct_slice_hu(128)
IDENTIFYING_TEXT = ("doe", "jane", "pid-ct", "acc-ct", "example", "who^", "19610203", "20200315")


def png_bytes(grey_u8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey_u8).save(buffer, "PNG")
    return buffer.getvalue()


def lung_window_png(hu: np.ndarray = HU) -> bytes:
    return png_bytes(np.round(apply_window(hu, LUNG) * 255).astype(np.uint8))


def refusal(data: bytes, error=UnsupportedInputError) -> str:
    with pytest.raises(error) as caught:
        check_ct_slice(load_image(data))
    message = str(caught.value)
    for text in IDENTIFYING_TEXT:
        assert text not in message.lower()
    return message


def rotation_about_x(degrees: float) -> list[str]:
    """ImageOrientationPatient of an axial plane tilted by ``degrees`` about the patient's x axis."""
    t = np.radians(degrees)
    return [f"{v:.6f}" for v in (1, 0, 0, 0, np.cos(t), -np.sin(t))]


# --------------------------------------------------------------------------------------------------
# accepted
# --------------------------------------------------------------------------------------------------


def test_ct_dicom_in_hu_passes_silently(ct_dicom):
    study = load_image(ct_dicom.make(HU, intercept=-1024.0, padding_value=-2000, **IDENTIFIERS))
    checked = check_ct_slice(study)
    assert checked.warnings == []
    assert checked.hu is study.hu
    assert study.warnings == []  # the input is not modified


@pytest.mark.parametrize("degrees", [0, 10, 180])  # small gantry tilts and feet-first orientations are axial
def test_axial_and_slightly_tilted_slices_pass(ct_dicom, degrees):
    check_ct_slice(load_image(ct_dicom.make(HU, orientation=rotation_about_x(degrees))))


def test_missing_modality_with_hu_values_passes_with_a_warning(ct_dicom):
    checked = check_ct_slice(load_image(ct_dicom.make(HU, modality=None, **IDENTIFIERS)))
    assert checked.warnings == [NO_MODALITY_HU_WARNING]
    assert "-1000" in NO_MODALITY_HU_WARNING


def test_other_modality_with_hu_passes_with_a_warning(ct_dicom):
    checked = check_ct_slice(load_image(ct_dicom.make(HU, modality="OT")))
    assert checked.warnings == [OT_WARNING]


def test_8bit_png_passes_with_the_no_hu_warning():
    checked = check_ct_slice(load_image(lung_window_png()))
    assert checked.hu is None
    assert checked.warnings == [NO_HU_WARNING]
    assert "No Hounsfield units" in NO_HU_WARNING and "exported" in NO_HU_WARNING


def test_8bit_jpeg_passes_with_the_no_hu_warning():
    buffer = io.BytesIO()
    Image.fromarray(np.round(apply_window(HU, LUNG) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    assert check_ct_slice(load_image(buffer.getvalue())).warnings == [NO_HU_WARNING]


def test_ct_dicom_without_hu_passes_with_the_no_hu_warning(dicom):
    grey = np.round(apply_window(HU, LUNG) * 255).astype(np.uint8)
    checked = check_ct_slice(load_image(dicom.make(grey, modality="CT")))
    assert checked.warnings == [NO_HU_WARNING]


def test_8bit_dicom_without_modality_passes_with_the_no_hu_warning(dicom):
    ds = dicom.dataset(np.round(apply_window(HU, LUNG) * 255).astype(np.uint8))
    del ds.Modality
    assert check_ct_slice(load_image(dicom.to_bytes(ds))).warnings == [NO_HU_WARNING]


# --------------------------------------------------------------------------------------------------
# refused: other modalities
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["CR", "DX", "DR"])
def test_radiographs_are_sent_to_the_chest_xray_page(dicom, modality):
    message = refusal(dicom.make(modality=modality, **IDENTIFIERS))
    assert "radiograph" in message and f"{modality}" in message
    assert message.endswith("Use the Chest X-ray page for chest radiographs.")


@pytest.mark.parametrize(
    "modality, what",
    [("MR", "an MR (magnetic resonance) image"), ("PT", "a PET image"), ("US", "an ultrasound image"),
     ("NM", "a nuclear medicine image"), ("MG", "a mammogram"), ("XYZ", "a 'XYZ' image")],
)
def test_other_modalities_are_refused_by_name(dicom, modality, what):
    message = refusal(dicom.make(modality=modality, **IDENTIFIERS))
    assert message == f"This is {what}; the CT slice page analyses axial chest CT slices only."


def test_missing_modality_with_non_hu_values_is_refused(dicom):
    ds = dicom.dataset(dicom.gradient(), **IDENTIFIERS)
    del ds.Modality
    message = refusal(dicom.to_bytes(ds))
    assert "no Modality tag" in message and "not CT Hounsfield units" in message


# --------------------------------------------------------------------------------------------------
# refused: geometry
# --------------------------------------------------------------------------------------------------


def test_multi_frame_files_are_sent_to_the_volume_page(ct_dicom):
    message = refusal(ct_dicom.make(np.stack([HU] * 4), **IDENTIFIERS))
    assert "4 frames" in message and "CT volume page" in message


def test_multi_page_tiff_is_refused_as_multi_frame():
    frames = [Image.fromarray(np.round(apply_window(HU, LUNG) * 255).astype(np.uint8)) for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "TIFF", save_all=True, append_images=frames[1:])
    assert "3 frames" in refusal(buffer.getvalue())


@pytest.mark.parametrize(
    "orientation, plane",
    [
        (["1", "0", "0", "0", "0", "-1"], "coronal"),
        (["0", "1", "0", "0", "0", "-1"], "sagittal"),
        (rotation_about_x(45), "oblique"),
    ],
)
def test_reformats_are_refused(ct_dicom, orientation, plane):
    message = refusal(ct_dicom.make(HU, orientation=orientation, **IDENTIFIERS))
    assert f" {plane} slice" in message and "axial" in message
    if plane == "oblique":
        assert "45 degrees from axial" in message


def test_slice_plane_on_hand_computed_orientations():
    assert slice_plane((1, 0, 0, 0, 1, 0)) == ("axial", 0.0)
    assert slice_plane((1, 0, 0, 0, 0, -1))[0] == "coronal"
    assert slice_plane((0, 1, 0, 0, 0, -1))[0] == "sagittal"
    name, angle = slice_plane(tuple(float(v) for v in rotation_about_x(30)))
    assert name == "oblique" and angle == pytest.approx(30.0)
    assert slice_plane((0, 0, 0, 0, 0, 0)) is None


def test_invalid_orientation_passes_with_a_warning():
    study = Study(pixels=apply_window(HU, LUNG), file_format="dicom", modality="CT", hu=HU.astype(np.float32),
                  image_orientation=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    checked = check_ct_slice(study)
    assert len(checked.warnings) == 1 and "Image Orientation" in checked.warnings[0]


# --------------------------------------------------------------------------------------------------
# refused: values and pixels
# --------------------------------------------------------------------------------------------------


def test_ct_whose_values_are_not_hu_is_refused(dicom):
    """A CT-labelled 12-bit image without rescale: values 0..4095 have no air and exceed the CT range."""
    message = refusal(dicom.make(modality="CT", **IDENTIFIERS))
    assert message.startswith("The file's values are not plausible CT Hounsfield units")


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(slope=1.0, intercept=4000.0), "above the CT range"),  # an intercept 4000 HU too high
        (dict(slope=1.0, intercept=-3000.0), "far below the value of air"),
        (dict(slope=1.0, intercept=800.0), "as dark as air or lung"),
    ],
)
def test_wrong_rescale_is_refused(ct_dicom, kwargs, reason):
    shifted = HU + kwargs["intercept"]  # stored values are the true HU; the file's intercept shifts them
    data = ct_dicom.make(shifted, **kwargs)
    assert reason in refusal(data)


def test_hu_without_soft_tissue_is_refused(ct_dicom):
    lungs_only = np.tile(np.linspace(-1000, -400, 128), (128, 1)).round()
    assert "soft tissue" in refusal(ct_dicom.make(lungs_only))


def test_blank_hu_slice_is_refused(ct_dicom):
    assert "blank" in refusal(ct_dicom.make(np.full((128, 128), -1000.0)))


def test_blank_png_is_refused():
    assert "blank" in refusal(png_bytes(np.full((128, 128), 40, np.uint8)))


def test_too_small_image_is_refused():
    message = refusal(lung_window_png(ct_slice_hu(48)), ImageTooSmallError)
    assert "48 x 48" in message


def test_very_elongated_image_is_refused():
    strip = np.tile(np.linspace(0, 255, 400), (100, 1)).astype(np.uint8)
    assert "longer than wide" in refusal(png_bytes(strip))


# --------------------------------------------------------------------------------------------------
# the X-ray page refuses CT and points here
# --------------------------------------------------------------------------------------------------


def test_xray_page_refuses_ct_dicom_and_points_to_the_ct_slice_page(ct_dicom):
    with pytest.raises(UnsupportedInputError) as caught:
        check_chest_xray(load_image(ct_dicom.make(HU, **IDENTIFIERS)))
    assert str(caught.value) == (
        "This is a CT image; the Chest X-ray page analyses radiographs (CR/DX). Use the CT slice page."
    )


def test_xray_page_refuses_hu_without_modality(ct_dicom):
    with pytest.raises(UnsupportedInputError, match="Hounsfield units.*Use the CT slice page"):
        check_chest_xray(load_image(ct_dicom.make(HU, modality=None, **IDENTIFIERS)))


def test_phantom_study_passes_the_ct_guard_and_not_the_xray_guard():
    from core.ct_phantoms import make_ct_phantom

    study = make_ct_phantom("covid", seed=1, size=128).to_study()
    assert check_ct_slice(study).warnings == study.warnings
    with pytest.raises(InputError):
        check_chest_xray(study)
