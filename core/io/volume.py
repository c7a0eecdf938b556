"""``Volume``: one CT volume in Hounsfield units, in the project's one canonical frame.

Canonical frame: arrays are indexed ``[z, y, x]`` with z from inferior to superior, y from anterior
to posterior and x from the patient's right to left, so the voxel axes (x, y, z) are LPS+ (DICOM's
patient axes). ``hu[k]`` shown as an image is an axial slice in the radiological convention
(anterior at the top, the patient's right on the image's left). ``spacing_mm`` is ``(dz, dy, dx)``.

Every reader (NIfTI, DICOM series, synthetic) returns this, and keeps how the input's own voxel
grid maps onto it (``source_affine``, ``source_shape``, ``source_ornt``) so that masks can be written
back in the grid and affine the user gave (``to_source_grid``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from nibabel import orientations

from ..errors import FileTooLargeError
from ..study import DicomReference

# Memory cap, checked from the headers before any pixel is decoded: 200 million voxels are 800 MB of
# float32 HU (a 512 x 512 x 760 series); the pipeline holds a few arrays of that size at once.
MAX_VOXELS = 200_000_000
CANONICAL_AXCODES = ("L", "P", "S")  # voxel axes (x, y, z) of the canonical frame
IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass
class Volume:
    hu: np.ndarray  # float32 HU, canonical [z, y, x]
    spacing_mm: tuple[float, float, float]  # (dz, dy, dx)
    file_format: str  # "nifti" | "dicom-series" | "dicom-enhanced" | "synthetic"
    source_affine: np.ndarray  # 4x4 voxel -> world (RAS+ mm, NIfTI convention) of the INPUT voxel grid
    source_shape: tuple[int, int, int]
    source_ornt: np.ndarray  # nibabel ornt: input voxel axes -> canonical (x=L, y=P, z=S) axes
    modality: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # allow-listed, non-identifying only
    warnings: list[str] = field(default_factory=list)
    synthetic: bool = False
    # DICOM series: the linkage keys a DICOM SEG export needs, one frame per slice in stack order
    # (``core.study.DicomReference``: never stored, logged or shown); None for NIfTI and synthetic volumes
    dicom_reference: DicomReference | None = field(default=None, repr=False)

    def to_source_grid(self, canonical: np.ndarray) -> np.ndarray:
        """A canonical ``[z, y, x]`` array (a mask, a map) laid out in the input's own voxel grid."""
        if canonical.shape != self.hu.shape:
            raise ValueError(f"expected an array of shape {self.hu.shape}, got {canonical.shape}")
        lps_voxels = np.transpose(canonical, (2, 1, 0))
        source = orientations.apply_orientation(lps_voxels, inverse_ornt(self.source_ornt))
        return np.ascontiguousarray(source)

    def to_source_planes(self, canonical: np.ndarray) -> np.ndarray:
        """``to_source_grid`` as planes along the input's last voxel axis, (slice, row, column) for a DICOM
        series in its stack order; a view, not a copy (a 512 x 512 x 300 mask is not copied twice)."""
        if canonical.shape != self.hu.shape:
            raise ValueError(f"expected an array of shape {self.hu.shape}, got {canonical.shape}")
        source = orientations.apply_orientation(np.transpose(canonical, (2, 1, 0)), inverse_ornt(self.source_ornt))
        return np.transpose(source, (2, 1, 0))

    @property
    def case_hash(self) -> str:
        """Identifies the case by content (whole HU, shape, spacing): the same scan, however it was uploaded."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(np.rint(np.clip(self.hu, -32768, 32767)).astype("<i2")).tobytes())
        digest.update(repr(self.hu.shape).encode())
        digest.update(repr(tuple(round(float(s), 3) for s in self.spacing_mm)).encode())
        return digest.hexdigest()

    @property
    def voxel_volume_ml(self) -> float:
        dz, dy, dx = self.spacing_mm
        return float(dz * dy * dx) / 1000.0


def volume_from_canonical(hu: np.ndarray, spacing_mm, *, file_format: str = "synthetic",
                          synthetic: bool = True) -> Volume:
    """A ``Volume`` whose input grid is the canonical one (LPS voxel axes), centred on the world origin."""
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"expected a 3-D [z, y, x] array, got shape {hu.shape}")
    spacing = tuple(float(s) for s in spacing_mm)
    return Volume(
        hu=hu,
        spacing_mm=spacing,
        file_format=file_format,
        source_affine=canonical_affine(hu.shape, spacing),
        source_shape=tuple(int(n) for n in hu.shape[::-1]),
        source_ornt=IDENTITY_ORNT.copy(),
        synthetic=synthetic,
    )


def canonical_affine(shape_zyx, spacing_mm) -> np.ndarray:
    """RAS+ affine of the canonical grid's LPS voxel axes (x, y, z), with the volume's centre at world 0."""
    dz, dy, dx = (float(s) for s in spacing_mm)
    affine = np.diag([-dx, -dy, dz, 1.0])  # L is -R, P is -A
    centre = (np.asarray(shape_zyx[::-1], dtype=float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """The ornt undoing ``ornt`` (canonical axes back to the input's axes)."""
    inverse = np.empty_like(ornt)
    for source_axis, (target_axis, flip) in enumerate(ornt):
        inverse[int(target_axis)] = (source_axis, flip)
    return inverse


def to_canonical(source_voxels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(canonical [z, y, x] array, source_ornt, spacing (dz, dy, dx)) of an array in the grid of ``affine``.

    Axes are permuted and flipped (no resampling): a slightly oblique grid keeps its voxels and takes
    the nearest canonical axes, as nibabel's ``as_closest_canonical`` does.
    """
    ornt = orientations.ornt_transform(orientations.io_orientation(affine),
                                       orientations.axcodes2ornt(CANONICAL_AXCODES))
    lps_voxels = orientations.apply_orientation(source_voxels, ornt)
    voxel_sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing_xyz = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _flip) in enumerate(ornt):
        spacing_xyz[int(target_axis)] = float(voxel_sizes[source_axis])
    canonical = np.ascontiguousarray(np.transpose(lps_voxels, (2, 1, 0)))
    return canonical, ornt, tuple(spacing_xyz[::-1])


def check_voxel_count(shape, what: str = "The volume") -> None:
    """Refuse, before decoding, a volume whose voxels would not fit in memory (``MAX_VOXELS``)."""
    count = int(np.prod([int(n) for n in shape], dtype=np.int64))
    if count > MAX_VOXELS:
        dims = " x ".join(str(int(n)) for n in shape)
        raise FileTooLargeError(
            f"{what} has {dims} = {count:,} voxels; the limit is {MAX_VOXELS:,} voxels, what this server can "
            "hold in memory. Upload a thicker-slice reconstruction or a crop around the chest."
        )
