"""CT volume input: NIfTI in any orientation, DICOM series (shuffled, compressed, Enhanced CT), zips and
folders all give the same canonical volume; inconsistent series are refused with the slices named."""

from __future__ import annotations

import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

import core.io.series as series_module
import core.io.volume as volume_module
from core.errors import FileTooLargeError, UnreadableFileError, UnsupportedInputError
from core.io import (
    dicom_series_bytes,
    load_dicom_series,
    load_nifti,
    load_volume,
    load_volume_path,
    load_zip,
    nifti_bytes,
    volume_from_canonical,
    write_source_nifti,
)
from core.io.series import FAKE_IDENTITY

SPACING = (2.5, 0.8, 0.7)  # (dz, dy, dx): all different, so a swapped axis shows
MARKER = (slice(-1, None), slice(5, 9), slice(8, 12))  # superior, anterior, patient's right


def tiny_chest(shape=(18, 64, 72), noise_hu: int = 10) -> np.ndarray:
    """A small asymmetric chest in whole HU, canonical [z, y, x]: the right lung (small x) is the larger,
    the lungs narrow towards the head (large z), the spine is posterior (large y), and a bright
    marker sits in the superior, anterior, right corner. Uniform noise of +-``noise_hu`` as on a scan."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.linspace(0, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(x / 0.95) ** 2 + (y / 0.8) ** 2 < 1] = 40.0
    taper = 1.0 - 0.5 * z
    right_lung = ((x + 0.45) / (0.35 * taper)) ** 2 + (y / 0.55) ** 2 < 1
    left_lung = ((x - 0.5) / (0.25 * taper)) ** 2 + (y / 0.5) ** 2 < 1  # the heart takes room on the left
    hu[right_lung | left_lung] = -850.0
    hu[(x / 0.12) ** 2 + ((y - 0.65) / 0.12) ** 2 < 1] = 700.0
    hu[MARKER] = 1500.0
    hu += np.random.default_rng(0).integers(-noise_hu, noise_hu, shape, endpoint=True)
    return hu.astype(np.float32)


CHEST = tiny_chest()
LUNGS = tiny_chest(noise_hu=0) == -850


def uploads(files: list[bytes]) -> list[tuple[str, bytes]]:
    return [(f"IM{i:04d}", data) for i, data in enumerate(files)]


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_the_fixture_is_asymmetric_as_documented():
    nx = CHEST.shape[2]
    assert LUNGS[:, :, : nx // 2].sum() > 1.3 * LUNGS[:, :, nx // 2:].sum()  # right lung larger
    assert LUNGS[0].sum() > LUNGS[-1].sum()  # narrower at the apex
    assert np.argwhere(CHEST > 600)[:, 1].mean() > CHEST.shape[1] / 2  # spine posterior


INPUTS = {
    "nifti LPS": lambda: [nifti_bytes(CHEST, SPACING, "LPS")],
    "nifti RAS gz": lambda: [nifti_bytes(CHEST, SPACING, "RAS", compress=True)],
    "nifti PIR float": lambda: [nifti_bytes(CHEST, SPACING, "PIR", np.float32)],
    "dicom shuffled": lambda: dicom_series_bytes(CHEST, SPACING, shuffle_seed=1),
    "dicom JPEG 2000": lambda: dicom_series_bytes(CHEST, SPACING, shuffle_seed=2, transfer_syntax=JPEG2000Lossless),
    "dicom RLE": lambda: dicom_series_bytes(CHEST, SPACING, shuffle_seed=3, transfer_syntax=RLELossless),
    "enhanced CT": lambda: dicom_series_bytes(CHEST, SPACING, enhanced=True),
    "zip of dicom": lambda: [zipped({
        **{f"series/{i}.dcm": data for i, data in enumerate(dicom_series_bytes(CHEST, SPACING, shuffle_seed=4))},
        "__MACOSX/series/._0.dcm": b"\x00\x05\x16\x07junk", "DICOMDIR": b"not read",
    })],
    "zip of nifti": lambda: [zipped({"case/volume.nii.gz": nifti_bytes(CHEST, SPACING, "RAS", compress=True)})],
}


@pytest.mark.parametrize("kind", INPUTS)
def test_every_input_gives_the_same_canonical_volume(kind):
    volume = load_volume(uploads(INPUTS[kind]()))
    assert volume.hu.dtype == np.float32
    np.testing.assert_array_equal(volume.hu, CHEST)
    np.testing.assert_allclose(volume.spacing_mm, SPACING, atol=1e-4)
    assert volume.voxel_volume_ml == pytest.approx(np.prod(SPACING) / 1000)
    assert volume.case_hash == volume_from_canonical(CHEST, SPACING).case_hash
    assert volume.warnings == []
    np.testing.assert_array_equal(volume.to_source_grid(volume.hu).shape, volume.source_shape)


def test_a_ras_nifti_built_by_hand_lands_in_the_canonical_frame():
    """Independent of the writer: voxel (0, 0, last) of an RAS+ grid is the patient's left, posterior, superior."""
    data = np.zeros((6, 5, 4), dtype=np.int16)
    data[0, 0, -1] = 1000
    volume = load_nifti(nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])).to_bytes())
    assert volume.hu.shape == (4, 5, 6)
    assert volume.spacing_mm == pytest.approx((3.0, 2.0, 1.0))
    assert volume.hu[-1, -1, -1] == 1000  # superior, posterior, left
    assert volume.metadata == {"Orientation": "RAS"}


def test_a_series_with_mirrored_rows_lands_in_the_same_frame():
    """Row direction -X (columns run to the patient's right): the loader must mirror it back."""
    mirrored = []
    for data in dicom_series_bytes(CHEST, SPACING, shuffle_seed=5):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
        x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [-x0, y0, z0]  # the first column is now the patient's left edge
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer)
        mirrored.append(buffer.getvalue())
    volume = load_dicom_series(mirrored)
    np.testing.assert_array_equal(volume.hu, CHEST)


@pytest.mark.parametrize("orientation", ["RAS", "PIR", "LPS"])
def test_to_source_grid_gives_back_the_input_grid(orientation):
    data = nifti_bytes(CHEST, SPACING, orientation)
    original = nib.Nifti1Image.from_bytes(data)
    volume = load_nifti(data)
    np.testing.assert_array_equal(volume.to_source_grid(volume.hu), np.asarray(original.dataobj))
    np.testing.assert_allclose(volume.source_affine, original.affine)


@pytest.mark.parametrize("make", [
    lambda: nifti_bytes(CHEST, SPACING, "RAS", compress=True),
    lambda: zipped({f"{i}": d for i, d in enumerate(dicom_series_bytes(CHEST, SPACING, shuffle_seed=6))}),
])
def test_masks_are_written_in_the_input_grid_and_affine(make, tmp_path):
    volume = load_volume(uploads([make()]))
    mask = LUNGS
    path = tmp_path / "case_lungs.nii.gz"
    write_source_nifti(mask, volume, path)
    written = nib.load(path)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, volume.source_affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj), volume.to_source_grid(mask).astype(np.uint8))
    np.testing.assert_array_equal(load_nifti(path.read_bytes()).hu, mask.astype(np.float32))


# --------------------------------------------------------------------------------------------------
# Series that are not one clean stack
# --------------------------------------------------------------------------------------------------


def refusal(files: list[bytes], error=UnsupportedInputError) -> str:
    with pytest.raises(error) as caught:
        load_volume(uploads(files))
    message = str(caught.value)
    for value in FAKE_IDENTITY.values():
        assert value.split("^")[0] not in message
    return message


def test_missing_slices_are_named():
    message = refusal(dicom_series_bytes(CHEST, SPACING, shuffle_seed=7, drop_slices=(5, 6)))
    assert "gap between slices 5 and 6 of 16" in message
    assert "about 2 slice(s)" in message


def test_a_duplicate_slice_is_named():
    files = dicom_series_bytes(CHEST, SPACING)
    message = refusal(files + [files[3]])
    assert "Slices 4 and 5 of 19" in message and "same position" in message


def test_a_second_series_is_refused():
    message = refusal(dicom_series_bytes(CHEST, SPACING, shuffle_seed=8, series_count=2))
    assert "2 different series (18, 18 files)" in message


def test_gantry_tilt_is_refused_with_its_angle():
    message = refusal(dicom_series_bytes(CHEST, SPACING, shuffle_seed=9, tilt_deg=12.0))
    assert "gantry tilt of about 12.0 degrees" in message and "cannot handle tilted" in message


def test_uneven_spacing_is_refused():
    files = dicom_series_bytes(CHEST, SPACING)
    ds = pydicom.dcmread(io.BytesIO(files[10]))
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.6  # 25 % of a 2.5 mm step
    buffer = io.BytesIO()
    ds.save_as(buffer)
    files[10] = buffer.getvalue()
    assert "slice spacing is not constant" in refusal(files)


def test_a_coronal_series_is_refused():
    files = []
    for data in dicom_series_bytes(CHEST, SPACING):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        buffer = io.BytesIO()
        ds.save_as(buffer)
        files.append(buffer.getvalue())
    assert "coronal series" in refusal(files)


def test_dicomdir_and_hidden_files_among_the_uploads_are_skipped():
    files = uploads(dicom_series_bytes(CHEST, SPACING, shuffle_seed=12))
    files += [("DICOMDIR", b"\x00" * 128 + b"DICM" + b"\x00" * 64), (".DS_Store", b"\x00\x00\x00\x01Bud1")]
    np.testing.assert_array_equal(load_volume(files).hu, CHEST)


@pytest.mark.parametrize("syntax", [JPEGLosslessSV1, JPEG2000Lossless, RLELossless])
def test_decoders_for_compressed_series_are_installed(syntax):
    """JPEG Lossless series exist in the wild; pydicom has no encoder for it, so only the decoder is checked."""
    assert get_decoder(syntax).is_available


def test_identifiers_never_leave_the_loader():
    volume = load_volume(uploads(dicom_series_bytes(CHEST, SPACING, shuffle_seed=10)))
    text = repr(volume.metadata) + repr(volume.warnings)
    for value in FAKE_IDENTITY.values():
        assert value not in text
    ds = pydicom.dcmread(io.BytesIO(dicom_series_bytes(CHEST, SPACING)[0]))
    assert str(ds.SeriesInstanceUID) not in text and str(ds.StudyInstanceUID) not in text
    assert volume.modality == "CT" and volume.file_format == "dicom-series"


# --------------------------------------------------------------------------------------------------
# Memory caps, zips, folders, mixed uploads
# --------------------------------------------------------------------------------------------------


def test_the_voxel_cap_is_checked_from_the_nifti_header():
    """A gzip bomb: the header claims 8 billion voxels; refused before anything is inflated."""
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    bomb = gzip.compress(header.binaryblock + b"\x00" * 4 + b"\x00" * 10_000_000)
    with pytest.raises(FileTooLargeError, match="the limit is 200,000,000 voxels"):
        load_volume(uploads([bomb]))


def test_the_voxel_cap_is_checked_from_dicom_headers_before_decoding(monkeypatch):
    monkeypatch.setattr(volume_module, "MAX_VOXELS", CHEST.size - 1)
    files = []
    for data in dicom_series_bytes(CHEST, SPACING):  # pixel data removed: decoding would fail
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.PixelData = b""
        buffer = io.BytesIO()
        ds.save_as(buffer)
        files.append(buffer.getvalue())
    with pytest.raises(FileTooLargeError, match="18 x 64 x 72"):
        load_dicom_series(files)


def test_zip_caps(monkeypatch):
    archive = zipped({f"{i}": d for i, d in enumerate(dicom_series_bytes(CHEST, SPACING))})
    monkeypatch.setattr(series_module, "MAX_SERIES_BYTES", 100_000)
    with pytest.raises(FileTooLargeError, match="expands to more than"):
        load_zip(archive)
    monkeypatch.setattr(series_module, "MAX_SERIES_FILES", 10)
    with pytest.raises(FileTooLargeError, match="holds 18 files"):
        load_zip(archive)


def test_a_folder_of_one_series_loads_recursively(tmp_path):
    for i, data in enumerate(dicom_series_bytes(CHEST, SPACING, shuffle_seed=11)):
        folder = tmp_path / "case" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}").write_bytes(data)
    (tmp_path / "case" / "README.txt").write_text("exported by hand")
    (tmp_path / "case" / "DICOMDIR").write_bytes(b"ignored by name")
    volume = load_volume_path(tmp_path / "case")
    np.testing.assert_array_equal(volume.hu, CHEST)
    assert volume.warnings == ["1 file(s) that are neither DICOM nor NIfTI were ignored."]
    nifti = tmp_path / "case.nii.gz"
    nifti.write_bytes(nifti_bytes(CHEST, SPACING, "RAS", compress=True))
    np.testing.assert_array_equal(load_volume_path(nifti).hu, CHEST)


@pytest.mark.parametrize("files, error, words", [
    ([], UnreadableFileError, "No file was uploaded"),
    ([b""], UnreadableFileError, "empty"),
    ([b"just some text, not an image"], UnreadableFileError, "not recognised"),
    ([b"\x89PNG\r\n\x1a\n" + b"\x00" * 64], UnsupportedInputError, "2-D picture"),
    ([gzip.compress(b"hello")], UnreadableFileError, "not a NIfTI"),
    ([nifti_bytes(CHEST, SPACING), dicom_series_bytes(CHEST, SPACING)[0]], UnsupportedInputError, "one NIfTI file"),
    ([zipped({"a.nii": nifti_bytes(CHEST, SPACING), "b.nii": nifti_bytes(CHEST, SPACING)})],
     UnsupportedInputError, "several volumes"),
    ([zipped({"notes.txt": b"nothing here"})], UnreadableFileError, "no DICOM or NIfTI"),
])
def test_uploads_that_are_not_one_volume(files, error, words):
    with pytest.raises(error, match=words):
        load_volume(uploads(files))


# --------------------------------------------------------------------------------------------------
# NIfTI details
# --------------------------------------------------------------------------------------------------


def nifti_of(data: np.ndarray, affine=None, **header) -> bytes:
    image = nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.5, 1.0]) if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    return image.to_bytes()


def test_scl_slope_and_inter_are_applied():
    stored = np.full((8, 8, 4), 10, dtype=np.int16)
    image = nib.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    assert np.all(load_nifti(image.to_bytes()).hu == 2 * 10 - 1024)


def test_a_singleton_fourth_dimension_is_accepted():
    volume = load_nifti(nifti_of(np.zeros((8, 8, 4, 1), dtype=np.int16)))
    assert volume.hu.shape == (4, 8, 8)


@pytest.mark.parametrize("data, words", [
    (np.zeros((8, 8, 4, 3), dtype=np.int16), "holds 3 volumes"),
    (np.zeros((8, 8), dtype=np.int16), "single 2-D image"),
    (np.full((8, 8, 4), np.nan, dtype=np.float32), "non-numeric"),
])
def test_nifti_refusals(data, words):
    with pytest.raises(UnsupportedInputError, match=words):
        load_nifti(nifti_of(data))


def test_a_nifti_without_orientation_is_loaded_with_a_warning():
    image = nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.int16), None)
    image.header["qform_code"] = image.header["sform_code"] = 0
    assert "left and right cannot be confirmed" in load_nifti(image.to_bytes()).warnings[0]


def test_a_hdr_img_pair_and_a_truncated_file_are_refused():
    header = nib.Nifti1Header()
    header["magic"] = b"ni1"
    with pytest.raises(UnsupportedInputError, match="header/image pair"):
        load_nifti(header.binaryblock)
    with pytest.raises(UnreadableFileError, match="damaged or truncated"):
        load_nifti(nifti_bytes(CHEST, SPACING)[:-100])
