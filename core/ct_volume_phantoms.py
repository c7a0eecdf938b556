"""Synthetic chest CT volumes in Hounsfield units: demo cases and test fixtures, never patient images.

``make_ct_volume(label, seed, shape, spacing_mm, infection_ratio)`` draws a whole chest, from the
upper abdomen to above the lung apices, from its arguments alone (numpy and scipy; no data, no
network). Same arguments give the same values, bit for bit. The anatomy of a seed does not depend
on the label nor on the infection ratio (independent random streams): a ``"covid"`` and a ``"cap"``
volume of one seed differ only by their lesions.

Frame: the project's canonical one, ``[z, y, x]`` with z inferior -> superior, y anterior ->
posterior, x patient's right -> left (LPS+ voxel axes). An axial slice ``hu[k]`` shown with row 0
at the top is a radiological CT slice (anterior at the top, the patient's right on the image's
left), as in ``core.ct_phantoms``. The scene fills the field of view whatever the shape: positions
are fractions of the field (x, y) and of the scanned length (z); ``spacing_mm`` sets the voxel size
(the default, 96 x 192 x 192 at 2.5 x 1.8 x 1.8 mm, is an adult chest of 346 mm by 240 mm). Tubes
(vessels, airways) and lesion sizes are drawn in millimetres.

Anatomy (values of ``core.ct_phantoms``, before noise): body wall (fat, muscle), ribs running
round the wall and down towards the front, sternum, vertebrae with their discs, arch and canal;
mediastinal fat, the heart on the diaphragm, ascending and descending aorta with the arch, the
pulmonary trunk and the superior vena cava; liver under the right hemidiaphragm (higher than the
left), spleen and stomach under the left. Two lungs (about -860 HU, a little denser posteriorly)
that taper to the apices and stop on the diaphragm domes, deepest in the posterior recesses; the
trachea, the carina and both main bronchi (outside the lung mask), bronchial trees inside the
lungs (air with a thin wall), and vessel trees from each hilum, as 3D tubes thinning outwards.
Then a slight blur (partial volume) and Gaussian noise (12 HU).

Lesions (``CT_VOLUME_LABELS``), a caricature for tests and demos, not a model of the disease:

* ``"covid"``: bilateral, peripheral (subpleural), posterior and mostly lower-zone, multifocal
  ground glass (-700 to -500 HU, fainter at its edges, vessels still visible), with or without
  consolidation (-100 to +50 HU, hiding the vessels) in its dependent cores;
* ``"cap"``: community-acquired pneumonia, unilateral, filling a segment or, when larger, a lobe
  from a subpleural seed: consolidation with air bronchograms (its bronchi stay air), sometimes a
  rim of ground glass.

``infection_ratio`` (infected voxels / lung voxels) is met exactly up to a voxel: lesions are the
lung voxels where a lesion field is highest. ``None`` draws it from label-dependent distributions
that overlap (``ratio_distribution``): COVID-19 mostly large (> 0.03) with some small (< 0.005),
CAP mostly small (< 0.005) with some large. Every volume holds at least one lesion voxel.

Ground truth: ``lung_mask`` (both lungs, their vessels, bronchi and lesions included; trachea and
main bronchi excluded) and ``infection_mask`` (0 background, 1 ground glass, 2 consolidation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .ct_phantoms import (
    AIR,
    BLOOD,
    CONSOLIDATION_RANGE,
    CORTEX,
    CSF,
    FAT,
    GGO_RANGE,
    LUNG_ANTERIOR,
    LUNG_POSTERIOR,
    MARROW,
    MEDIASTINAL_FAT,
    MUSCLE,
    NOISE_HU,
    SOFT_TISSUE,
)

CT_VOLUME_LABELS = ("covid", "cap")
DEFAULT_SHAPE = (96, 192, 192)
DEFAULT_SPACING_MM = (2.5, 1.8, 1.8)
MIN_SHAPE = (16, 48, 48)
MAX_INFECTION_RATIO = 0.6
LIVER = 55.0
SPLEEN = 45.0
DISC = 80.0
AIRWAY_LUMEN = -990.0

# label -> ((probability, low, high), ...): a target ratio log-uniform in [low, high] of one band. About 40% of
# COVID-19 below 0.030 and 60% of CAP at or below 0.001, so that both minority groups of the size-balanced
# sampler get the weight of about 1.5 the paper reports (Sec. III-C).
RATIO_DISTRIBUTIONS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "covid": ((0.15, 0.0005, 0.005), (0.25, 0.005, 0.03), (0.60, 0.03, 0.35)),
    "cap": ((0.60, 0.0002, 0.001), (0.25, 0.001, 0.03), (0.15, 0.03, 0.2)),
}

_ANATOMY, _LESIONS, _NOISE, _RATIO = 0, 1, 2, 3  # independent random streams
_LESION_STEP = 2  # lesion fields are drawn on every 2nd voxel, then interpolated


@dataclass(eq=False)
class CtVolumePhantom:
    hu: np.ndarray  # float32 [z, y, x], Hounsfield units
    lung_mask: np.ndarray  # bool, both lungs (vessels, bronchi and lesions included)
    infection_mask: np.ndarray  # uint8: 0 background, 1 ground-glass opacity, 2 consolidation
    spacing_mm: tuple[float, float, float]  # (dz, dy, dx)
    label: str
    seed: int
    vessel_mask: np.ndarray  # bool, lung vessels still visible (not under a consolidation)
    airway_mask: np.ndarray  # bool, air inside the airways (trachea and bronchi)

    @property
    def infection_ratio(self) -> float:
        """Infected voxels / lung voxels."""
        return float(np.count_nonzero(self.infection_mask) / max(np.count_nonzero(self.lung_mask), 1))

    @property
    def ggo_mask(self) -> np.ndarray:
        return self.infection_mask == 1

    @property
    def consolidation_mask(self) -> np.ndarray:
        return self.infection_mask == 2

    def to_volume(self):
        """The phantom as a loaded volume would be: canonical HU, flagged synthetic."""
        from .io.volume import volume_from_canonical

        return volume_from_canonical(self.hu, self.spacing_mm, file_format="synthetic", synthetic=True)


# --------------------------------------------------------------------------------------------------
# Public API


def make_ct_volume(
    label: str = "covid",
    seed: int = 0,
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing_mm: tuple[float, float, float] = DEFAULT_SPACING_MM,
    infection_ratio: float | None = None,
) -> CtVolumePhantom:
    """One synthetic chest CT volume in HU with its ground-truth masks (see the module docstring)."""
    if label not in CT_VOLUME_LABELS:
        raise ValueError(f"label must be one of {CT_VOLUME_LABELS}, got {label!r}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or any(n < m for n, m in zip(shape, MIN_SHAPE)):
        raise ValueError(f"shape must be 3 sizes of at least {MIN_SHAPE}, got {shape}")
    spacing_mm = tuple(float(s) for s in spacing_mm)
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"spacing_mm must be 3 positive sizes, got {spacing_mm}")
    if infection_ratio is None:
        infection_ratio = draw_infection_ratio(label, seed)
    elif not 0.0 < infection_ratio <= MAX_INFECTION_RATIO:
        raise ValueError(f"infection_ratio must be in (0, {MAX_INFECTION_RATIO}], got {infection_ratio}")

    scene = _Scene(shape, spacing_mm)
    anatomy = _draw_anatomy(scene, np.random.default_rng([seed, _ANATOMY]))
    lesion_rng = np.random.default_rng([seed, _LESIONS, CT_VOLUME_LABELS.index(label)])
    draw = _covid_field if label == "covid" else _cap_field
    field, consolidation_score = (scene.at_voxels(f, anatomy.lung_index, _LESION_STEP)
                                  for f in draw(scene, lesion_rng, anatomy))
    lesions = _lesions_from_field(field, consolidation_score, infection_ratio, label, lesion_rng)
    hu = _fill_lesions(anatomy, lesions, field, lesion_rng)
    infection = np.zeros(shape, dtype=np.uint8)
    infection[anatomy.lung_index] = lesions
    hu = ndi.gaussian_filter(hu, sigma=(0.3, 0.45, 0.45), truncate=3.0)  # partial volume at the edges
    hu += np.random.default_rng([seed, _NOISE]).standard_normal(shape, dtype=np.float32) * np.float32(NOISE_HU)
    return CtVolumePhantom(
        hu=hu,
        lung_mask=anatomy.lungs,
        infection_mask=infection,
        spacing_mm=spacing_mm,
        label=label,
        seed=seed,
        vessel_mask=anatomy.vessels & (infection != 2),
        airway_mask=anatomy.airway_lumen,
    )


def draw_infection_ratio(label: str, seed: int) -> float:
    """The target infection ratio of ``(label, seed)`` when none is asked for (``RATIO_DISTRIBUTIONS``)."""
    rng = np.random.default_rng([seed, _RATIO, CT_VOLUME_LABELS.index(label)])
    bands = RATIO_DISTRIBUTIONS[label]
    probabilities = np.array([p for p, _, _ in bands])
    _, low, high = bands[int(rng.choice(len(bands), p=probabilities / probabilities.sum()))]
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


DEMO_CASES = (  # (file stem, label, seed, infection ratio)
    ("synthetic-ct-volume-covid-large", "covid", 0, 0.12),
    ("synthetic-ct-volume-covid-small", "covid", 1, 0.003),
    ("synthetic-ct-volume-cap", "cap", 2, 0.004),
)
DEMO_SHAPE = (80, 160, 160)
DEMO_SPACING_MM = (3.0, 2.16, 2.16)  # the default field of view (240 x 346 x 346 mm) on fewer voxels


def write_ct_volume_demo_cases(folder: str | Path) -> list[Path]:
    """A few demo volumes as gzipped NIfTI (int16 HU) and a README line; returns the paths."""
    from .io.nifti import nifti_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, label, seed, ratio in DEMO_CASES:
        phantom = make_ct_volume(label, seed, shape=DEMO_SHAPE, spacing_mm=DEMO_SPACING_MM, infection_ratio=ratio)
        path = folder / f"{stem}.nii.gz"
        path.write_bytes(nifti_bytes(phantom.hu, phantom.spacing_mm, compress=True))
        written.append(path)
    readme = folder / "README-synthetic-ct-volumes.txt"
    readme.write_text(
        "synthetic-ct-volume-*.nii.gz: synthetic chest CT volumes generated by the project "
        "(core/ct_volume_phantoms.py, make_ct_volume); not patient images. "
        + "; ".join(f"{stem}: {label}, seed {seed}, infection ratio {ratio}" for stem, label, seed, ratio in DEMO_CASES)
        + "\n"
    )
    written.append(readme)
    return written


# --------------------------------------------------------------------------------------------------
# Geometry


class _Scene:
    """Coordinates of the voxels: X, Y (2-D, fractions of the field) and T (1-D, fraction of the length)."""

    def __init__(self, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]):
        self.shape = shape
        self.spacing = np.array(spacing_mm, dtype=np.float64)
        self.extent = self.spacing * np.array(shape)  # mm along z, y, x
        nz, ny, nx = shape
        x = ((np.arange(nx) + 0.5) / nx).astype(np.float32)
        y = ((np.arange(ny) + 0.5) / ny).astype(np.float32)
        self.T = ((np.arange(nz) + 0.5) / nz).astype(np.float32)
        self.X, self.Y = np.meshgrid(x, y)

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
        """2-D ((x'/a)^2 + (y'/b)^2): <= 1 inside an ellipse centred on (cx, cy), rotated by ``angle``."""
        dx, dy = self.X - np.float32(cx), self.Y - np.float32(cy)
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        u, v = dx * c + dy * s, -dx * s + dy * c
        return (u / np.float32(a)) ** 2 + (v / np.float32(b)) ** 2

    def slices(self, low: float, high: float) -> slice:
        """The axial slices whose centre lies in [low, high] (fractions of the length)."""
        return slice(int(np.searchsorted(self.T, low)), int(np.searchsorted(self.T, high, side="right")))

    def mm(self, t: float, y: float, x: float) -> np.ndarray:
        """A scene point (fractions) in millimetres (z, y, x) from the volume's corner."""
        return np.array([t, y, x]) * self.extent

    def smooth_field(self, rng: np.random.Generator, shape: tuple[int, int, int] | None = None) -> np.ndarray:
        """A smooth random field in about [-1, 1] spanning the volume (12 x 24 x 24 values, or resized to ``shape``):
        its blobs are the same whatever the shape."""
        coarse = ndi.gaussian_filter(rng.standard_normal((12, 24, 24)), 2.0, mode="wrap")
        coarse = (coarse / max(float(np.abs(coarse).max()), 1e-9)).astype(np.float32)
        if shape is None:
            return coarse
        return ndi.zoom(coarse, [n / m for n, m in zip(shape, coarse.shape)], order=1, mode="nearest",
                        grid_mode=True, output=np.float32)

    def at_voxels(self, field: np.ndarray, index: tuple[np.ndarray, ...], step: int | None = None) -> np.ndarray:
        """A coarse field linearly interpolated at the voxels ``index``: the field's grid is every ``step``-th
        voxel of the volume, or (``step`` None) spans the volume as pixels do. Cheaper than resizing it."""
        if step:
            coordinates = [i / step for i in index]
        else:
            coordinates = [(i + 0.5) * (m / n) - 0.5 for i, m, n in zip(index, field.shape, self.shape)]
        return ndi.map_coordinates(field, np.array(coordinates, dtype=np.float32), order=1, mode="nearest")


def _draw_tubes(scene: _Scene, segments: list[tuple], field: np.ndarray) -> None:
    """Tapered tubes into ``field`` (in place): min over tubes of (distance to the axis - radius) / scale.

    ``segments``: (start mm, end mm, start radius mm, end radius mm, scale mm); each tube is
    computed in its own bounding box only.
    """
    nz, ny, nx = scene.shape
    dz, dy, dx = scene.spacing
    for p0, p1, r0, r1, scale in segments:
        reach = max(r0, r1) + 2.0 * scale
        low = (np.minimum(p0, p1) - reach) / scene.spacing - 0.5
        high = (np.maximum(p0, p1) + reach) / scene.spacing + 0.5
        k0, j0, i0 = np.maximum(np.floor(low).astype(int), 0)
        k1, j1, i1 = np.minimum(np.ceil(high).astype(int) + 1, (nz, ny, nx))
        if k0 >= k1 or j0 >= j1 or i0 >= i1:
            continue
        z = ((np.arange(k0, k1) + 0.5) * dz - p0[0]).astype(np.float32)[:, None, None]
        y = ((np.arange(j0, j1) + 0.5) * dy - p0[1]).astype(np.float32)[None, :, None]
        x = ((np.arange(i0, i1) + 0.5) * dx - p0[2]).astype(np.float32)[None, None, :]
        v = (p1 - p0).astype(np.float32)
        along = np.clip((z * v[0] + y * v[1] + x * v[2]) / max(float(v @ v), 1e-9), 0.0, 1.0)
        distance = np.sqrt((z - along * v[0]) ** 2 + (y - along * v[1]) ** 2 + (x - along * v[2]) ** 2)
        value = (distance - (r0 + (r1 - r0) * along)) / np.float32(scale)
        box = field[k0:k1, j0:j1, i0:i1]
        np.minimum(box, value, out=box)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(math.sqrt(float(v @ v)), 1e-9)


def _tree(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float, radius: float,
          depth: int, *, spread: float = 0.5, shrink: float = 0.8, taper: float = 0.79) -> list[tuple]:
    """Segments (start, end, r0, r1) of a binary branching tree; children thinner and shorter."""
    end = start + _unit(direction) * length
    segments = [(start, end, radius, radius * taper)]
    if depth == 0:
        return segments
    for sign in (-1.0, 1.0):
        jitter = rng.normal(0.0, 1.0, 3)
        jitter -= (jitter @ _unit(direction)) * _unit(direction)  # a turn away from the parent's axis
        child = _unit(direction) + _unit(jitter) * sign * spread * rng.uniform(0.6, 1.4)
        segments += _tree(rng, end, child, length * shrink * rng.uniform(0.85, 1.15), radius * taper, depth - 1,
                          spread=spread, shrink=shrink, taper=taper)
    return segments


# --------------------------------------------------------------------------------------------------
# Anatomy


@dataclass
class _Body:
    cx: float
    cy: float
    a: float
    b: float
    fat: float
    wall: float

    @property
    def inner(self) -> tuple[float, float]:
        """Semi-axes of the thoracic cavity (inside the ribs)."""
        return self.a - self.fat - self.wall, self.b - self.fat - self.wall


@dataclass
class _Anatomy:
    hu: np.ndarray  # float32, no lesion, no blur, no noise
    lungs: np.ndarray  # bool
    right: np.ndarray  # bool 2-D: the patient's right half (small x)
    lung_index: tuple[np.ndarray, ...]  # np.nonzero(lungs): lesions are computed at these voxels only
    vessels: np.ndarray  # bool, inside the lungs
    airway_lumen: np.ndarray  # bool
    airway_wall: np.ndarray  # bool
    depth_mm: np.ndarray  # float32 on the lesion grid: distance to the lung edge
    lung_fraction_y: np.ndarray  # 2-D, 0 at the front of the lungs, 1 at their back
    lung_radial: np.ndarray  # 2-D, 0 at the centre of each lung's axial ellipse, 1 on its edge
    fissures: dict  # lobe geometry (see _lobes)


def _draw_anatomy(scene: _Scene, rng: np.random.Generator) -> _Anatomy:
    u = rng.uniform
    body = _Body(cx=0.5 + u(-0.015, 0.015), cy=0.5 + u(-0.015, 0.015), a=u(0.40, 0.44), b=u(0.29, 0.33),
                 fat=u(0.018, 0.032), wall=u(0.022, 0.032))
    ia, ib = body.inner
    cavity = scene.ellipse(body.cx, body.cy, ia, ib) <= 1
    spine_y = body.cy + ib - 0.075
    half_width = u(0.045, 0.06)  # of the mediastinum
    mediastinum = (np.abs(scene.X - body.cx) < half_width) & (scene.Y < spine_y + 0.02) & cavity

    axial = np.full(scene.X.shape, AIR, dtype=np.float32)  # what every slice has
    axial[scene.ellipse(body.cx, body.cy, body.a, body.b) <= 1] = FAT
    axial[scene.ellipse(body.cx, body.cy, body.a - body.fat, body.b - body.fat) <= 1] = MUSCLE
    axial[cavity] = SOFT_TISSUE
    axial[mediastinum] = MEDIASTINAL_FAT
    hu = np.broadcast_to(axial, scene.shape).copy()

    heart = _draw_heart_and_great_vessels(scene, rng, hu, body, spine_y)
    lung_geometry = _lung_geometry(scene, rng, body)
    _draw_abdomen(scene, hu, body, cavity, lung_geometry)
    lungs = _lungs(scene, body, cavity, mediastinum, spine_y, heart, lung_geometry)

    back, front = lung_geometry["back"], lung_geometry["front"]
    fraction_y = np.clip((scene.Y - front) / (back - front), 0.0, 1.0)
    index = np.nonzero(lungs)
    texture = scene.at_voxels(scene.smooth_field(rng), index)
    hu[index] = LUNG_ANTERIOR + (LUNG_POSTERIOR - LUNG_ANTERIOR) * fraction_y[index[1:]] + 15.0 * texture

    hila = {side: scene.mm(lung_geometry["hilum_t"], body.cy - 0.01, body.cx + side * 0.09) for side in (-1, 1)}
    vessels = _vessel_trees(scene, rng, hila) & lungs
    hu[vessels] = BLOOD
    lumen, wall, central = _airways(scene, rng, body, spine_y, lung_geometry, hila)
    hu[wall] = SOFT_TISSUE
    hu[lumen] = AIRWAY_LUMEN
    lungs &= ~central  # the trachea and main bronchi are not lung
    lungs = _two_largest_components(lungs)
    vessels &= lungs & ~wall & ~lumen

    _draw_bones(scene, rng, hu, body, spine_y)
    coarse = lungs[::_LESION_STEP, ::_LESION_STEP, ::_LESION_STEP]
    depth = ndi.distance_transform_edt(coarse, sampling=scene.spacing * _LESION_STEP).astype(np.float32)
    return _Anatomy(hu=hu, lungs=lungs, lung_index=np.nonzero(lungs), right=scene.X < body.cx, vessels=vessels, airway_lumen=lumen,
                    airway_wall=wall, depth_mm=depth, lung_fraction_y=fraction_y,
                    lung_radial=lung_geometry["radial"],
                    fissures=lung_geometry["fissures"])


def _draw_heart_and_great_vessels(scene: _Scene, rng: np.random.Generator, hu: np.ndarray, body: _Body,
                                  spine_y: float) -> np.ndarray:
    """Heart (an ellipsoid on the diaphragm, to the patient's left) and the great vessels; returns the heart and vessels."""
    u = rng.uniform
    cx, cy, a, b, angle = body.cx + u(0.03, 0.07), body.cy - u(0.03, 0.07), u(0.10, 0.125), u(0.08, 0.10), u(-0.5, -0.2)
    centre_t, half_t = u(0.30, 0.34), u(0.13, 0.16)
    blood = np.zeros(scene.shape, dtype=bool)
    zone = scene.slices(centre_t - half_t - 0.05, centre_t + half_t + 0.05)
    height = ((scene.T[zone] - centre_t) / half_t)[:, None, None] ** 2
    fat = scene.ellipse(cx, cy, a + 0.012, b + 0.012, angle)[None] + height <= 1
    inside = scene.ellipse(cx, cy, a, b, angle)[None] + height <= 1
    hu[zone][fat] = MEDIASTINAL_FAT
    blood[zone] |= inside

    arch_t = u(0.66, 0.70)
    top_of_heart = centre_t + 0.5 * half_t
    ascending = (body.cx - 0.01, cy - b - 0.01, 0.03)
    descending = (body.cx + 0.045, spine_y - 0.045, 0.028)
    tubes = [  # (x, y, radius, from t, to t): vertical vessels
        (*ascending, top_of_heart, arch_t),
        (*descending, 0.0, arch_t),
        (body.cx + 0.035, cy - b + 0.005, 0.027, top_of_heart, u(0.52, 0.56)),  # pulmonary trunk
        (body.cx - 0.06, cy - b + 0.01, 0.018, top_of_heart, 1.0),  # superior vena cava
    ]
    for x, y, radius, low, high in tubes:
        blood[scene.slices(low, high)] |= scene.ellipse(x, y, radius, radius) <= 1
    # the arch: from the ascending to the descending aorta, over the trachea, in a slab
    (x0, y0, _), (x1, y1, r1) = ascending, descending
    along = np.clip(((scene.X - x0) * (x1 - x0) + (scene.Y - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
    arch = (scene.X - x0 - along * (x1 - x0)) ** 2 + (scene.Y - y0 - along * (y1 - y0)) ** 2 <= r1 ** 2
    blood[scene.slices(arch_t - 0.025, arch_t + 0.025)] |= arch
    hu[blood] = BLOOD
    return blood


def _lung_geometry(scene: _Scene, rng: np.random.Generator, body: _Body) -> dict:
    """Where each lung is: its axial ellipse, how it tapers to the apex, the diaphragm domes, the fissures."""
    u = rng.uniform
    ib = body.inner[1]
    ellipses, domes, radial = {}, {}, {}
    apex_t, widest_t = u(0.90, 0.95), u(0.38, 0.44)
    right_dome = u(0.30, 0.34)
    for side in (-1, 1):  # the patient's right (image left), the patient's left
        cx = body.cx + side * u(0.15, 0.18)
        a = u(0.13, 0.15) if side < 0 else u(0.12, 0.14)  # the right lung is the wider one
        cy, b = body.cy + u(-0.01, 0.02), ib * u(0.80, 0.9)
        ellipses[side] = (cx, cy, a, b)
        peak = right_dome if side < 0 else right_dome - u(0.02, 0.05)  # the liver lifts the right dome
        radial[side] = np.sqrt(scene.ellipse(cx, cy, a, b))
        posterior = np.clip((scene.Y - cy) / b, -1.0, 1.0)
        domes[side] = peak - u(0.13, 0.16) * np.minimum(radial[side] ** 2, 1.3) - 0.04 * posterior  # deepest behind
    right = scene.X < body.cx
    front = min(e[1] - e[3] for e in ellipses.values())
    back = max(e[1] + e[3] for e in ellipses.values())
    fissures = {  # oblique fissure: high at the back, low at the front; horizontal fissure on the right
        "oblique_back": u(0.62, 0.70), "oblique_front": u(0.20, 0.28), "horizontal": u(0.46, 0.52),
    }
    return {
        "ellipses": ellipses, "apex_t": apex_t, "widest_t": widest_t,
        "dome": np.where(right, domes[-1], domes[1]).astype(np.float32),
        "radial": np.where(right, radial[-1], radial[1]).astype(np.float32),
        "front": front, "back": back, "hilum_t": u(0.50, 0.54), "fissures": fissures,
    }


def _lung_profile(scene: _Scene, geometry: dict) -> np.ndarray:
    """Squared scale of each slice's lung section: 1 from the bases to the widest level, an ellipsoid's up to the apex."""
    above = np.clip((scene.T - geometry["widest_t"]) / (geometry["apex_t"] - geometry["widest_t"]), 0.0, None)
    return np.clip(1.0 - above ** 2, 0.0, None).astype(np.float32)


def _lungs(scene: _Scene, body: _Body, cavity: np.ndarray, mediastinum: np.ndarray, spine_y: float,
           heart: np.ndarray, geometry: dict) -> np.ndarray:
    ia, ib = body.inner
    profile = _lung_profile(scene, geometry)[:, None, None]
    lungs = np.zeros(scene.shape, dtype=bool)
    for side, (cx, cy, a, b) in geometry["ellipses"].items():
        half = (scene.X < body.cx) if side < 0 else (scene.X >= body.cx)
        lungs |= (scene.ellipse(cx, cy, a, b) * half + (~half) * 9.0)[None] <= profile
    lungs &= scene.T[:, None, None] > geometry["dome"][None]
    allowed = cavity & ~mediastinum & (scene.ellipse(body.cx, body.cy, ia - 0.008, ib - 0.008) <= 1)
    allowed &= scene.ellipse(body.cx, spine_y + 0.02, 0.09, 0.085) > 1  # the spine and its muscles
    lungs &= allowed[None]
    lungs &= ~heart
    return lungs


def _draw_abdomen(scene: _Scene, hu: np.ndarray, body: _Body, cavity: np.ndarray, geometry: dict) -> None:
    """Under the diaphragm: liver on the patient's right, spleen and stomach on the left."""
    below = scene.T[:, None, None] < geometry["dome"][None] + 0.01
    organ = np.where(scene.X < body.cx + 0.03, LIVER, SPLEEN).astype(np.float32)
    np.copyto(hu, np.broadcast_to(organ, scene.shape), where=below & cavity[None])


def _vessel_trees(scene: _Scene, rng: np.random.Generator, hila: dict) -> np.ndarray:
    """Pulmonary vessels: from each hilum, trunks to the upper, middle and lower zones, branching outwards."""
    segments = []
    for side, hilum in hila.items():
        lateral = float(side)  # x grows to the patient's left
        trunks = [  # (z, y, x) directions in mm, length mm, radius mm
            (np.array([1.0, 0.1, 0.35 * lateral]), 40.0, 5.5),  # upper lobe, apical
            (np.array([0.7, -0.6, 0.5 * lateral]), 35.0, 4.5),  # upper lobe, anterior
            (np.array([0.6, 0.7, 0.4 * lateral]), 35.0, 4.5),  # upper lobe, posterior
            (np.array([0.1, -0.5, lateral]), 30.0, 5.0),  # middle lobe / lingula
            (np.array([-1.0, 0.5, 0.35 * lateral]), 35.0, 6.0),  # lower lobe, posterior
            (np.array([-0.8, -0.3, 0.6 * lateral]), 30.0, 5.0),  # lower lobe, anterior and lateral
            (np.array([-0.3, 1.0, 0.3 * lateral]), 30.0, 4.5),  # lower lobe, superior segment
        ]
        for direction, length, radius in trunks:
            jitter = rng.normal(0.0, 0.15, 3)
            tree = _tree(rng, hilum, direction + jitter, length * rng.uniform(0.9, 1.1), radius, depth=6,
                         spread=0.6)
            segments += [(p0, p1, r0, r1, 1.0) for p0, p1, r0, r1 in tree]
    field = np.full(scene.shape, np.inf, dtype=np.float32)
    _draw_tubes(scene, segments, field)
    return field < 0


def _airways(scene: _Scene, rng: np.random.Generator, body: _Body, spine_y: float, geometry: dict,
             hila: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lumen, wall, trachea and main bronchi): the trachea down to the carina, bronchi to the hila and inside the lungs."""
    carina_t = geometry["hilum_t"] + rng.uniform(0.05, 0.08)
    trachea_y = spine_y - 0.1
    top = scene.mm(1.0, trachea_y, body.cx)
    carina = scene.mm(carina_t, trachea_y + 0.01, body.cx)
    central = [(top, carina, 8.0, 8.0, 1.5)]
    lobar = []
    for side, hilum in hila.items():
        main_end = hilum + np.array([0.0, -6.0, 0.0])  # just in front of the hilar vessels
        central.append((carina, main_end, 6.0 if side < 0 else 5.5, 5.0, 1.5))
        lateral = float(side)
        lobar_directions = ([1.0, 0.2, 0.4 * lateral], [0.0, -0.6, lateral], [-1.0, 0.6, 0.3 * lateral],
                            [-0.8, -0.2, 0.6 * lateral], [-0.3, 1.0, 0.3 * lateral])
        for direction in lobar_directions:
            tree = _tree(rng, main_end, np.array(direction) + rng.normal(0.0, 0.1, 3), 25.0, 4.0, depth=4,
                         spread=0.5, shrink=0.85, taper=0.8)
            lobar += [(p0, p1, r0, r1, max(0.3 * r0, 0.9)) for p0, p1, r0, r1 in tree]
    field = np.full(scene.shape, np.inf, dtype=np.float32)
    _draw_tubes(scene, central, field)
    trachea_and_main = field < 1.0
    _draw_tubes(scene, lobar, field)
    return field < 0, (field >= 0) & (field < 1.0), trachea_and_main


def _two_largest_components(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count <= 2:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.argsort(sizes)[-2:] + 1] = True
    return keep[labels]


def _draw_bones(scene: _Scene, rng: np.random.Generator, hu: np.ndarray, body: _Body, spine_y: float) -> None:
    """Ribs (bands round the wall, lower at the front), sternum, vertebrae with discs, arch, canal."""
    ia, ib = body.inner
    ra, rb = ia + body.wall * 0.35, ib + body.wall * 0.35  # the ribs' mid-line, in the body wall
    radial = np.sqrt(scene.ellipse(body.cx, body.cy, ra, rb))
    angle = np.arctan2((scene.Y - body.cy) / rb, (scene.X - body.cx) / ra)  # sin > 0: posterior
    ring = (np.abs(radial - 1.0) < 0.012 / min(ra, rb)) & (np.sin(angle) > -0.9) & (np.sin(angle) < 0.92)
    rows, cols = np.nonzero(ring)
    core = np.abs(radial[rows, cols] - 1.0) < 0.006 / min(ra, rb)
    period = rng.uniform(0.062, 0.07)  # twelve ribs over the chest
    drop = 1.2 * period * (1.0 - np.sin(angle[rows, cols])) / 2.0  # ribs slope down towards the front
    phase = (scene.T[:, None] + drop[None] - rng.uniform(0.0, period)) / period
    half = 5.0 / scene.extent[0] / period  # 10 mm high
    distance = np.abs(phase - np.round(phase))
    in_chest = (scene.T[:, None] + drop[None] > 0.15) & (scene.T[:, None] + drop[None] < 0.97)
    ribs = (distance < half) & in_chest
    marrow = (distance < 0.6 * half) & in_chest & core[None]
    section = hu[:, rows, cols]
    section[ribs] = CORTEX
    section[marrow] = MARROW
    hu[:, rows, cols] = section

    def bone(cx: float, cy: float, a: float, b: float, zone: slice = slice(None)) -> None:
        hu[zone][:, scene.ellipse(cx, cy, a, b) <= 1] = CORTEX
        hu[zone][:, scene.ellipse(cx, cy, a * 0.6, b * 0.6) <= 1] = MARROW

    bone(body.cx, body.cy - ib - 0.004, 0.03, 0.011, scene.slices(0.30, 0.85))  # sternum
    bone(body.cx, spine_y, 0.045, 0.04)  # vertebral bodies ...
    level = (scene.T - rng.uniform(0.0, 1.0)) / rng.uniform(0.09, 0.11)
    discs = np.abs(level - np.round(level)) < 0.12  # ... between their discs
    hu[discs] = np.where(scene.ellipse(body.cx, spine_y, 0.045, 0.04) <= 1, np.float32(DISC), hu[discs])
    hu[:, scene.ellipse(body.cx, spine_y + 0.065, 0.038, 0.034) <= 1] = CORTEX  # posterior arch ...
    hu[:, scene.ellipse(body.cx, spine_y + 0.062, 0.018, 0.018) <= 1] = CSF  # ... round the spinal canal
    bone(body.cx, spine_y + 0.09, 0.012, 0.018)  # spinous process


# --------------------------------------------------------------------------------------------------
# Lesions


def _lesion_grid(scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, y, x) of the lesion grid's voxels (every ``_LESION_STEP``-th voxel), as broadcastable 1-D arrays."""
    t = scene.T[::_LESION_STEP][:, None, None]
    y = scene.Y[::_LESION_STEP, 0][None, :, None]
    x = scene.X[0, ::_LESION_STEP][None, None, :]
    return t, y, x


def _pick(rng: np.random.Generator, candidates: np.ndarray, weights: np.ndarray) -> tuple[int, int, int]:
    flat = np.flatnonzero(candidates)
    if flat.size == 0:
        flat = np.flatnonzero(np.ones_like(candidates))
        weights = np.ones_like(weights)
    w = weights.ravel()[flat].astype(np.float64) + 1e-12
    return np.unravel_index(int(rng.choice(flat, p=w / w.sum())), candidates.shape)


def _bump(scene: _Scene, centre: tuple[int, int, int], sigma_mm: float, grid_shape) -> np.ndarray:
    """exp(-d^2 / 2 sigma^2) on the lesion grid, d in mm from ``centre`` (a lesion-grid index)."""
    step = scene.spacing * _LESION_STEP
    axes = [((np.arange(n) - c) * s).astype(np.float32) for n, c, s in zip(grid_shape, centre, step)]
    d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    return np.exp(-d2 / np.float32(2 * sigma_mm ** 2))


def _covid_field(scene: _Scene, rng: np.random.Generator, anatomy: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Lesion field of COVID-19 and its consolidation score: patches spreading along the pleura from
    subpleural, posterior, mostly lower-zone seeds in both lungs; consolidation in their dependent parts."""
    depth = anatomy.depth_mm
    lungs = depth > 0
    t, _, _ = _lesion_grid(scene)
    right = anatomy.right[::_LESION_STEP, ::_LESION_STEP][None]
    posterior = anatomy.lung_fraction_y[::_LESION_STEP, ::_LESION_STEP][None]
    peripheral = anatomy.lung_radial[::_LESION_STEP, ::_LESION_STEP][None] > 0.7
    weights = (posterior ** 3) * (1.2 - t) * np.ones_like(depth)
    subpleural = np.exp(-depth / 12.0)
    field = np.zeros(depth.shape, dtype=np.float32)
    for k in range(int(rng.integers(3, 8))):
        side = right if k % 2 == 0 else ~right  # alternate the lungs: bilateral
        centre = _pick(rng, lungs & side & peripheral & (depth < 12.0), weights)
        bump = _bump(scene, centre, rng.uniform(18.0, 35.0), depth.shape) * (0.3 + 0.7 * subpleural)
        np.maximum(field, rng.uniform(0.7, 1.0) * bump, out=field)
    field += 0.25 * subpleural + 0.15 * posterior  # severe disease spreads along the pleura, dependent first
    field += 0.15 * scene.smooth_field(rng, depth.shape)
    score = field + 0.35 * posterior + 0.3 * scene.smooth_field(rng, depth.shape)
    return field, score


def _cap_field(scene: _Scene, rng: np.random.Generator, anatomy: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Lesion field of CAP: one lung, one lobe, growing from a subpleural seed (a segment, then the lobe)."""
    depth = anatomy.depth_mm
    lungs = depth > 0
    lobe = _lobe(scene, rng, anatomy)
    peripheral = anatomy.lung_radial[::_LESION_STEP, ::_LESION_STEP][None] > 0.6
    centre = _pick(rng, lungs & lobe & peripheral & (depth < 20.0), np.ones(depth.shape, dtype=np.float32))
    field = _bump(scene, centre, rng.uniform(25.0, 40.0), depth.shape)
    field += 0.3 * np.exp(-depth / 20.0)  # a segment is a wedge on the pleura
    field += lobe.astype(np.float32)  # fill the lobe before crossing a fissure
    field += 0.2 * scene.smooth_field(rng, depth.shape)
    return field, field  # consolidated core, ground-glass rim


def _lobe(scene: _Scene, rng: np.random.Generator, anatomy: _Anatomy) -> np.ndarray:
    """A lobe of one lung (lesion grid), lower lobes more often: bounded by the oblique and horizontal fissures."""
    t, _, _ = _lesion_grid(scene)
    fissures = anatomy.fissures
    posterior = anatomy.lung_fraction_y[::_LESION_STEP, ::_LESION_STEP][None]
    right = anatomy.right[::_LESION_STEP, ::_LESION_STEP][None]
    oblique = fissures["oblique_front"] + (fissures["oblique_back"] - fissures["oblique_front"]) * posterior
    lower = t < oblique
    names = ("right lower", "right middle", "right upper", "left lower", "left upper")
    name = names[int(rng.choice(5, p=[0.32, 0.12, 0.16, 0.28, 0.12]))]
    side = right if name.startswith("right") else ~right
    if name.endswith("lower"):
        part = lower
    elif name == "right middle":
        part = ~lower & (t < fissures["horizontal"])
    elif name == "right upper":
        part = ~lower & (t >= fissures["horizontal"])
    else:
        part = ~lower
    return side & part


def _lesions_from_field(field: np.ndarray, consolidation_score: np.ndarray, ratio: float, label: str,
                        rng: np.random.Generator) -> np.ndarray:
    """0/1/2 for each lung voxel: the ``ratio`` of them where ``field`` is highest are infected; of
    those, the ones where ``consolidation_score`` is highest are consolidated."""
    count = int(np.clip(round(ratio * field.size), 1, field.size))
    infected = field >= np.partition(field, field.size - count)[field.size - count]
    if label == "covid":
        consolidated_share = 0.0 if rng.random() < 0.35 else rng.uniform(0.1, 0.45)
    else:
        consolidated_share = 1.0 if rng.random() < 0.4 else rng.uniform(0.65, 0.9)  # sometimes a ground-glass rim
    lesions = infected.astype(np.uint8)
    score = consolidation_score[infected]
    solid = round(consolidated_share * score.size)
    if solid > 0:
        cut = np.partition(score, score.size - solid)[score.size - solid]
        lesions[infected & (consolidation_score >= cut)] = 2
    return lesions


def _fill_lesions(anatomy: _Anatomy, lesions: np.ndarray, field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lesion HU at the lung voxels: ground glass fainter at its edges, keeping its vessels and bronchi;
    consolidation hiding its vessels, its bronchi still air (air bronchograms)."""
    hu, index = anatomy.hu, anatomy.lung_index
    values = hu[index]
    inside = field[lesions > 0]
    low, high = float(inside.min()), float(np.percentile(inside, 90))
    strength = np.clip((field - low) / max(high - low, 1e-6), 0.0, 1.0)  # 0 at the edge, 1 in the cores
    lumen = anatomy.airway_lumen[index]
    ggo = (lesions == 1) & ~anatomy.vessels[index] & ~lumen & ~anatomy.airway_wall[index]
    edge, core = rng.uniform(-690, -650), rng.uniform(-590, -520)
    values[ggo] = np.clip(edge + (core - edge) * strength[ggo], *GGO_RANGE)
    solid = (lesions == 2) & ~lumen
    level = rng.uniform(-40, 15)
    values[solid] = np.clip(level - 40.0 + 55.0 * strength[solid], *CONSOLIDATION_RANGE)
    hu[index] = values
    return hu
