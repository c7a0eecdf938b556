"""Synthetic axial chest CT slices in Hounsfield units: demo cases and test fixtures, never patient images.

``make_ct_phantom(label, seed, size)`` draws one axial slice at the level of the heart from a seed
alone (numpy and scipy; no data, no network). Same ``(label, seed, size)`` gives the same values,
bit for bit; the anatomy of a seed does not depend on the label (independent random streams), so a
``"covid"`` and a ``"non-covid"`` phantom of one seed differ only by their lesions.

Convention: the radiological one of axial CT, anterior at the top and the patient's right on the
image's left. Values (before noise): air -1000 HU outside the body; subcutaneous fat -100; body-wall
muscle 50; intrathoracic soft tissue 30 and mediastinal fat -90; heart and aorta 40; ribs, sternum
and spine as bone (marrow 450, cortex 900); spinal canal 15; two lungs around -860 (a little denser
posteriorly), with vessels (40) thicker and more numerous near the hila. Then a slight blur
(partial volume) and Gaussian noise (12 HU).

Labels (``CT_PHANTOM_LABELS``): ``"non-covid"`` has no lesion. ``"covid"`` has the textbook
COVID-19 pattern, bilateral, peripheral (subpleural) and posterior: two to four ground-glass patches
(-700 to -500 HU, vessels still visible through them) and one or two consolidations (-100 to +50
HU, hiding the vessels) inside or beside them. Ground truth: ``lung_mask`` (both lungs, vessels and
lesions included), ``infection_mask`` (0 background, 1 ground glass, 2 consolidation, as the pack's
multi-class masks). A caricature for tests and demos, not a model of the disease.

``ct_phantom_dicom_bytes(phantom, ...)`` writes the slice as a CT DICOM file (int16 stored values
with RescaleSlope/Intercept, PixelPaddingValue outside the reconstruction circle, axial
ImageOrientationPatient, obviously fake patient identity).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .imaging.windowing import LUNG, apply_window
from .phantoms import SYNTHETIC_WARNING
from .study import Study

CT_PHANTOM_LABELS = ("non-covid", "covid")
DEFAULT_SIZE = 256
MIN_SIZE = 32
FIELD_OF_VIEW_MM = 360.0  # the whole image side; pixel spacing = FIELD_OF_VIEW_MM / size
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

# Values in HU (before blur and noise)
AIR = -1000.0
FAT = -100.0
MEDIASTINAL_FAT = -90.0
MUSCLE = 50.0
SOFT_TISSUE = 30.0
BLOOD = 40.0
MARROW = 450.0
CORTEX = 900.0
CSF = 15.0
LUNG_ANTERIOR, LUNG_POSTERIOR = -880.0, -840.0
NOISE_HU = 12.0
GGO_RANGE = (-700.0, -500.0)
CONSOLIDATION_RANGE = (-100.0, 50.0)

_ANATOMY, _LESIONS, _NOISE = 0, 1, 2  # independent random streams
_FIELD_GRID = 24  # coarse grid of the smooth random fields (resized to the image): same shapes at any size


@dataclass(eq=False)
class CtPhantom:
    hu: np.ndarray  # float32 (size, size), Hounsfield units
    body_mask: np.ndarray  # bool, inside the skin
    lung_mask: np.ndarray  # bool, both lungs (vessels and lesions included)
    infection_mask: np.ndarray  # uint8: 0 background, 1 ground-glass opacity, 2 consolidation
    vessel_mask: np.ndarray  # bool, lung vessels still visible (not under a consolidation)
    label: str
    seed: int
    pixel_spacing_mm: float

    @property
    def ggo_mask(self) -> np.ndarray:
        return self.infection_mask == 1

    @property
    def consolidation_mask(self) -> np.ndarray:
        return self.infection_mask == 2

    def to_study(self) -> Study:
        """The phantom as a loaded CT DICOM would be: HU, the lung window on display, flagged synthetic."""
        return Study(
            pixels=apply_window(self.hu, LUNG),
            file_format="dicom",
            modality="CT",
            body_part="CHEST",
            pixel_spacing_mm=(self.pixel_spacing_mm, self.pixel_spacing_mm),
            warnings=[SYNTHETIC_WARNING],
            synthetic=True,
            hu=self.hu.astype(np.float32, copy=True),
            image_orientation=AXIAL_ORIENTATION,
        )


# --------------------------------------------------------------------------------------------------
# Geometry: canonical coordinates X (to the image right) and Y (down, posterior) in [0, 1]


class _Grid:
    def __init__(self, size: int):
        p = (np.arange(size, dtype=np.float64) + 0.5) / size
        self.size = size
        self.X, self.Y = np.meshgrid(p, p)

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
        """((x'/a)^2 + (y'/b)^2): <= 1 inside an ellipse centred on (cx, cy), rotated by ``angle`` (radians)."""
        return self._ellipse(self.X, self.Y, cx, cy, a, b, angle)

    def small_ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
        """Boolean mask of a small ellipse, computed only in its bounding square (ribs, vessels)."""
        mask = np.zeros((self.size, self.size), dtype=bool)
        reach = max(a, b)
        rows = slice(max(int((cy - reach) * self.size) - 1, 0), min(int((cy + reach) * self.size) + 2, self.size))
        cols = slice(max(int((cx - reach) * self.size) - 1, 0), min(int((cx + reach) * self.size) + 2, self.size))
        mask[rows, cols] = self._ellipse(self.X[rows, cols], self.Y[rows, cols], cx, cy, a, b, angle) <= 1
        return mask

    @staticmethod
    def _ellipse(X, Y, cx, cy, a, b, angle):
        dx, dy = X - cx, Y - cy
        c, s = np.cos(angle), np.sin(angle)
        u, v = dx * c + dy * s, -dx * s + dy * c
        return (u / a) ** 2 + (v / b) ** 2

    def smooth_field(self, rng: np.random.Generator) -> np.ndarray:
        """A smooth random field in about [-1, 1], drawn on a coarse grid so that its shapes do not depend on the size."""
        coarse = ndi.gaussian_filter(rng.standard_normal((_FIELD_GRID, _FIELD_GRID)), 2.0, mode="wrap")
        coarse /= max(float(np.abs(coarse).max()), 1e-9)
        zoom = self.size / _FIELD_GRID
        return ndi.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)[: self.size, : self.size]


@dataclass
class _Body:
    cx: float
    cy: float
    a: float  # body semi-axes
    b: float
    fat: float  # subcutaneous fat thickness
    wall: float  # muscle thickness

    @property
    def inner(self) -> tuple[float, float]:
        """Semi-axes of the thoracic cavity (inside the ribs)."""
        return self.a - self.fat - self.wall, self.b - self.fat - self.wall


# --------------------------------------------------------------------------------------------------
# Public API


def make_ct_phantom(label: str = "covid", seed: int = 0, size: int = DEFAULT_SIZE) -> CtPhantom:
    """One synthetic axial chest CT slice in HU with its ground-truth masks (see the module docstring)."""
    if label not in CT_PHANTOM_LABELS:
        raise ValueError(f"label must be one of {CT_PHANTOM_LABELS}, got {label!r}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    grid = _Grid(size)
    anatomy = np.random.default_rng([seed, _ANATOMY])
    hu, body, lungs, vessels = _draw_anatomy(grid, anatomy)
    infection = np.zeros((size, size), dtype=np.uint8)
    if label == "covid":
        infection = _draw_lesion_masks(grid, np.random.default_rng([seed, _LESIONS]), lungs)
    hu = ndi.gaussian_filter(hu, 0.6 * size / 256)  # partial volume at edges
    hu += np.random.default_rng([seed, _NOISE]).normal(0.0, NOISE_HU, hu.shape)
    hu = _fill_lesions(grid, np.random.default_rng([seed, _LESIONS, 1]), hu, infection, vessels)
    return CtPhantom(
        hu=hu.astype(np.float32),
        body_mask=body,
        lung_mask=lungs,
        infection_mask=infection,
        vessel_mask=vessels & (infection != 2),
        label=label,
        seed=seed,
        pixel_spacing_mm=FIELD_OF_VIEW_MM / size,
    )


def field_of_view_mask(size: int) -> np.ndarray:
    """The scanner's reconstruction circle (inscribed in the square): outside it, DICOM padding."""
    grid = _Grid(size)
    return grid.ellipse(0.5, 0.5, 0.5, 0.5) <= 1.0


def ct_phantom_dicom_bytes(
    phantom: CtPhantom,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    signed: bool = True,
    padding_value: int | None = -2000,
    **attributes,
) -> bytes:
    """The phantom as a CT DICOM file (Part 10, explicit VR little endian).

    Stored values are ``round((hu - intercept) / slope)`` as int16 (``signed``) or uint16, clipped
    to the type's range; pixels
    outside the reconstruction circle hold ``padding_value`` (also written as PixelPaddingValue;
    None: no padding, the HU are stored there too). ``attributes`` set or override DICOM keywords
    (``Modality=None`` deletes the tag).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    dtype = np.dtype("<i2") if signed else np.dtype("<u2")
    info = np.iinfo(dtype)
    stored = np.round((phantom.hu.astype(np.float64) - intercept) / slope)
    # clipped to the data type, as scanners clip (unsigned data with intercept -1024 stops at -1024 HU)
    stored = np.clip(stored, info.min, info.max).astype(dtype)
    if padding_value is not None:
        if not info.min <= padding_value <= info.max:
            raise ValueError(f"padding_value {padding_value} does not fit the stored data type")
        stored[~field_of_view_mask(stored.shape[0])] = padding_value

    uid = generate_uid(entropy_srcs=[f"ct-phantom-{phantom.label}-{phantom.seed}-{stored.shape[0]}"])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid
    # study, series and frame of reference as a scanner writes them (deterministic, so files are reproducible)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
        generate_uid(entropy_srcs=[f"ct-phantom-{phantom.label}-{phantom.seed}-{stored.shape[0]}", part])
        for part in ("study", "series", "frame of reference"))
    ds.PatientName = "Phantom^Synthetic CT"
    ds.PatientID = f"SYNTHETIC-CT-{phantom.seed:04d}"
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.ImageComments = "Synthetic phantom generated by the project: not a patient image."
    ds.BurnedInAnnotation = "NO"
    spacing = phantom.pixel_spacing_mm
    ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    ds.SliceThickness = "1"
    ds.ImageOrientationPatient = [f"{v:g}" for v in AXIAL_ORIENTATION]
    half = spacing * (stored.shape[0] - 1) / 2
    ds.ImagePositionPatient = [f"{-half:.6g}", f"{-half:.6g}", "0"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = f"{LUNG.level:g}", f"{LUNG.width:g}"
    if padding_value is not None:
        ds.add_new(0x00280120, "SS" if signed else "US", int(padding_value))  # PixelPaddingValue
    ds.PixelData = stored.tobytes()
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_ct_demo_cases(folder: str | Path, size: int = 512) -> list[Path]:
    """One CT DICOM and one lung-window PNG per label (seed 0), into ``folder``; returns the paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for label in CT_PHANTOM_LABELS:
        phantom = make_ct_phantom(label, seed=0, size=size)
        dicom_path = folder / f"synthetic-ct-{label}.dcm"
        dicom_path.write_bytes(ct_phantom_dicom_bytes(phantom))
        png_path = folder / f"synthetic-ct-{label}-lung-window.png"
        grey = np.round(apply_window(phantom.hu, LUNG) * 255).astype(np.uint8)
        Image.fromarray(grey).save(png_path)
        written += [dicom_path, png_path]
    return written


# --------------------------------------------------------------------------------------------------
# Anatomy


def _draw_anatomy(grid: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(HU, body mask, lung mask, vessel mask) of a slice at the level of the heart."""
    u = rng.uniform
    body = _Body(cx=0.5 + u(-0.015, 0.015), cy=0.5 + u(-0.015, 0.015), a=u(0.40, 0.44), b=u(0.29, 0.33),
                 fat=u(0.018, 0.032), wall=u(0.022, 0.032))
    hu = np.full((grid.size, grid.size), AIR)
    body_mask = grid.ellipse(body.cx, body.cy, body.a, body.b) <= 1
    hu[body_mask] = FAT
    hu[grid.ellipse(body.cx, body.cy, body.a - body.fat, body.b - body.fat) <= 1] = MUSCLE
    ia, ib = body.inner
    cavity = grid.ellipse(body.cx, body.cy, ia, ib) <= 1
    hu[cavity] = SOFT_TISSUE

    spine_y = body.cy + ib - 0.075  # vertebral body centre, just in front of the back muscles
    heart = dict(cx=body.cx + u(0.03, 0.07), cy=body.cy - u(0.03, 0.07), a=u(0.10, 0.125), b=u(0.08, 0.10),
                 angle=u(-0.5, -0.2))
    mediastinum = (np.abs(grid.X - body.cx) < u(0.045, 0.06)) & (grid.Y < spine_y + 0.02)
    hu[mediastinum & cavity] = MEDIASTINAL_FAT
    heart_inside = grid.ellipse(**heart) <= 1
    hu[grid.ellipse(heart["cx"], heart["cy"], heart["a"] + 0.012, heart["b"] + 0.012, heart["angle"]) <= 1] = MEDIASTINAL_FAT
    hu[heart_inside] = BLOOD
    aorta_desc = grid.ellipse(body.cx + 0.045, spine_y - 0.045, 0.028, 0.028) <= 1
    aorta_asc = grid.ellipse(body.cx - 0.01, heart["cy"] - heart["b"] - 0.01, 0.03, 0.03) <= 1
    hu[aorta_desc | aorta_asc] = BLOOD

    lungs = _lungs(grid, rng, body, heart, spine_y) & cavity
    lungs &= ~(heart_inside | aorta_desc | aorta_asc | mediastinum)
    lungs &= grid.ellipse(body.cx, body.cy, ia - 0.008, ib - 0.008) <= 1  # pleura and intercostal tissue
    lungs = _two_largest_components(lungs)
    gradient = LUNG_ANTERIOR + (LUNG_POSTERIOR - LUNG_ANTERIOR) * np.clip((grid.Y - (body.cy - ib)) / (2 * ib), 0, 1)
    texture = 15.0 * grid.smooth_field(rng)
    hu[lungs] = (gradient + texture)[lungs]
    vessels = _vessels(grid, rng, body, lungs)
    hu[vessels] = BLOOD

    _draw_bones(grid, rng, hu, body, spine_y)
    return hu, body_mask, lungs, vessels


def _lungs(grid: _Grid, rng: np.random.Generator, body: _Body, heart: dict, spine_y: float) -> np.ndarray:
    u = rng.uniform
    ia, ib = body.inner
    masks = []
    for side in (-1, 1):  # image left (patient's right), image right (patient's left)
        cx = body.cx + side * u(0.15, 0.18)
        a = u(0.13, 0.15) if side < 0 else u(0.12, 0.14)  # the right lung is the wider one
        masks.append(grid.ellipse(cx, body.cy + u(-0.01, 0.02), a, ib * u(0.80, 0.9)) <= 1)
    lungs = masks[0] | masks[1]
    spine_zone = grid.ellipse(body.cx, spine_y + 0.02, 0.09, 0.085) <= 1
    return lungs & ~spine_zone


def _two_largest_components(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count <= 2:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[-2:] + 1
    return np.isin(labels, keep)


def _vessels(grid: _Grid, rng: np.random.Generator, body: _Body, lungs: np.ndarray) -> np.ndarray:
    """Vessel cross-sections and short in-plane segments, thicker and denser towards each hilum."""
    vessels = np.zeros_like(lungs)
    for side in (-1, 1):
        hilum_x, hilum_y = body.cx + side * 0.09, body.cy - 0.01
        for _ in range(22):
            angle = rng.uniform(-np.pi, np.pi)
            distance = 0.3 * rng.uniform(0.05, 1.0) ** 0.8
            x, y = hilum_x + side * abs(np.cos(angle)) * distance, hilum_y + np.sin(angle) * distance * 0.9
            radius = max(0.0035, 0.011 * (1.0 - distance / 0.33))
            length = radius * rng.uniform(1.0, 3.5)  # elongated when the vessel runs in the slice plane
            direction = np.arctan2(y - hilum_y, x - hilum_x)
            vessels |= grid.small_ellipse(x, y, length, radius, direction)
    return vessels & lungs


def _draw_bones(grid: _Grid, rng: np.random.Generator, hu: np.ndarray, body: _Body, spine_y: float) -> None:
    """Ribs around the cavity, the sternum in front, a vertebra behind: marrow inside a bright cortex."""

    def bone(cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> None:
        hu[grid.small_ellipse(cx, cy, a, b, angle)] = CORTEX
        hu[grid.small_ellipse(cx, cy, a * 0.6, b * 0.6, angle)] = MARROW

    ia, ib = body.inner
    ra, rb = ia + body.wall * 0.35, ib + body.wall * 0.35  # ribs sit in the body wall
    for t in np.linspace(0.0, 2 * np.pi, 16, endpoint=False) + rng.uniform(-0.1, 0.1):
        x, y = np.cos(t), np.sin(t)  # y > 0: posterior
        if y < -0.9 or y > 0.92:  # no rib at the sternum or the spine
            continue
        bone(body.cx + ra * x, body.cy + rb * y, 0.022, 0.010, np.arctan2(rb * x, -ra * y))
    bone(body.cx, body.cy - ib - 0.004, 0.03, 0.011)  # sternum
    bone(body.cx, spine_y, 0.045, 0.04)  # vertebral body
    arch = grid.ellipse(body.cx, spine_y + 0.065, 0.038, 0.034) <= 1
    hu[arch] = CORTEX  # posterior arch ...
    hu[grid.ellipse(body.cx, spine_y + 0.062, 0.018, 0.018) <= 1] = CSF  # ... around the spinal canal
    bone(body.cx, spine_y + 0.09, 0.012, 0.018)  # spinous process, inside the back muscles


# --------------------------------------------------------------------------------------------------
# Lesions


def _draw_lesion_masks(grid: _Grid, rng: np.random.Generator, lungs: np.ndarray) -> np.ndarray:
    """0/1/2 mask: bilateral, peripheral, posterior ground-glass patches; consolidations inside or beside them."""
    infection = np.zeros(lungs.shape, dtype=np.uint8)
    depth = ndi.distance_transform_edt(lungs) / grid.size  # canonical distance to the lung edge
    labels, _ = ndi.label(lungs)
    patches = []
    n_ggo = int(rng.integers(2, 5))
    for k in range(n_ggo):
        lung = 1 + k % 2  # alternate the lungs: bilateral
        candidates = np.flatnonzero((labels.ravel() == lung) & (depth.ravel() > 0) & (depth.ravel() < 0.035))
        if candidates.size == 0:
            continue
        weights = grid.Y.ravel()[candidates] ** 3  # posterior (dependent) predominance
        centre = int(rng.choice(candidates, p=weights / weights.sum()))
        row, col = divmod(centre, grid.size)
        x0, y0, radius = grid.X[row, col], grid.Y[row, col], rng.uniform(0.05, 0.09)
        infection[_blob(grid, rng, x0, y0, radius) & lungs] = 1
        patches.append((x0, y0, radius))
    n_consolidation = int(rng.integers(1, 3))
    for x0, y0, radius in patches[:n_consolidation]:  # in the dependent (posterior) part of the patch
        infection[_blob(grid, rng, x0, y0 + 0.3 * radius, radius * rng.uniform(0.35, 0.5)) & lungs] = 2
    return infection


def _blob(grid: _Grid, rng: np.random.Generator, x0: float, y0: float, radius: float) -> np.ndarray:
    """An irregular patch: a disc whose edge is pushed in and out by a smooth random field."""
    return grid.ellipse(x0, y0, radius, radius) + 0.45 * grid.smooth_field(rng) < 1


def _fill_lesions(grid: _Grid, rng: np.random.Generator, hu: np.ndarray, infection: np.ndarray,
                  vessels: np.ndarray) -> np.ndarray:
    """Lesion values over the noisy slice: ground glass keeps its vessels, consolidation hides them."""
    if not infection.any():
        return hu
    ggo = (infection == 1) & ~vessels
    level = rng.uniform(-640, -570)
    mottled = level + 40.0 * grid.smooth_field(rng) + (hu - ndi.gaussian_filter(hu, 1.0))  # keep the noise
    hu = hu.copy()
    hu[ggo] = np.clip(mottled, *GGO_RANGE)[ggo]
    consolidation = infection == 2
    solid = rng.uniform(-40, 15) + 15.0 * grid.smooth_field(rng) + (hu - ndi.gaussian_filter(hu, 1.0))
    hu[consolidation] = np.clip(solid, *CONSOLIDATION_RANGE)[consolidation]
    return hu
