"""``core.guard.check_chest_xray``: what the Chest X-ray page accepts, and how it refuses the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageTooSmallError, UnsupportedInputError
from core.guard import MAX_ASPECT_RATIO, MIN_SIDE_PX, check_chest_xray
from core.io import load_image
from core.study import Study


def textured(rows: int = 128, columns: int = 128) -> np.ndarray:
    ramp = np.tile(np.linspace(0.1, 0.9, columns), (rows, 1))
    noise = np.random.default_rng(0).normal(0, 0.02, (rows, columns))
    return np.clip(ramp + noise, 0, 1).astype(np.float32)


def make_study(pixels: np.ndarray | None = None, **facts) -> Study:
    facts.setdefault("file_format", "dicom")
    return Study(pixels=textured() if pixels is None else pixels, **facts)


# --------------------------------------------------------------------------------------------------
# accepted
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["CR", "DX", "DR"])
@pytest.mark.parametrize("view", ["PA", "AP", None])
def test_frontal_chest_radiographs_pass_silently(modality, view):
    study = make_study(modality=modality, view=view, body_part="CHEST", warnings=["from the loader"])
    checked = check_chest_xray(study)
    assert checked.warnings == ["from the loader"]
    assert checked.pixels is study.pixels
    assert study.warnings == ["from the loader"]  # the input is not modified


def test_plain_image_without_metadata_passes_without_view_warning():
    checked = check_chest_xray(make_study(file_format="png"))
    assert checked.warnings == []


@pytest.mark.parametrize("body_part", ["CHEST", "THORAX", "LUNG", "CHEST PA", "PORT CHEST", "", None])
def test_chest_like_or_unknown_body_parts_pass(body_part):
    check_chest_xray(make_study(modality="DX", body_part=body_part))


def test_other_modality_passes_with_a_warning():
    checked = check_chest_xray(make_study(modality="OT"))
    assert len(checked.warnings) == 1 and "'OT'" in checked.warnings[0]


@pytest.mark.parametrize("view", ["LLD", "RLD"])
def test_decubitus_view_passes_with_a_warning(view):
    checked = check_chest_xray(make_study(modality="DX", view=view))
    assert any("decubitus" in w for w in checked.warnings)


# --------------------------------------------------------------------------------------------------
# refused
# --------------------------------------------------------------------------------------------------


def test_ct_is_refused_and_pointed_to_the_ct_page():
    with pytest.raises(UnsupportedInputError) as caught:
        check_chest_xray(make_study(modality="CT", body_part="CHEST"))
    assert str(caught.value) == (
        "This is a CT image; the Chest X-ray page analyses radiographs (CR/DX). Use the CT slice page."
    )


@pytest.mark.parametrize(
    "modality, words",
    [("MR", "MR (magnetic resonance)"), ("PT", "PET"), ("NM", "nuclear medicine"), ("US", "ultrasound"),
     ("MG", "mammogram"), ("XA", "angiography"), ("ZZ", "'ZZ'")],
)
def test_non_radiograph_modalities_are_refused(modality, words):
    with pytest.raises(UnsupportedInputError, match="analyses radiographs") as caught:
        check_chest_xray(make_study(modality=modality))
    assert words in str(caught.value)


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL", "LAT", "lat", "LEFT LATERAL"])
def test_lateral_views_are_refused(view):
    with pytest.raises(UnsupportedInputError, match="lateral view"):
        check_chest_xray(make_study(modality="DX", view=view, body_part="CHEST"))


@pytest.mark.parametrize("view", ["RAO", "LAO", "LLO"])
def test_oblique_views_are_refused(view):
    with pytest.raises(UnsupportedInputError, match="oblique view"):
        check_chest_xray(make_study(modality="CR", view=view))


def test_lateral_in_body_part_is_refused_as_lateral():
    with pytest.raises(UnsupportedInputError, match="lateral chest view"):
        check_chest_xray(make_study(modality="DX", body_part="CHEST_LAT"))


@pytest.mark.parametrize("body_part", ["KNEE", "ABDOMEN", "HAND", "SKULL", "PELVIS"])
def test_non_chest_body_parts_are_refused(body_part):
    with pytest.raises(UnsupportedInputError, match=f"'{body_part}', not the chest"):
        check_chest_xray(make_study(modality="DX", view="AP", body_part=body_part))


def test_too_small_image_is_refused_with_its_size():
    with pytest.raises(ImageTooSmallError) as caught:
        check_chest_xray(make_study(textured(40, 50), file_format="png"))
    assert "50 x 40" in str(caught.value) and str(MIN_SIDE_PX) in str(caught.value)


def test_minimum_size_is_accepted():
    check_chest_xray(make_study(textured(MIN_SIDE_PX, MIN_SIDE_PX), file_format="png"))


@pytest.mark.parametrize("shape", [(64, 400), (400, 64)])
def test_extreme_aspect_ratio_is_refused(shape):
    assert max(shape) / min(shape) > MAX_ASPECT_RATIO
    with pytest.raises(UnsupportedInputError, match="close to square"):
        check_chest_xray(make_study(textured(*shape), file_format="jpeg"))


@pytest.mark.parametrize("noise", [0.0, 0.001])
def test_blank_image_is_refused(noise):
    pixels = np.full((128, 128), 0.5, np.float32) + np.random.default_rng(0).normal(0, noise, (128, 128))
    with pytest.raises(UnsupportedInputError, match="blank"):
        check_chest_xray(make_study(pixels.astype(np.float32), file_format="png"))


def test_modality_is_checked_before_pixels():
    with pytest.raises(UnsupportedInputError, match="CT image"):
        check_chest_xray(make_study(np.zeros((10, 10), np.float32), modality="CT"))


# --------------------------------------------------------------------------------------------------
# from bytes, through the loader
# --------------------------------------------------------------------------------------------------


def test_dicom_ct_file_is_refused(make_dicom):
    with pytest.raises(UnsupportedInputError, match="Use the CT slice page"):
        check_chest_xray(load_image(make_dicom(modality="CT", BodyPartExamined="CHEST")))


def test_dicom_mr_file_is_refused(make_dicom):
    with pytest.raises(UnsupportedInputError, match="MR"):
        check_chest_xray(load_image(make_dicom(modality="MR")))


def test_dicom_lateral_file_is_refused(make_dicom):
    with pytest.raises(UnsupportedInputError, match="lateral view"):
        check_chest_xray(load_image(make_dicom(modality="DX", ViewPosition="LL", BodyPartExamined="CHEST")))


def test_dicom_knee_file_is_refused(make_dicom):
    with pytest.raises(UnsupportedInputError, match="'KNEE'"):
        check_chest_xray(load_image(make_dicom(modality="CR", BodyPartExamined="KNEE")))


def test_dicom_frontal_chest_file_is_accepted(make_dicom):
    study = check_chest_xray(load_image(make_dicom(modality="DX", ViewPosition="PA", BodyPartExamined="CHEST")))
    assert study.warnings == []


def test_png_file_is_accepted():
    buffer = io.BytesIO()
    Image.fromarray((textured() * 255).astype(np.uint8)).save(buffer, "PNG")
    study = check_chest_xray(load_image(buffer.getvalue()))
    assert study.warnings == [] and study.view is None
