"""NIfTI volumes (.nii, .nii.gz) through nibabel: read into the canonical frame, and write masks back.

The header is read and the voxel count checked against ``MAX_VOXELS`` before the image is
decompressed or decoded. The description and intent fields of the header are never read (free text
that may hold identifiers). The orientation comes from the sform, else the qform (nibabel's choice);
a header with neither gets a warning, since left and right can then not be confirmed.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from ..errors import UnreadableFileError, UnsupportedInputError
from .volume import CANONICAL_AXCODES, Volume, canonical_affine, check_voxel_count, to_canonical

GZIP_MAGIC = b"\x1f\x8b"
NIFTI2_HEADER_BYTES = 540  # the larger of the two header sizes (NIfTI-1: 348)
MSG_DAMAGED = "The NIfTI file cannot be read: it is damaged or truncated. Upload the complete, original file."
NO_ORIENTATION_WARNING = (
    "The NIfTI header gives no orientation (qform and sform codes are 0), so left and right cannot be "
    "confirmed: the volume is shown as the header's voxel order implies. Check the side of any finding."
)


def is_nifti(header: bytes) -> bool:
    """NIfTI-1 single file ('n+1' at byte 344) or NIfTI-2 ('n+2' at byte 4), given the first 540 bytes."""
    return header[344:348] == b"n+1\x00" or header[4:8] == b"n+2\x00"


def gunzip_head(data: bytes, n_bytes: int = NIFTI2_HEADER_BYTES) -> bytes:
    """The first ``n_bytes`` of a gzip stream (b"" when it does not inflate), without inflating the rest."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, n_bytes)
    except zlib.error:
        return b""


def load_nifti(data: bytes) -> Volume:
    """A ``Volume`` from the bytes of a .nii or .nii.gz file, in any orientation."""
    compressed = data[:2] == GZIP_MAGIC
    head = gunzip_head(data) if compressed else data[:NIFTI2_HEADER_BYTES]
    header = _read_header(head)
    shape = _volume_shape(header.get_data_shape())
    check_voxel_count(shape)
    if header.get_data_dtype().kind not in "iuf":
        raise UnsupportedInputError(
            "The NIfTI volume stores colour or complex values, not CT Hounsfield units. Export the CT volume "
            "as a greyscale (integer or float) NIfTI."
        )
    needed = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    raw = _gunzip(data, needed) if compressed else data
    if len(raw) < needed:
        raise UnreadableFileError(MSG_DAMAGED)

    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        image = image_class.from_bytes(raw)
        values = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)  # scl_slope / scl_inter applied
        affine = np.asarray(image.affine, dtype=float)
    except (ValueError, TypeError, OSError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise UnreadableFileError(MSG_DAMAGED) from exc
    if not np.isfinite(values).all():
        raise UnsupportedInputError(
            "The NIfTI volume contains non-numeric values (NaN or infinity), so it is not a CT volume in "
            "Hounsfield units. Export the CT from the scanner's DICOM series."
        )
    _check_affine(affine)

    canonical, ornt, spacing = to_canonical(values, affine)
    warnings = [] if _has_orientation(header) else [NO_ORIENTATION_WARNING]
    return Volume(
        hu=canonical,
        spacing_mm=spacing,
        file_format="nifti",
        source_affine=affine,
        source_shape=tuple(int(n) for n in shape),
        source_ornt=ornt,
        metadata={"Orientation": "".join(orientations.aff2axcodes(affine))},
        warnings=warnings,
    )


def _read_header(head: bytes):
    if len(head) >= 348 and head[344:348] == b"ni1\x00":
        raise UnsupportedInputError(
            "This is the header of a NIfTI header/image pair (.hdr + .img). Convert it to a single .nii or "
            ".nii.gz file and upload that."
        )
    if not is_nifti(head):
        raise UnreadableFileError("The file is not a NIfTI volume (.nii or .nii.gz): its header is not recognised.")
    header_class = nib.Nifti2Header if head[4:8] == b"n+2\x00" else nib.Nifti1Header
    try:
        return header_class.from_fileobj(io.BytesIO(head), check=False)
    except (ValueError, TypeError, nib.spatialimages.HeaderDataError) as exc:
        raise UnreadableFileError(MSG_DAMAGED) from exc


def _volume_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3-D shape, allowing singleton 4th and later dimensions; refuse 2-D images and 4-D series."""
    if len(shape) < 3 or min(shape) < 1:
        raise UnsupportedInputError(
            "The NIfTI file holds a single 2-D image, not a volume. Upload the whole CT volume, or use the "
            "CT slice page for one slice."
        )
    extra = int(np.prod(shape[3:], dtype=np.int64))
    if extra > 1:
        raise UnsupportedInputError(
            f"The NIfTI file holds {extra} volumes (a 4-D time series or a multi-channel image); the CT volume "
            "page analyses one 3-D CT volume. Export the CT volume on its own."
        )
    return tuple(int(n) for n in shape[:3])


def _gunzip(data: bytes, needed: int) -> bytes:
    """Inflate no more than the header says the image holds (a gzip bomb cannot take the memory)."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, needed)
    except zlib.error as exc:
        raise UnreadableFileError(MSG_DAMAGED) from exc


def _check_affine(affine: np.ndarray) -> None:
    voxel_sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9 or voxel_sizes.min() <= 0:
        raise UnreadableFileError(
            "The NIfTI header gives no usable voxel size or orientation (zero or invalid), so the volume "
            "cannot be placed in space. Export it again from the DICOM series."
        )


def _has_orientation(header) -> bool:
    return int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def nifti_bytes(canonical: np.ndarray, spacing_mm, orientation: str = "LPS", dtype=np.int16, *,
                compress: bool = False) -> bytes:
    """A NIfTI-1 file of a canonical ``[z, y, x]`` array, its voxel axes in ``orientation`` ("LPS", "RAS"...).

    The world coordinates of every voxel are the same whatever the orientation, so all orientations
    of one array load back to the same canonical volume. For tests and demos.
    """
    lps_voxels = np.transpose(np.asarray(canonical), (2, 1, 0))
    ornt = orientations.ornt_transform(orientations.axcodes2ornt(CANONICAL_AXCODES),
                                       orientations.axcodes2ornt(tuple(orientation.upper())))
    data = orientations.apply_orientation(lps_voxels, ornt)
    affine = canonical_affine(canonical.shape, spacing_mm) @ orientations.inv_ornt_aff(ornt, lps_voxels.shape)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        data = np.clip(np.rint(data), limits.min, limits.max)
    raw = _nifti_image(np.ascontiguousarray(data, dtype=dtype), affine).to_bytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def write_source_nifti(canonical_mask: np.ndarray, volume: Volume, path) -> None:
    """Write a canonical mask as uint8 0/1 in the input's voxel grid and affine (``.nii`` or ``.nii.gz``)."""
    data = volume.to_source_grid(np.asarray(canonical_mask) > 0).astype(np.uint8)
    nib.save(_nifti_image(data, volume.source_affine), str(Path(path)))


def _nifti_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)  # scanner coordinates
    image.set_sform(affine, code=1)
    return image
