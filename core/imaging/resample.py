"""Bilinear resizing: the numbers of scikit-image's ``resize``, faster.

``skimage.transform.resize(image, shape, order=1, mode="reflect", preserve_range=True, anti_aliasing=False)``
is how every map (lung probability, Grad-CAM, attention) is placed back on the image, and how the models'
training caches were built. It interpolates each output pixel from four samples in float64 through
``scipy.ndimage.zoom``. Bilinear interpolation is separable: here one axis is interpolated, then the other,
each as a sparse matrix with two weights per output row (column): the same samples, the same weights, in
float64 (``_zoom_taps``); only the order of the terms differs. Results agree with scikit-image to about 1e-15
and, for the float32 images the app works on, cast to float32 they are the same values save a rare last-bit
rounding (``tests/core/test_fast_case.py``). Several times as fast (a 224 px map to 1024 px in ~2 ms).

The details that make it the same: samples at ``(o + 0.5) * n_in / n_out - 0.5`` (scikit-image's
``grid_mode``), "reflect" borders (scipy's "mirror": d c b | a b c d), and the result clipped to the input's range.

Shrinking with anti-aliasing, ``resize_antialiased`` (how every X-ray is brought down to the models' inputs),
is scikit-image's Gaussian over the whole full-resolution image and then the interpolation, which reads only
two rows and two columns of the smoothed image per output pixel: there the Gaussian is computed only where it
is read, several times faster.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import sparse


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order=1, preserve_range=True, anti_aliasing=False)`` of a 2-D
    image, as float64 values (scikit-image returns them in float32 for a float32 image)."""
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"resize takes a non-empty 2-D image, got shape {image.shape}")
    rows, columns = _axis_matrix(image.shape[0], int(shape[0])), _axis_matrix(image.shape[1], int(shape[1]))
    if image.size < shape[0] * shape[1]:  # growing: transpose the small input, so the large output comes in C order
        out = rows @ np.ascontiguousarray((columns @ image.T.astype(np.float64)).T)
    else:  # shrinking: transpose the small output
        out = np.ascontiguousarray((columns @ (rows @ image.astype(np.float64)).T).T)
    return np.clip(out, image.min(), image.max(), out=out)


def resize_antialiased(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order=1, preserve_range=True, anti_aliasing=True)`` of a 2-D
    image, as float64 values (scikit-image returns them in float32 for a float16 or float32 image).

    Why: scikit-image smooths the whole image, ``scipy.ndimage.gaussian_filter(image, sigma, mode="mirror")``
    with ``sigma = max(0, (n_in / n_out - 1) / 2)`` per axis, then interpolates (``ndimage.zoom``), which reads
    only two rows and two columns around each output pixel: for a 1024 px X-ray going to 256 px most of the
    smoothing is never read, and the filter's pass along axis 0 is slow (strided). Here the Gaussian is
    computed only where the interpolation reads it: along axis 0 at the rows it reads (all columns), then along
    axis 1 at the columns it reads (of those rows), each pass a sparse-matrix product; then the interpolation
    from that grid. Four to five times faster for 1024 -> 256 or 224 px, about nine times for 2048 -> 224 px.

    What makes it the same: each pass is ndimage's ``gaussian_filter1d``: radius ``int(4 * sigma + 0.5)``
    (``truncate=4``), weights ``exp(-0.5 / sigma**2 * x**2)`` normalised to sum 1, "mirror" borders folded
    into the matrix (any distance out: images smaller than the radius too), sums in float64, each pass's result
    stored in the working dtype (float32 for float16/32 images, else float64: scikit-image's), so a float32
    image is rounded to float32 between the passes as ndimage's float32 output is; an axis whose sigma is not
    above 1e-15 is not filtered (ndimage skips it: an axis that grows is only interpolated). The interpolation
    is ``zoom``'s own arithmetic (``_zoom_taps``, ``_interpolate_like_zoom``), and the result is clipped to the
    range of the input image (not of the smoothed one), as scikit-image does. The one difference is the order
    of the terms in each Gaussian sum (ndimage adds the two mirrored samples first, then weighs them): the
    sums agree to the last bit or two of float64, so float64 results agree to within about 5e-16 of the
    image's scale, and float32 ones are the same values but for a rounding that may flip in well under one
    value in a million (none in the tests, nor among 4 million smoothed values measured).
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"resize takes a non-empty 2-D image, got shape {image.shape}")
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
        raise ValueError(f"resize_antialiased takes a real-valued image, got {image.dtype}")  # as scikit-image
    image = image.astype(np.float32 if image.dtype in (np.float16, np.float32) else np.float64, copy=False)
    (n_rows, n_cols), (out_rows, out_cols) = image.shape, (int(shape[0]), int(shape[1]))
    rows, row_taps = _sampled_lines(n_rows, out_rows)
    cols, col_taps = _sampled_lines(n_cols, out_cols)
    smoothed = _smooth_columns(image, _gaussian(n_rows, out_rows), rows)  # (n_cols, rows read): transposed
    smoothed = _smooth_rows(smoothed, _gaussian(n_cols, out_cols), cols)  # (columns read, rows read)
    out = _interpolate_like_zoom(smoothed, row_taps, col_taps)
    return np.clip(out, image.min(), image.max(), out=out)


_STRIP = 128  # columns per block of the first pass: its float64 copy and its transpose stay in the CPU's caches


def _smooth_columns(image: np.ndarray, gaussian: sparse.csr_array | None, at: np.ndarray) -> np.ndarray:
    """Rows ``at`` of ``image`` smoothed along axis 0 (None: not smoothed), in ``image``'s dtype and transposed,
    (columns, rows ``at``), for the pass along axis 1 to run over contiguous lines. A block of columns at a time:
    faster than one product over the whole image and a transpose of the result."""
    n_rows, n_cols = image.shape
    out = np.empty((n_cols, at.size), image.dtype)
    block = np.empty((n_rows, min(_STRIP, n_cols)))
    for start in range(0, n_cols, _STRIP):
        stop = min(start + _STRIP, n_cols)
        strip = block if stop - start == block.shape[1] else np.empty((n_rows, stop - start))
        strip[...] = image[:, start:stop]
        out[start:stop] = (strip[at] if gaussian is None else gaussian @ strip).T
    return out


def _smooth_rows(lines: np.ndarray, gaussian: sparse.csr_array | None, at: np.ndarray) -> np.ndarray:
    """Rows ``at`` of ``lines`` smoothed along axis 0 (None: not smoothed), in ``lines``' dtype."""
    if gaussian is None:
        return lines[at]
    return (gaussian @ lines.astype(np.float64)).astype(lines.dtype, copy=False)


def _interpolate_like_zoom(grid_t: np.ndarray, row_taps: tuple[np.ndarray, np.ndarray],
                           col_taps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``ndimage.zoom(order=1)``'s sums from a grid given transposed, (columns, rows), in float64: for each
    output pixel the four samples, row tap 0 then 1, column tap 0 then 1 within, each ``(value * row weight)
    * column weight`` added in that order, as zoom's C loop does (so the same bits)."""
    (row_index, row_weight), (col_index, col_weight) = row_taps, col_taps
    by_col_tap = [grid_t[col_index[:, b]] for b in (0, 1)]  # (out columns, rows read)
    out = None
    for a in (0, 1):
        for b in (0, 1):
            term = by_col_tap[b][:, row_index[:, a]] * row_weight[:, a]
            term *= col_weight[:, b:b + 1]
            out = term if out is None else np.add(out, term, out=out)
    return np.ascontiguousarray(out.T)


@lru_cache(maxsize=64)
def _sampled_lines(n_in: int, n_out: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The lines ``zoom`` reads along one axis (sorted), and its taps (``_zoom_taps``) indexing into those."""
    index, weight = _zoom_taps(n_in, n_out)
    lines, at = np.unique(index, return_inverse=True)
    at = at.reshape(index.shape)
    lines.flags.writeable = at.flags.writeable = False
    return lines, (at, weight)


@lru_cache(maxsize=64)
def _zoom_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, weight), each (n_out, 2), as ``ndimage.zoom(order=1, mode="mirror", grid_mode=True)`` computes
    them: the coordinate ``(o + 0.5) * zoom - 0.5`` with ``zoom = n_in / n_out``, mirrored where it is below 0
    (it never reaches ``n_in``: past the last sample only the second tap's index is mirrored), weights ``1 - x``
    and ``1 - (1 - x)`` for its fraction ``x``."""
    position = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    position = np.abs(position) if n_in > 1 else np.zeros_like(position)
    first = np.floor(position)
    before = 1.0 - (position - first)
    index = _mirror(np.stack([first, first + 1], axis=1).astype(np.int64), n_in)
    weight = np.stack([before, 1.0 - before], axis=1)
    index.flags.writeable = weight.flags.writeable = False
    return index, weight


@lru_cache(maxsize=64)
def _gaussian(n_in: int, n_out: int) -> sparse.csr_array | None:
    """ndimage's anti-aliasing Gaussian along one axis at the lines ``_sampled_lines`` reads, a sparse
    (lines read, n_in) float64 matrix with the mirror border folded in; None where ndimage does not filter."""
    sigma = max(0.0, (n_in / n_out - 1) / 2)
    if not sigma > 1e-15:
        return None
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / (sigma * sigma) * offsets ** 2)
    kernel = kernel / kernel.sum()
    lines = _sampled_lines(n_in, n_out)[0]
    columns = _mirror(lines[:, None] + offsets, n_in)
    at = np.broadcast_to(np.arange(lines.size)[:, None], columns.shape)
    weights = np.broadcast_to(kernel, columns.shape)
    gaussian = sparse.coo_array((weights.ravel(), (at.ravel(), columns.ravel())), shape=(lines.size, n_in)).tocsr()
    gaussian.sum_duplicates()  # taps the border folds onto one pixel: one weight, so products never reorder it
    return gaussian


@lru_cache(maxsize=64)
def _axis_matrix(n_in: int, n_out: int):
    """(n_out, n_in) sparse matrix of one axis's interpolation: two weights per row (a megapixel output in a few
    milliseconds, where gathering columns took four times as long)."""
    index, weight = _zoom_taps(n_in, n_out)
    rows = np.repeat(np.arange(n_out), 2)
    return sparse.csr_array((weight.ravel(), (rows, index.ravel())), shape=(n_out, n_in))


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected at the borders without repeating the edge (d c b | a b c d | c b a), any distance out."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)
