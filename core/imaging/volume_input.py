"""The 3D classifier's input (paper 004, Sec. IV-B), shared by training and serving.

From a CT volume in HU on the canonical grid ``[z, y, x]`` with spacing ``(dz, dy, dx)`` mm and its
lung mask (lungs including the infection, Sec. III):

1. mask: HU outside the lungs set to the window's low end (-1350 HU, 0 after normalisation);
2. resample to 0.7168 x 0.7168 x 1.25 mm (x, y, z) and downsample by one common ``factor``
   (the paper's "approximately half": 2) in a single trilinear step to ``1.25 factor`` mm in z and
   ``0.7168 factor`` mm in y and x (half-voxel aligned: voxel centres at ``(j + 0.5) / zoom - 0.5``);
3. window [-1350, 150] HU (width 1500, level -600) to [0, 1];
4. zero-pad, or crop around the lungs' bounding box, to ``target_shape`` (138 x 256 x 256, z, y, x).

Values are rounded to 8-bit levels (k / 255): the training cache stores uint8, so serving sees
exactly what training saw. Only the lungs' bounding box is resampled (everything else is 0), which
keeps a 512 x 512 x 300 series under a second or two.

``Placement`` records where the network grid sits on the source grid, per axis a zoom (network
voxels per source voxel) and a start (the resampled index at network index 0; negative = zero
padding). ``attention_to_volume`` uses it to bring the attention map T(A) back onto the volume,
and ``mask_input`` to bring a mask (the infection, for the attention loss) onto the network grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .volume_masks import bounding_box
from .windowing import CT_MODEL_WINDOW

RESAMPLE_SPACING_MM = (1.25, 0.7168, 0.7168)  # (z, y, x): the paper's 0.7168 x 0.7168 x 1.25 mm (x, y, z)
PAPER_FACTOR = 2.0  # "down-sample ... into the approximately half sizes", the same factor on every axis
PAPER_SHAPE = (138, 256, 256)  # (z, y, x)
INPUT_WINDOW = CT_MODEL_WINDOW  # [-1350, 150] HU: the paper's window, the CT models' window
LEVELS = 255  # 8-bit levels: the training cache's uint8


@dataclass(frozen=True)
class Placement:
    """Where the network grid lies on the source grid: per axis (z, y, x), network index t sits at
    source coordinate ``(t + start + 0.5) / zoom - 0.5`` (voxel centres, 0 = the first voxel's centre)."""

    source_shape: tuple[int, int, int]
    zoom: tuple[float, float, float]  # network voxels per source voxel
    start: tuple[int, int, int]  # resampled index at network index 0; negative: zero padding before
    target_shape: tuple[int, int, int]

    def resampled_length(self, axis: int) -> int:
        """Voxels along ``axis`` of the whole volume resampled to the network spacing."""
        return max(1, round(self.source_shape[axis] * self.zoom[axis]))

    def source_coordinates(self, axis: int) -> np.ndarray:
        """Source coordinate of every network index along ``axis``."""
        t = np.arange(self.target_shape[axis], dtype=np.float64)
        return (t + self.start[axis] + 0.5) / self.zoom[axis] - 0.5

    def inside_volume(self, axis: int) -> np.ndarray:
        """Network indices along ``axis`` that fall inside the resampled volume (the others are padding)."""
        j = np.arange(self.target_shape[axis]) + self.start[axis]
        return (j >= 0) & (j < self.resampled_length(axis))

    def network_coordinates(self, axis: int) -> np.ndarray:
        """Network coordinate of every source index along ``axis`` (the inverse of ``source_coordinates``)."""
        i = np.arange(self.source_shape[axis], dtype=np.float64)
        return (i + 0.5) * self.zoom[axis] - 0.5 - self.start[axis]

    def to_dict(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Placement:
        return cls(tuple(int(v) for v in data["source_shape"]), tuple(float(v) for v in data["zoom"]),
                   tuple(int(v) for v in data["start"]), tuple(int(v) for v in data["target_shape"]))


def network_spacing(factor: float = PAPER_FACTOR) -> tuple[float, float, float]:
    """Voxel spacing (z, y, x) mm of the network input: the paper's resampling spacing times ``factor``."""
    return tuple(s * float(factor) for s in RESAMPLE_SPACING_MM)


def plan_placement(source_shape, spacing_mm, lung_mask: np.ndarray | None, target_shape=PAPER_SHAPE,
                   factor: float = PAPER_FACTOR) -> Placement:
    """The zoom from the spacing, and per axis a start that zero-pads a volume smaller than the target
    (centred, as the paper) or crops a larger one around the lungs' bounding box."""
    source_shape = tuple(int(s) for s in source_shape)
    if len(source_shape) != 3 or len(spacing_mm) != 3 or len(target_shape) != 3:
        raise ValueError("A CT volume, its spacing and the network's input shape each need three axes (z, y, x).")
    if min(spacing_mm) <= 0 or factor <= 0:
        raise ValueError("Voxel spacing and the downsampling factor must be positive.")
    zoom = tuple(float(s) / t for s, t in zip(spacing_mm, network_spacing(factor)))
    box = bounding_box(lung_mask, margin=0) if lung_mask is not None else None
    starts = []
    for axis, (size, z, target) in enumerate(zip(source_shape, zoom, target_shape)):
        length = max(1, round(size * z))
        if length <= target:
            starts.append(-((target - length) // 2))
            continue
        centre = (box[axis].start + box[axis].stop) / 2 if box else size / 2  # source edge units
        start = round(centre * z - target / 2)
        starts.append(min(max(start, 0), length - target))
    return Placement(source_shape, zoom, tuple(starts), tuple(int(t) for t in target_shape))


def _linear_along(array: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``array`` along ``axis`` at ``coords`` (clamped to the first and last index)."""
    size = array.shape[axis]
    coords = np.clip(coords, 0, size - 1)
    if size == 1:
        return np.take(array, np.zeros(len(coords), dtype=np.intp), axis=axis)
    low = np.minimum(np.floor(coords).astype(np.intp), size - 2)
    weight = (coords - low).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = len(coords)
    weight = weight.reshape(shape)
    below, above = np.take(array, low, axis=axis), np.take(array, low + 1, axis=axis)
    above -= below  # in place: for a 512 x 512 x 300 output every temporary array is 300 MB
    above *= weight
    above += below
    return above


def _trilinear(array: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Samples of ``array`` on the grid ``coords[0] x coords[1] x coords[2]`` (separable: one axis at a time,
    the most shrinking axis first so the intermediate arrays stay small)."""
    order = sorted(range(3), key=lambda a: len(coords[a]) / max(array.shape[a], 1))
    for axis in order:
        array = _linear_along(array, axis, coords[axis])
    return array


def _sampled_range(coords: np.ndarray, allowed: np.ndarray, low: float, high: float) -> tuple[int, int]:
    """(first, last + 1) network indices that are ``allowed`` and whose coordinate lies in (low, high)."""
    hits = np.flatnonzero(allowed & (coords > low) & (coords < high))
    return (int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, 0)


def _resample_box(values: np.ndarray, box: tuple[slice, ...], placement: Placement, fill: float) -> np.ndarray:
    """``values`` (the source voxels inside ``box``; every voxel just outside the box equals ``fill``)
    resampled onto the network grid, ``fill`` elsewhere (padding included)."""
    out = np.full(placement.target_shape, fill, dtype=np.float32)
    ranges, coords = [], []
    for axis, (lo, hi) in enumerate((b.start, b.stop) for b in box):
        source = placement.source_coordinates(axis)
        # A network voxel beyond one source voxel outside the box only sees fill values (voxels at the
        # volume's own edge are clamped, as everywhere else).
        low = lo - 1 if lo > 0 else -np.inf
        high = hi if hi < placement.source_shape[axis] else np.inf
        first, last = _sampled_range(source, placement.inside_volume(axis), low, high)
        if first == last:
            return out
        ranges.append(slice(first, last))
        clamped = np.clip(source[first:last], 0, placement.source_shape[axis] - 1)
        coords.append(np.clip(clamped - lo, 0, hi - lo - 1))
    out[tuple(ranges)] = _trilinear(values.astype(np.float32, copy=False), coords)
    return out


def classifier_input(hu: np.ndarray, lung_mask: np.ndarray, spacing_mm, target_shape=PAPER_SHAPE,
                     factor: float = PAPER_FACTOR) -> tuple[np.ndarray, Placement]:
    """(float32 ``target_shape`` array in [0, 1] on 8-bit levels, its ``Placement``): steps 1-4 of the module doc.

    ``hu`` float HU and ``lung_mask`` bool (lungs including infection) on the same canonical grid;
    ``spacing_mm`` = (dz, dy, dx). An empty lung mask gives an all-zero input.
    """
    hu = np.asarray(hu)
    lung_mask = np.asarray(lung_mask, dtype=bool)
    if hu.shape != lung_mask.shape:
        raise ValueError(f"The lung mask's shape {lung_mask.shape} differs from the volume's {hu.shape}.")
    placement = plan_placement(hu.shape, spacing_mm, lung_mask, target_shape, factor)
    box = bounding_box(lung_mask, margin=1)  # grown by one voxel: the box's rim lies outside the mask
    if box is None:
        return np.zeros(placement.target_shape, np.float32), placement
    low, high = INPUT_WINDOW.low, INPUT_WINDOW.high
    masked = np.where(lung_mask[box], np.nan_to_num(hu[box].astype(np.float32), nan=low), np.float32(low))
    resampled = _resample_box(masked, box, placement, fill=low)
    windowed = np.clip((resampled - low) / (high - low), 0.0, 1.0)
    return (np.round(windowed * LEVELS) / LEVELS).astype(np.float32), placement


def quantise(network_input: np.ndarray) -> np.ndarray:
    """The uint8 the training cache stores for a ``classifier_input`` array (exact: it is on 8-bit levels)."""
    return np.round(np.asarray(network_input) * LEVELS).astype(np.uint8)


def mask_input(mask: np.ndarray, placement: Placement) -> np.ndarray:
    """A mask on the source grid (any value > 0 counts) as uint8 0/1 on the network grid: the same trilinear
    resampling as the image, then >= 0.5."""
    mask = np.asarray(mask) > 0
    if mask.shape != placement.source_shape:
        raise ValueError(f"The mask's shape {mask.shape} differs from the volume's {placement.source_shape}.")
    box = bounding_box(mask, margin=1)
    if box is None:
        return np.zeros(placement.target_shape, np.uint8)
    return (_resample_box(mask[box].astype(np.float32), box, placement, fill=0.0) >= 0.5).astype(np.uint8)


def attention_to_volume(attention: np.ndarray, placement: Placement, volume_shape=None) -> np.ndarray:
    """T(A) on the network grid -> float32 in [0, 1] on the volume's grid (trilinear; 0 where the network's
    window cropped the volume away)."""
    attention = np.asarray(attention, dtype=np.float32)
    if attention.shape != placement.target_shape:
        raise ValueError(f"An attention map of shape {attention.shape} does not fit the input {placement.target_shape}.")
    volume_shape = tuple(volume_shape or placement.source_shape)
    if volume_shape != placement.source_shape:
        raise ValueError(f"This placement belongs to a volume of shape {placement.source_shape}, not {volume_shape}.")
    out = np.zeros(volume_shape, np.float32)
    ranges, coords = [], []
    for axis in range(3):
        network = placement.network_coordinates(axis)
        first, last = _sampled_range(network, np.ones(len(network), bool), -0.5 - 1e-9,
                                     placement.target_shape[axis] - 0.5 + 1e-9)
        if first == last:
            return out
        ranges.append(slice(first, last))
        coords.append(network[first:last])
    out[tuple(ranges)] = _trilinear(attention, coords)
    return out


def classifier_input_from_config(hu: np.ndarray, lung_mask: np.ndarray, spacing_mm,
                                 input_config: dict) -> tuple[np.ndarray, Placement]:
    """``classifier_input`` with a model card's ``input_config`` ({"shape": [z, y, x], "factor": f, ...})."""
    return classifier_input(hu, lung_mask, spacing_mm, tuple(input_config["shape"]), float(input_config["factor"]))
