"""CT input: DICOM -> Hounsfield units (rescale, signed data, padding), windows, the one CT model input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.imaging import CT_MODEL_WINDOW, LUNG, MEDIASTINUM, PRESETS, Window, apply_window, ct_model_pixels
from core.imaging.hounsfield import PADDING_HU, hu_problem, looks_like_hu, summarise_hu
from core.io import load_image
from core.study import Study

from tests.core.conftest import AXIAL, IDENTIFIERS, ct_slice_hu

HU = ct_slice_hu(128)  # a synthetic chest slice, whole HU from -1050 to about 930


def png_bytes(grey_u8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey_u8).save(buffer, "PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------------


def test_lung_window_is_the_papers_range():
    assert (LUNG.level, LUNG.width) == (-600, 1500)
    assert (LUNG.low, LUNG.high) == (-1350, 150)
    assert Window.from_range(-1350, 150) == Window("custom", -600, 1500)
    assert CT_MODEL_WINDOW == LUNG
    assert PRESETS == {"lung": LUNG, "mediastinum": MEDIASTINUM}


def test_apply_window_on_hand_computed_values():
    hu = np.array([-2000, -1350, -975, -600, -225, 150, 3000], dtype=np.float32)
    assert apply_window(hu, LUNG).tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    # mediastinum: level 40, width 400 -> [-160, 240]
    assert apply_window(np.array([-500, -160, -60, 40, 140, 240, 900]), MEDIASTINUM).tolist() == pytest.approx(
        [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    )


def test_free_window_any_level_and_width():
    bone = Window("custom", 400, 1800)  # [-500, 1300]
    assert apply_window(np.array([-500, 400, 850, 1300]), bone).tolist() == pytest.approx([0.0, 0.5, 0.75, 1.0])
    narrow = Window("custom", 100, 50)  # [75, 125]
    assert apply_window(np.array([70, 75, 87.5, 112.5, 126]), narrow).tolist() == pytest.approx([0, 0, 0.25, 0.75, 1])


def test_apply_window_output_type_and_nan():
    out = apply_window(np.array([[np.nan, 0.0]]), LUNG)
    assert out.dtype == np.float32 and out.shape == (1, 2)
    assert out[0, 0] == 0.0


@pytest.mark.parametrize("width", [0, -10, float("nan"), float("inf")])
def test_window_needs_a_positive_finite_width(width):
    with pytest.raises(ValueError):
        Window("bad", 0, width)


# --------------------------------------------------------------------------------------------------
# DICOM -> HU
# --------------------------------------------------------------------------------------------------


def test_signed_ct_gives_the_stored_hu_and_a_lung_window_display(ct_dicom):
    study = load_image(ct_dicom.make(HU, signed=True, intercept=0.0))
    assert study.modality == "CT"
    assert study.hu.dtype == np.float32 and study.hu.shape == HU.shape
    assert np.array_equal(study.hu, HU.astype(np.float32))
    assert np.array_equal(study.pixels, apply_window(HU, LUNG))
    assert study.frames == 1
    assert study.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert study.metadata["ImageOrientationPatient"] == "1\\0\\0\\0\\1\\0"


def test_unsigned_with_intercept_minus_1024(ct_dicom):
    clipped = np.maximum(HU, -1024)  # unsigned storage with intercept -1024 cannot go below -1024 HU
    study = load_image(ct_dicom.make(clipped, signed=False, intercept=-1024.0))
    assert np.array_equal(study.hu, clipped.astype(np.float32))


@pytest.mark.parametrize("slope", [0.5, 2.0])
def test_rescale_slope_is_applied(ct_dicom, slope):
    study = load_image(ct_dicom.make(HU, signed=True, slope=slope, intercept=-1024.0))
    expected = np.round((HU + 1024) / slope) * slope - 1024  # what the stored integers hold
    assert np.allclose(study.hu, expected)
    assert np.abs(study.hu - HU).max() <= slope / 2


def _padded(hu: np.ndarray, stored_padding: float) -> tuple[np.ndarray, np.ndarray]:
    corners = np.zeros(hu.shape, dtype=bool)
    corners[:10, :10] = corners[-10:, -10:] = True
    padded = hu.copy()
    padded[corners] = stored_padding
    return padded, corners


@pytest.mark.parametrize("preamble", [True, False])  # False: implicit VR, the padding value's VR is 'US or SS'
def test_signed_padding_value_becomes_air(ct_dicom, preamble):
    padded, corners = _padded(HU, -2000)
    study = load_image(ct_dicom.make(padded, signed=True, padding_value=-2000, preamble=preamble))
    expected_air = min(PADDING_HU, HU[~corners].min())
    assert np.all(study.hu[corners] == expected_air)
    assert np.array_equal(study.hu[~corners], HU[~corners].astype(np.float32))


def test_padding_range_limit(ct_dicom):
    padded, corners = _padded(HU, -3000)
    padded[:10, :5] = -2500  # inside [PixelPaddingValue, PixelPaddingRangeLimit]: padding too
    study = load_image(ct_dicom.make(padded, signed=True, padding_value=-3000, padding_limit=-2001))
    assert study.hu[corners].max() <= PADDING_HU
    assert study.hu.min() >= -1100  # no value far below air is left


def test_unsigned_padding_value(ct_dicom):
    hu = np.maximum(HU, -1000)
    padded, corners = _padded(hu, -1000)  # stored 0 with intercept -1000
    study = load_image(ct_dicom.make(padded, signed=False, intercept=-1000.0, padding_value=0))
    expected = np.where(padded == -1000, PADDING_HU, padded)  # every stored 0 is padding, corners or not
    assert np.all(study.hu[corners] == PADDING_HU)  # padding is set to air, below every real value
    assert np.array_equal(study.hu, expected.astype(np.float32))


def test_padding_is_never_tissue(ct_dicom):
    """A padding value inside the tissue range (here 40) must not count as tissue."""
    padded, corners = _padded(HU, 40)
    study = load_image(ct_dicom.make(padded, signed=True, padding_value=40))
    assert np.all(study.hu[corners] <= PADDING_HU)
    assert np.all(study.hu[padded == 40] <= PADDING_HU)  # the standard: every stored 40 is padding
    assert summarise_hu(study.hu).body_fraction < summarise_hu(padded).body_fraction


def test_missing_modality_with_hu_values_keeps_hu(ct_dicom):
    study = load_image(ct_dicom.make(HU, signed=True, modality=None))
    assert study.modality is None
    assert np.array_equal(study.hu, HU.astype(np.float32))
    assert np.array_equal(study.pixels, apply_window(HU, LUNG))


def test_missing_modality_with_non_hu_values_keeps_the_xray_path(dicom):
    ds = dicom.dataset(dicom.gradient())
    del ds.Modality
    study = load_image(dicom.to_bytes(ds))
    assert study.hu is None
    assert study.pixels[0, 0] == 0.0 and study.pixels[0, -1] == 1.0  # min-max of the stored values, as before


def test_missing_modality_signed_but_not_hu(ct_dicom):
    """Signed data without air or body (e.g. a signed MR-like ramp) is not taken as HU."""
    ramp = np.tile(np.linspace(0, 3000, 128), (128, 1)).round()
    study = load_image(ct_dicom.make(ramp, signed=True, modality=None))
    assert study.hu is None


def test_radiograph_has_no_hu_and_keeps_its_display(dicom):
    study = load_image(dicom.make(modality="DX"))
    assert study.hu is None and study.image_orientation is None and study.frames == 1
    assert study.pixels[0, 0] == 0.0 and study.pixels[0, -1] == 1.0


def test_ct_8bit_export_in_dicom_has_no_hu_and_shows_its_grey_levels(dicom):
    grey = np.round(apply_window(HU, LUNG) * 255).astype(np.uint8)
    study = load_image(dicom.make(grey, modality="CT"))
    assert study.hu is None
    assert np.allclose(study.pixels, grey / 255.0)
    assert np.array_equal(ct_model_pixels(study), study.pixels)


def test_multi_frame_ct_keeps_the_frame_count(ct_dicom):
    study = load_image(ct_dicom.make(np.stack([HU, HU, HU])))
    assert study.frames == 3
    assert study.hu.shape == HU.shape


@pytest.mark.parametrize("orientation", [["1", "0"], ["1", "0", "0", "0", "1"]])
def test_malformed_orientation_is_dropped(ct_dicom, orientation):
    study = load_image(ct_dicom.make(HU, orientation=orientation))
    assert study.image_orientation is None


def test_no_identifier_reaches_the_study(ct_dicom):
    study = load_image(ct_dicom.make(HU, padding_value=-2000, **IDENTIFIERS))
    text = (repr(study.metadata) + repr(study.warnings) + repr(study.image_orientation)).lower()
    for value in IDENTIFIERS.values():
        assert value.lower() not in text
    for name_part in ("doe", "jane", "who", "doctor", "example", "19610203", "20200315"):
        assert name_part not in text
    assert "StudyDate" not in study.metadata and "PatientName" not in study.metadata


# --------------------------------------------------------------------------------------------------
# HU plausibility
# --------------------------------------------------------------------------------------------------


def test_hu_summary_of_a_chest_slice():
    summary = summarise_hu(HU)
    assert hu_problem(summary) is None and looks_like_hu(HU)
    assert summary.in_field_fraction == 1.0
    assert summary.air_fraction > 0.1 and summary.body_fraction > 0.1


@pytest.mark.parametrize(
    "values, problem",
    [
        (np.full((64, 64), -1000.0), "blank"),
        (np.full((64, 64), -3000.0), "outside-field"),
        (np.tile(np.linspace(0, 4095, 64), (64, 1)), "above-range"),  # stored values, not HU
        (np.tile(np.linspace(0, 255, 64), (64, 1)), "no-air"),  # an 8-bit image taken as HU
        (np.tile(np.linspace(-1000, -300, 64), (64, 1)), "no-body"),
    ],
)
def test_hu_problems(values, problem):
    assert hu_problem(summarise_hu(values)) == problem
    assert not looks_like_hu(values)


# --------------------------------------------------------------------------------------------------
# the one CT model input
# --------------------------------------------------------------------------------------------------


def test_ct_model_pixels_from_hu_are_256_levels_of_the_lung_window():
    study = Study(pixels=np.zeros_like(HU, dtype=np.float32), file_format="dicom", modality="CT", hu=HU.astype(np.float32))
    out = ct_model_pixels(study)
    assert out.dtype == np.float32 and out.shape == HU.shape
    levels = out * 255
    assert np.allclose(levels, np.round(levels), atol=1e-4)
    assert np.abs(out - apply_window(HU, LUNG)).max() <= 0.5 / 255 + 1e-6
    hand = Study(pixels=np.zeros((1, 4), np.float32), file_format="dicom",
                 hu=np.array([[-1350, -600, 150, -1350 + 1500 * 3 / 255]], np.float32))
    assert np.round(ct_model_pixels(hand) * 255).tolist() == [[0, 128, 255, 3]]


def test_ct_model_pixels_from_hu_equal_an_8bit_lung_window_export_loaded_back():
    """Train = serve: a HU upload gives exactly what the same slice exported as an 8-bit PNG gives."""
    study = Study(pixels=np.zeros_like(HU, dtype=np.float32), file_format="dicom", modality="CT", hu=HU.astype(np.float32))
    export = np.round(apply_window(HU, LUNG) * 255).astype(np.uint8)
    loaded = load_image(png_bytes(export))
    assert loaded.hu is None
    assert np.array_equal(ct_model_pixels(loaded), loaded.pixels)
    assert np.allclose(ct_model_pixels(study), ct_model_pixels(loaded), atol=1e-6)


def test_ct_model_pixels_of_a_loaded_ct_dicom(ct_dicom):
    study = load_image(ct_dicom.make(HU, signed=True, intercept=-1024.0, orientation=AXIAL))
    export = np.round(apply_window(HU, LUNG) * 255) / 255
    assert np.allclose(ct_model_pixels(study), export, atol=1e-6)
