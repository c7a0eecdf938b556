"""``core.io``: decoding, DICOM display pipeline, de-identification and typed failures."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import JPEG2000Lossless, JPEGLossless, JPEGLosslessSV1

from core.errors import FileTooLargeError, InputError, UnreadableFileError
from core.io import DICOM_ALLOWED_ATTRIBUTES, MAX_PIXELS, check_upload_size, load_image

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def gradient(rows: int = 128, columns: int = 128, low: int = 0, high: int = 4095, dtype=np.uint16) -> np.ndarray:
    """Values rising from ``low`` (left column) to ``high`` (right column); as ``dicom.gradient``."""
    return np.tile(np.linspace(low, high, columns).round(), (rows, 1)).astype(dtype)


def pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def textured(rows: int = 128, columns: int = 128, high: int = 4095, seed: int = 0) -> np.ndarray:
    """A gradient plus noise (so compression has real work to do), unsigned 16-bit."""
    noise = np.random.default_rng(seed).integers(0, 200, size=(rows, columns))
    return np.clip(gradient(rows, columns, 0, high - 200).astype(np.int64) + noise, 0, high).astype(np.uint16)


def encode_lossless_jpeg(image: np.ndarray, precision: int) -> bytes:
    """Minimal JPEG Lossless (ITU T.81 Process 14, predictor 1 = SV1) encoder for one grey component.

    No pip package encodes this format, so the test builds the bitstream itself: SOF3, one Huffman
    table with a 5-bit code for each of the 17 difference categories, then the entropy-coded segment.
    """
    rows, columns = image.shape
    values = image.astype(np.int64)
    prediction = np.empty_like(values)
    prediction[0, 0] = 1 << (precision - 1)
    prediction[0, 1:] = values[0, :-1]  # first line: left neighbour
    prediction[1:, 0] = values[:-1, 0]  # first column: pixel above
    prediction[1:, 1:] = values[1:, :-1]  # predictor 1: left neighbour
    diffs = (values - prediction) % 65536
    diffs = np.where(diffs >= 32768, diffs - 65536, diffs)

    accumulator, n_bits, out = 0, 0, bytearray()

    def put(value: int, length: int) -> None:
        nonlocal accumulator, n_bits
        accumulator = (accumulator << length) | (value & ((1 << length) - 1))
        n_bits += length
        while n_bits >= 8:
            n_bits -= 8
            byte = (accumulator >> n_bits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        accumulator &= (1 << n_bits) - 1

    for diff in diffs.ravel().tolist():
        category = abs(diff).bit_length()
        put(category, 5)  # Huffman code of the category = the category in 5 bits
        if 0 < category < 16:
            put(diff if diff > 0 else diff + (1 << category) - 1, category)
    if n_bits:
        put((1 << (8 - n_bits)) - 1, 8 - n_bits)  # pad with 1-bits

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    sof3 = struct.pack(">BHHB", precision, rows, columns, 1) + bytes([1, 0x11, 0])
    bits = bytes([0, 0, 0, 0, 17] + [0] * 11)
    dht = bytes([0x00]) + bits + bytes(range(17))
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns, Cs, Td/Ta, Ss = predictor 1, Se, Ah/Al
    return (
        b"\xff\xd8" + segment(0xFFC4, dht) + segment(0xFFC3, sof3) + segment(0xFFDA, sos) + bytes(out) + b"\xff\xd9"
    )


def encapsulated_dicom(dicom, pixels: np.ndarray, transfer_syntax: str, frame: bytes, **attributes) -> bytes:
    ds = dicom.dataset(pixels, transfer_syntax=transfer_syntax, **attributes)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return dicom.to_bytes(ds)


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header announces a huge image (and whose data is tiny)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


def assert_study_pixels(study) -> None:
    assert study.pixels.dtype == np.float32
    assert study.pixels.ndim == 2
    assert study.pixels.min() >= 0.0 and study.pixels.max() <= 1.0


# --------------------------------------------------------------------------------------------------
# Pillow formats
# --------------------------------------------------------------------------------------------------


def test_png_8bit_is_scaled_by_255():
    values = gradient(128, 128, 10, 200, np.uint8)
    study = load_image(pil_bytes(Image.fromarray(values), "PNG"), "x.png")
    assert_study_pixels(study)
    assert study.file_format == "png"
    assert study.modality is None and study.view is None
    np.testing.assert_allclose(study.pixels, values / 255.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_every_8bit_level_is_the_float64_quotient_rounded(mode):
    """8-bit levels are divided by 255 in float32 (the fast path): the same float32 values as dividing in float64."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[None], 4, axis=0)
    image = Image.fromarray(levels).convert(mode)
    study = load_image(pil_bytes(image, "PNG"), "x.png")
    assert study.pixels.dtype == np.float32 and study.pixels.flags.c_contiguous
    assert np.array_equal(study.pixels, (levels / 255.0).astype(np.float32))


@pytest.mark.parametrize("fmt, kind", [("PNG", "png"), ("TIFF", "tiff")])
def test_16bit_keeps_full_range(fmt, kind):
    values = gradient(128, 128, 1000, 3000)  # not stretched to [0, 1]: scaled by 65535
    study = load_image(pil_bytes(Image.fromarray(values), fmt))
    assert study.file_format == kind
    np.testing.assert_allclose(study.pixels, values / 65535.0, atol=1e-6)


def test_rgb_jpeg_becomes_grey():
    rgb = np.zeros((128, 128, 3), np.uint8)
    rgb[..., 0] = gradient(128, 128, 0, 255, np.uint8)  # red ramp
    rgb[..., 1] = 100
    study = load_image(pil_bytes(Image.fromarray(rgb), "JPEG", quality=95))
    assert_study_pixels(study)
    assert study.file_format == "jpeg"
    expected = (0.299 * rgb[..., 0] + 0.587 * 100) / 255.0
    assert np.abs(study.pixels - expected).mean() < 0.02


def test_jpeg_exif_orientation_is_applied():
    values = np.zeros((64, 128), np.uint8)  # 64 rows, 128 columns
    values[:16, :16] = 255  # bright block at the top-left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    study = load_image(pil_bytes(Image.fromarray(values), "JPEG", exif=exif, quality=95))
    assert study.pixels.shape == (128, 64)
    assert study.pixels[:16, -16:].mean() > 0.9  # now at the top-right
    assert study.pixels[:16, :16].mean() < 0.1


def test_rgba_png_drops_alpha():
    grey = gradient(128, 128, 0, 255, np.uint8)
    rgba = np.stack([grey, grey, grey, np.zeros_like(grey)], axis=-1)  # fully transparent
    study = load_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_allclose(study.pixels, grey / 255.0, atol=1e-5)


def test_bmp_and_rgb_tiff():
    grey = gradient(128, 128, 0, 255, np.uint8)
    bmp = load_image(pil_bytes(Image.fromarray(grey), "BMP"))
    assert bmp.file_format == "bmp"
    np.testing.assert_allclose(bmp.pixels, grey / 255.0, atol=1e-6)
    rgb = np.stack([grey] * 3, axis=-1)
    tiff = load_image(pil_bytes(Image.fromarray(rgb), "TIFF"))
    assert tiff.file_format == "tiff"
    np.testing.assert_allclose(tiff.pixels, grey / 255.0, atol=1e-5)


def test_multipage_tiff_takes_first_page_and_warns():
    first = Image.fromarray(gradient(128, 128, 0, 255, np.uint8))
    second = Image.fromarray(np.zeros((128, 128), np.uint8))
    study = load_image(pil_bytes(first, "TIFF", save_all=True, append_images=[second]))
    np.testing.assert_allclose(study.pixels, gradient(128, 128, 0, 255, np.uint8) / 255.0, atol=1e-6)
    assert any("2 images" in w and "first" in w for w in study.warnings)


def test_format_comes_from_content_not_name(make_dicom):
    png = pil_bytes(Image.fromarray(gradient(128, 128, 0, 255, np.uint8)), "PNG")
    assert load_image(png, "scan.dcm").file_format == "png"
    assert load_image(make_dicom(), "scan.png").file_format == "dicom"


def test_plain_image_metadata_is_minimal():
    study = load_image(pil_bytes(Image.fromarray(gradient(96, 128, 0, 255, np.uint8)), "PNG"))
    assert study.metadata == {"Rows": "96", "Columns": "128", "SourceMode": "L"}
    assert study.warnings == []


# --------------------------------------------------------------------------------------------------
# DICOM display pipeline
# --------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # the lower-case 'pa' is on purpose
@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_cr_and_dx_load_with_their_facts(make_dicom, modality):
    data = make_dicom(
        modality=modality, ViewPosition="pa", BodyPartExamined="CHEST", ImagerPixelSpacing=[0.15, 0.16],
    )
    study = load_image(data, "image.dcm")
    assert_study_pixels(study)
    assert study.file_format == "dicom"
    assert (study.modality, study.view, study.body_part) == (modality, "PA", "CHEST")
    assert study.pixel_spacing_mm == (0.15, 0.16)
    assert study.metadata["Modality"] == modality
    assert study.warnings == []
    np.testing.assert_allclose(study.pixels, gradient() / 4095.0, atol=1e-6)  # no VOI: min-max


def test_pixel_spacing_prefers_pixel_spacing(make_dicom):
    study = load_image(make_dicom(PixelSpacing=[0.2, 0.2], ImagerPixelSpacing=[0.15, 0.15]))
    assert study.pixel_spacing_mm == (0.2, 0.2)


def test_monochrome1_is_inverted_so_that_high_values_are_dark(make_dicom):
    mono2 = load_image(make_dicom(photometric="MONOCHROME2", bits_stored=12)).pixels
    mono1 = load_image(make_dicom(photometric="MONOCHROME1", bits_stored=12)).pixels
    assert mono2[:, 0].max() < 0.01 and mono2[:, -1].min() > 0.99  # low stored value = dark
    assert mono1[:, 0].min() > 0.99 and mono1[:, -1].max() < 0.01  # MONOCHROME1: low stored value = bright
    assert np.all(np.diff(mono1[0]) <= 0)
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_monochrome1_is_inverted_after_windowing(make_dicom):
    # window over the lower half of the range; MONOCHROME1 then shows values above it as black
    data = make_dicom(photometric="MONOCHROME1", bits_stored=12, WindowCenter=1024, WindowWidth=2048)
    pixels = load_image(data).pixels
    stored = gradient()[0]
    assert np.all(pixels[0, stored >= 2048] == 0.0)
    assert pixels[0, 0] == pytest.approx(1.0, abs=1e-3)


def dicom_linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written independently of pydicom, mapped to [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_rescale_slope_intercept_then_window(make_dicom):
    stored = gradient(128, 128, 0, 2000)
    data = make_dicom(
        stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-2000, WindowCenter=0, WindowWidth=2000,
    )
    pixels = load_image(data).pixels
    expected = dicom_linear_window(stored * 2.0 - 2000.0, 0, 2000)
    np.testing.assert_allclose(pixels, expected, atol=1e-5)
    assert pixels[0, 0] == 0.0 and pixels[0, -1] == 1.0


def test_rescale_without_window_is_min_max_of_modality_values(make_dicom):
    data = make_dicom(gradient(128, 128, 100, 1100), RescaleSlope=-1, RescaleIntercept=4095)
    pixels = load_image(data).pixels
    assert pixels[0, 0] == pytest.approx(1.0) and pixels[0, -1] == pytest.approx(0.0)  # slope -1 inverts


def test_window_with_negative_rescale_slope(make_dicom):
    stored = gradient(128, 128, 0, 4095)
    data = make_dicom(
        stored, bits_stored=12, RescaleSlope=-1, RescaleIntercept=4095, WindowCenter=1500, WindowWidth=2000,
    )
    pixels = load_image(data).pixels
    np.testing.assert_allclose(pixels, dicom_linear_window(4095.0 - stored, 1500, 2000), atol=1e-5)
    assert pixels[0, 0] == 1.0 and pixels[0, -1] == 0.0


def test_window_on_signed_pixels(make_dicom):
    stored = gradient(128, 128, -1000, 1000, np.int16)
    pixels = load_image(make_dicom(stored, bits_stored=12, WindowCenter=0, WindowWidth=1000)).pixels
    np.testing.assert_allclose(pixels, dicom_linear_window(stored.astype(float), 0, 1000), atol=1e-5)


def test_invalid_window_falls_back_to_full_range_with_warning(make_dicom):
    study = load_image(make_dicom(WindowCenter=100, WindowWidth=0))
    np.testing.assert_allclose(study.pixels, gradient() / 4095.0, atol=1e-6)
    assert any("display window is invalid" in w for w in study.warnings)


def voi_lut_item(first_mapped: int, entries: int, bits: int, data: np.ndarray):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, "US", [entries, first_mapped, bits])  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in data])  # LUT Data
    return item


def test_voi_lut_sequence_is_applied(make_dicom):
    lut = np.round(np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(np.int64)  # non-linear curve
    data = make_dicom(
        bits_stored=12, VOILUTSequence=[voi_lut_item(0, 4096, 16, lut)],
        WindowCenter=10, WindowWidth=20,  # the LUT wins over the window
    )
    pixels = load_image(data).pixels
    np.testing.assert_allclose(pixels, lut[gradient()] / 65535.0, atol=1e-6)


def test_voi_lut_first_mapped_value_and_clamping(make_dicom):
    lut = np.arange(2048) * 2  # 12-bit output
    pixels = load_image(make_dicom(bits_stored=12, VOILUTSequence=[voi_lut_item(1024, 2048, 12, lut)])).pixels
    stored = gradient()[0].astype(np.int64)
    expected = np.clip(stored - 1024, 0, 2047) * 2 / lut.max()
    np.testing.assert_allclose(pixels[0], expected, atol=1e-6)


@pytest.mark.parametrize(
    "values, bits_stored",
    [
        (gradient(128, 128, 3, 250, np.uint8), 8),
        (gradient(128, 128, 5, 4095), 12),
        (gradient(128, 128, 0, 65535), 16),
        (gradient(128, 128, -2048, 2047, np.int16), 12),
        (gradient(128, 128, -32768, 32767, np.int16), 16),
    ],
    ids=["8-bit", "12-bit", "16-bit", "signed-12", "signed-16"],
)
def test_bit_depths_and_signedness(make_dicom, values, bits_stored):
    pixels = load_image(make_dicom(values, bits_stored=bits_stored)).pixels
    values = values.astype(np.float64)
    expected = (values - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_jpeg2000_lossless_matches_uncompressed(dicom, make_dicom):
    values = textured()
    ds = dicom.dataset(values, bits_stored=12, ViewPosition="AP")
    ds.compress(JPEG2000Lossless, values, encoding_plugin="pylibjpeg")
    compressed = load_image(dicom.to_bytes(ds))
    assert compressed.metadata["TransferSyntax"] == JPEG2000Lossless.name
    reference = load_image(make_dicom(values, bits_stored=12))
    np.testing.assert_array_equal(compressed.pixels, reference.pixels)


@pytest.mark.parametrize("transfer_syntax", [JPEGLosslessSV1, JPEGLossless], ids=["SV1-.70", "P14-.57"])
@pytest.mark.parametrize("precision", [8, 12, 16])
def test_jpeg_lossless_matches_uncompressed(dicom, make_dicom, transfer_syntax, precision):
    dtype = np.uint8 if precision == 8 else np.uint16
    values = textured(high=(1 << precision) - 1).astype(dtype)
    frame = encode_lossless_jpeg(values, precision)
    study = load_image(encapsulated_dicom(dicom, values, transfer_syntax, frame, bits_stored=precision))
    reference = load_image(make_dicom(values, bits_stored=precision))
    np.testing.assert_array_equal(study.pixels, reference.pixels)


def test_missing_decoder_names_syntax_and_package(dicom, monkeypatch):
    values = textured()
    ds = dicom.dataset(values, bits_stored=12)
    ds.compress(JPEG2000Lossless, values, encoding_plugin="pylibjpeg")
    data = dicom.to_bytes(ds)
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(UnreadableFileError) as caught:
        load_image(data)
    assert "JPEG 2000" in str(caught.value)
    assert "pylibjpeg-openjpeg" in str(caught.value)


def test_rgb_dicom_becomes_grey(dicom):
    grey = gradient(128, 128, 0, 255, np.uint8)
    rgb = np.stack([grey, grey, np.zeros_like(grey)], axis=-1)
    ds = dicom.dataset(grey, modality="OT", photometric="RGB")
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PixelData = rgb.tobytes()
    study = load_image(dicom.to_bytes(ds))
    np.testing.assert_allclose(study.pixels, (0.299 + 0.587) * grey / 255.0, atol=1e-5)


def test_multiframe_takes_first_frame_and_warns(make_dicom):
    frames = np.stack([gradient(), gradient()[:, ::-1], np.full((128, 128), 7, np.uint16)])
    study = load_image(make_dicom(frames))
    np.testing.assert_allclose(study.pixels, gradient() / 4095.0, atol=1e-6)
    assert any("3 frames" in w and "first" in w for w in study.warnings)


def test_dicom_without_preamble_is_read_when_it_has_pixels(make_dicom):
    study = load_image(make_dicom(preamble=False, modality="CR"))
    assert study.file_format == "dicom" and study.modality == "CR"
    np.testing.assert_allclose(study.pixels, gradient() / 4095.0, atol=1e-6)


def test_dicom_without_preamble_and_without_pixels_is_refused(make_dicom):
    with pytest.raises(UnreadableFileError, match="not a recognised image"):
        load_image(make_dicom(None, preamble=False, modality="SR"))


def test_structured_report_has_no_image(make_dicom):
    from pydicom.uid import BasicTextSRStorage

    with pytest.raises(UnreadableFileError, match="contains no image") as caught:
        load_image(make_dicom(None, modality="SR", SOPClassUID=BasicTextSRStorage))
    assert "Basic Text SR" in str(caught.value)


def test_burned_in_annotation_sets_flag_and_warning(make_dicom):
    study = load_image(make_dicom(BurnedInAnnotation="YES"))
    assert study.burned_in_annotation is True
    assert any("burned into the image" in w and "identifying" in w for w in study.warnings)
    clean = load_image(make_dicom(BurnedInAnnotation="NO"))
    assert clean.burned_in_annotation is False and clean.warnings == []


# --------------------------------------------------------------------------------------------------
# De-identification
# --------------------------------------------------------------------------------------------------

IDENTIFYING = {
    "PatientName": "DOE^JOHNATHAN",
    "PatientID": "PID98765",
    "PatientBirthDate": "19610203",
    "PatientSex": "M",
    "PatientAge": "063Y",
    "PatientAddress": "12 ELM STREET SPRINGFIELD",
    "OtherPatientIDs": "OPID55555",
    "AccessionNumber": "ACC24680",
    "InstitutionName": "SAINT EXAMPLE HOSPITAL",
    "InstitutionAddress": "1 HOSPITAL ROAD",
    "InstitutionalDepartmentName": "RADIOLOGY WEST WING",
    "ReferringPhysicianName": "REFERRER^ALICE",
    "PerformingPhysicianName": "PERFORMER^BOB",
    "OperatorsName": "OPERATOR^CAROL",
    "StudyDate": "20230415",
    "SeriesDate": "20230416",
    "AcquisitionDate": "20230417",
    "ContentDate": "20230418",
    "StudyTime": "101112",
    "AcquisitionDateTime": "20230417093015",
    "StudyInstanceUID": "1.2.826.0.1.3680043.99.111",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.99.222",
    "SOPInstanceUID": "1.2.826.0.1.3680043.99.333",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.99.444",
    "StudyID": "STUDY4711",
    "DeviceSerialNumber": "SERIAL-0042-XYZ",
    "StationName": "STATION-NORTH-7",
    "StudyDescription": "CHEST PA OF JOHNATHAN",
    "SeriesDescription": "SERIES FOR DOE",
    "ImageComments": "bed 12, ward Q",
}


def test_identifying_values_never_reach_the_study(dicom):
    ds = dicom.dataset(
        gradient(), modality="DX", ViewPosition="PA", BodyPartExamined="CHEST",
        Manufacturer="ACME Medical", ManufacturerModelName="XR-9000", BurnedInAnnotation="YES", **IDENTIFYING,
    )
    ds.file_meta.MediaStorageSOPInstanceUID = IDENTIFYING["SOPInstanceUID"]
    block = ds.private_block(0x0009, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", "PRIVATE-JOHNATHAN-SECRET")
    frames = np.stack([gradient(), gradient()])  # multi-frame too, to get another warning
    ds.NumberOfFrames = 2
    ds.PixelData = frames.astype("<u2").tobytes()

    study = load_image(dicom.to_bytes(ds), "DOE_JOHNATHAN_19610203.dcm")

    texts = [repr(study), *study.metadata.keys(), *study.metadata.values(), *study.warnings]
    secrets = [*IDENTIFYING.values(), "PRIVATE-JOHNATHAN-SECRET", "JOHNATHAN", "DOE_"]
    for secret in (s for s in secrets if len(s) > 1):  # PatientSex "M": checked by the key test below
        for text in texts:
            assert secret not in text, f"{secret!r} leaked into {text[:80]!r}"
    assert not any(key.startswith("Patient") for key in study.metadata)
    assert set(study.metadata) <= set(DICOM_ALLOWED_ATTRIBUTES) | {"TransferSyntax", "SOPClass"}
    # the useful, non-identifying facts are kept
    assert study.metadata["Manufacturer"] == "ACME Medical"
    assert study.metadata["ManufacturerModelName"] == "XR-9000"
    assert (study.modality, study.view, study.body_part) == ("DX", "PA", "CHEST")
    assert study.burned_in_annotation is True


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_allowed_attributes_with_unexpected_values_are_dropped(make_dicom):
    study = load_image(make_dicom(ViewPosition="PA; DOE", Manufacturer="ACME^DOE^JOHN", BodyPartExamined="CHEST"))
    assert study.view is None
    assert "ViewPosition" not in study.metadata and "Manufacturer" not in study.metadata
    assert study.body_part == "CHEST"


# --------------------------------------------------------------------------------------------------
# Failures: always a typed error with a human message
# --------------------------------------------------------------------------------------------------


def test_empty_bytes():
    with pytest.raises(UnreadableFileError, match="empty"):
        load_image(b"")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(seed):
    data = np.random.default_rng(seed).bytes(2000 + 500 * seed)
    with pytest.raises(UnreadableFileError, match="not a recognised image"):
        load_image(data, "upload.png")


def test_text_file():
    with pytest.raises(UnreadableFileError, match="text file"):
        load_image("Patient notes: nothing to see here.\n".encode() * 20, "notes.txt")


def test_pdf():
    with pytest.raises(UnreadableFileError, match="PDF document"):
        load_image(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" * 5)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_truncated_pillow_image(fmt):
    noisy = np.random.default_rng(1).integers(0, 255, (128, 128), dtype=np.uint8)
    data = pil_bytes(Image.fromarray(noisy), fmt)
    with pytest.raises(UnreadableFileError) as caught:
        load_image(data[: len(data) * 2 // 3])
    assert "truncated" in str(caught.value)
    assert caught.value.__cause__ is not None  # raised `from` the library's exception


def test_truncated_uncompressed_dicom(make_dicom):
    data = make_dicom()
    with pytest.raises(UnreadableFileError, match="file ends early"):
        load_image(data[: len(data) - 5000])


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_truncated_compressed_dicom(dicom):
    values = textured()
    ds = dicom.dataset(values, bits_stored=12)
    ds.compress(JPEG2000Lossless, values, encoding_plugin="pylibjpeg")
    data = dicom.to_bytes(ds)
    with pytest.raises(UnreadableFileError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_dicom_cut_inside_header(make_dicom):
    with pytest.raises(UnreadableFileError, match="truncated|damaged"):
        load_image(make_dicom()[:200])


def test_damaged_jpeg2000_stream(dicom):
    values = textured()
    ds = dicom.dataset(values, bits_stored=12)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])  # J2K start, garbage after
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    with pytest.raises(UnreadableFileError, match="cannot be decoded"):
        load_image(dicom.to_bytes(ds))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzzed_files_only_raise_input_errors(make_dicom):
    """Random byte flips in valid files: a Study or a typed InputError, never a raw library error."""
    rng = np.random.default_rng(42)
    sources = [
        make_dicom(gradient(64, 64), bits_stored=12, WindowCenter=2000, WindowWidth=4000),
        pil_bytes(Image.fromarray(gradient(64, 64, 0, 255, np.uint8)), "PNG"),
        pil_bytes(Image.fromarray(gradient(64, 64, 0, 255, np.uint8)), "JPEG"),
    ]
    for source in sources:
        for _ in range(40):
            data = bytearray(source)
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[position] = int(rng.integers(0, 256))
            try:
                study = load_image(bytes(data))
            except InputError:
                continue
            assert_study_pixels(study)


# --------------------------------------------------------------------------------------------------
# Size limits
# --------------------------------------------------------------------------------------------------


def test_upload_size_cap(monkeypatch):
    monkeypatch.setenv("CHEST_MAX_UPLOAD_MB", "1")
    check_upload_size(1024 * 1024)  # exactly at the cap: fine
    with pytest.raises(FileTooLargeError, match="limit is 1 MB"):
        check_upload_size(1024 * 1024 + 1)
    with pytest.raises(FileTooLargeError):
        load_image(b"\0" * (1024 * 1024 + 1))


@pytest.mark.parametrize("side", [9000, 20000])  # below and above Pillow's own bomb limit
def test_png_decompression_bomb_is_refused_from_the_header(side):
    assert side * side > MAX_PIXELS
    with pytest.raises(FileTooLargeError, match="megapixels"):
        load_image(png_header_claiming(side, side))


def test_dicom_decompression_bomb_is_refused_from_the_header(make_dicom):
    with pytest.raises(FileTooLargeError, match="megapixels"):
        load_image(make_dicom(gradient(8, 8), Rows=10000, Columns=10000))


# --------------------------------------------------------------------------------------------------
# Deflate-compressed datasets (Deflated Explicit VR Little Endian, 1.2.840.10008.1.2.1.99)
# --------------------------------------------------------------------------------------------------


def deflated_dicom(dicom) -> tuple[bytes, int]:
    """A deflated DICOM file, and where its deflated dataset starts (right after the file meta group)."""
    from pydicom import dcmread
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dicom.dataset(textured(64, 64), bits_stored=12, transfer_syntax=DeflatedExplicitVRLittleEndian)
    data = dicom.to_bytes(ds)
    group_length = dcmread(io.BytesIO(data)).file_meta.FileMetaInformationGroupLength
    return data, 128 + 4 + 12 + int(group_length)  # preamble, "DICM", the (0002,0000) element, the rest of group 2


def test_deflated_dicom_loads(dicom):
    data, _ = deflated_dicom(dicom)
    study = load_image(data)
    assert study.metadata["TransferSyntax"] == "Deflated Explicit VR Little Endian"
    assert_study_pixels(study)


def _invalid_block_type(data: bytes, start: int) -> bytes:
    """The first deflate block header set to BFINAL=1, BTYPE=11: a block type RFC 1951 reserves."""
    return data[:start] + bytes([data[start] | 0b111]) + data[start + 1:]


@pytest.mark.parametrize("damage", [
    pytest.param(_invalid_block_type, id="invalid-block"),  # zlib: "invalid block type"
    pytest.param(lambda data, start: data[: (start + len(data)) // 2], id="cut-in-the-stream"),  # "truncated stream"
])
@pytest.mark.parametrize("preamble", [True, False], ids=["part10", "headerless"])
def test_damaged_deflated_dicom_is_a_clear_refusal(dicom, damage, preamble):
    """zlib errors from pydicom's reader become the typed refusal, with or without the 128-byte preamble."""
    data, start = deflated_dicom(dicom)
    damaged = damage(data, start)
    with pytest.raises(UnreadableFileError, match="deflate-compressed .* damaged or truncated") as caught:
        load_image(damaged if preamble else damaged[132:])
    assert caught.value.__cause__ is not None  # raised `from` the library's exception


@pytest.mark.parametrize("damage", [
    pytest.param(lambda data, start: data[: start + 1], id="one-deflated-byte"),
    pytest.param(lambda data, start: data[:start] + bytes(len(data) - start), id="zeroed-stream"),
])
def test_deflated_stream_too_short_or_blank_is_refused(dicom, damage):
    """pydicom reads these as an empty dataset (zeros parse as command-set elements) without inflating them."""
    data, start = deflated_dicom(dicom)
    with pytest.raises(UnreadableFileError, match="truncated|no image"):
        load_image(damage(data, start))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzzed_deflated_dicom_only_raises_input_errors(dicom):
    """Byte flips in the deflated dataset and every cut of it: a Study or a typed InputError, nothing raw."""
    data, start = deflated_dicom(dicom)
    rng = np.random.default_rng(8)
    mutated = [data[:cut] for cut in range(start, len(data), 7)]
    for _ in range(150):
        flipped = bytearray(data)
        for position in rng.integers(start, len(data), size=int(rng.integers(1, 5))):
            flipped[position] = int(rng.integers(0, 256))
        mutated.append(bytes(flipped))
    for variant in mutated + [m[132:] for m in mutated]:
        try:
            study = load_image(variant)
        except InputError:
            continue
        assert_study_pixels(study)


def test_dataset_start_is_found_after_the_file_meta_group(dicom):
    from core.io.dicom import _dataset_start

    data, start = deflated_dicom(dicom)
    assert _dataset_start(data) == start
    assert _dataset_start(data[128 + 4:]) == start - 132  # no preamble


def test_a_deflate_bomb_is_refused_before_pydicom_inflates_it(dicom, monkeypatch):
    import core.io.dicom

    data, _ = deflated_dicom(dicom)
    inflated = len(zlib.decompress(data[core.io.dicom._dataset_start(data):], -zlib.MAX_WBITS))
    monkeypatch.setattr(core.io.dicom, "MAX_INFLATED_BYTES", inflated - 1)  # one byte too many for the cap
    with pytest.raises(FileTooLargeError, match="would expand to more than"):
        load_image(data)
    monkeypatch.setattr(core.io.dicom, "MAX_INFLATED_BYTES", inflated)  # exactly at the cap: fine
    assert_study_pixels(load_image(data))
