"""How far a heat map reflects what the classifier used: a deletion score and the heat map's share inside the lungs.

**Deletion score** (a hand version of the "remove the most relevant pixels" check; pytorch-grad-cam's ROAD is
not used: its noisy linear imputation solves a sparse system per image, seconds on the app's CPUs, and its
model call takes one tensor while MANet takes image + lung mask and the served X-ray backend is often ONNX).
On the classifier's input grid, the top ``TOP_FRACTION`` (20 %) of the heat map's pixels of the first input
(the image; a second input, MANet's lung mask, is left as it is) are replaced by a Gaussian-blurred copy of the
image, and the predicted class's probability drop is measured; the same is done for ``RANDOM_MASKS`` (3) random
masks of the same number of pixels (seeded, so a case always gets the same score). The score is

    drop(top heat pixels) - mean drop(random pixels)

in probability points, between -1 and 1: near 0 the highlighted region matters no more than any other pixels;
clearly positive, the prediction depends on the highlighted region; negative, removing it *raised* the
probability (the map points away from the evidence).

**In-lung share**: the heat map's mass inside the lung mask over its total mass (0..1); a classifier whose heat
lies outside the lungs is more likely reading the source (markers, borders, collimation) than the disease.

No Streamlit here: the pipeline (``core.pipelines.cxr``), the page and ``python -m training faithfulness`` use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

TOP_FRACTION = 0.2
RANDOM_MASKS = 3
BLUR_SIGMA_FRACTION = 0.04  # of the input's side: 9 px at 224
SEED = 0

Predict = Callable[[Sequence[np.ndarray]], np.ndarray]  # the (C, S, S) inputs of one case -> class probabilities
PredictBatch = Callable[[Sequence[np.ndarray]], np.ndarray]  # (N, C, S, S) inputs -> (N, classes) probabilities


def top_mask(heat: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of exactly round(fraction * pixels) pixels with the highest heat (ties: the first in order)."""
    flat = np.asarray(heat, dtype=np.float64).reshape(-1)
    k = round(fraction * flat.size)
    mask = np.zeros(flat.size, dtype=bool)
    if k > 0:
        mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask.reshape(np.shape(heat))


def random_masks(shape: tuple[int, int], count: int, n: int = RANDOM_MASKS, seed: int = SEED) -> list[np.ndarray]:
    """``n`` boolean masks of ``count`` random pixels each (seeded)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    masks = []
    for _ in range(n):
        mask = np.zeros(size, dtype=bool)
        mask[rng.choice(size, size=count, replace=False)] = True
        masks.append(mask.reshape(shape))
    return masks


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    """A (C, S, S) image blurred in its two spatial axes."""
    return gaussian_filter(np.asarray(image, dtype=np.float32), sigma=(0, sigma, sigma), mode="nearest")


def _replaced(image: np.ndarray, fill: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[None], fill, image).astype(np.float32)


def deletion_score(predict: Predict, inputs: Sequence[np.ndarray], heat: np.ndarray, class_index: int,
                   fraction: float = TOP_FRACTION, n_random: int = RANDOM_MASKS, seed: int = SEED,
                   sigma: float | None = None, probabilities: np.ndarray | None = None,
                   predict_batch: PredictBatch | None = None) -> dict:
    """Drop of class ``class_index``'s probability when the top-heat pixels are blurred, minus the mean drop for random pixels.

    ``inputs``: the classifier's inputs of one case, each (C, S, S); only the first is perturbed.
    ``heat``: the heat map on the same S x S grid. ``probabilities``: ``predict(inputs)`` when the caller has it
    already (a pipeline that just classified the case), saving a pass. ``predict_batch``: the perturbed copies
    in one call instead of one ``predict`` each (a batch of four costs an ONNX session about 2.8 single passes).
    Returns the score and its parts.
    """
    inputs = [np.asarray(x, dtype=np.float32) for x in inputs]
    image = inputs[0]
    if np.shape(heat) != image.shape[-2:]:
        raise ValueError(f"heat map {np.shape(heat)} is not on the input's grid {image.shape[-2:]}")
    fill = blurred(image, sigma if sigma is not None else BLUR_SIGMA_FRACTION * image.shape[-1])
    base = float((predict(inputs) if probabilities is None else probabilities)[class_index])
    top = top_mask(heat, fraction)
    masks = [top, *random_masks(top.shape, int(top.sum()), n_random, seed)]
    perturbed = [[_replaced(image, fill, mask), *inputs[1:]] for mask in masks]
    if predict_batch is None:
        perturbed_probabilities = [predict(case) for case in perturbed]
    else:
        perturbed_probabilities = predict_batch([np.stack(batch) for batch in zip(*perturbed)])
    top_drop, *random_drops = (base - float(p[class_index]) for p in perturbed_probabilities)
    random_drop = float(np.mean(random_drops)) if random_drops else 0.0
    return {"deletion_score": top_drop - random_drop, "top_drop": top_drop, "random_drop": random_drop,
            "probability": base}


def in_lung_share(heat: np.ndarray, lung_mask: np.ndarray) -> float:
    """The heat map's mass inside ``lung_mask`` over its total mass (same shape); NaN for an all-zero map."""
    heat = np.asarray(heat)
    if heat.shape != np.shape(lung_mask):
        raise ValueError(f"heat map {heat.shape} and lung mask {np.shape(lung_mask)} differ in shape")
    if heat.dtype.kind not in "fiub" or (heat.size and heat.min() < 0):  # served maps are already >= 0: no copy
        heat = np.clip(np.asarray(heat, dtype=np.float64), 0, None)
    # float64 sums read in place (a megapixel map: ~1 ms, against ~4 for a float64 copy and a masked copy)
    total = heat.sum(dtype=np.float64)
    if not total > 0:
        return float("nan")
    return float(heat.sum(dtype=np.float64, where=np.asarray(lung_mask, dtype=bool)) / total)


def case_scores(predict: Predict, inputs: Sequence[np.ndarray], input_heat: np.ndarray, class_index: int,
                heat: np.ndarray, lung_mask: np.ndarray, probabilities: np.ndarray | None = None,
                predict_batch: PredictBatch | None = None) -> dict:
    """What a pipeline reports for one case: the deletion score of ``input_heat`` (on the input grid) and the
    in-lung share of ``heat`` (on the image), rounded; all None when the map is zero everywhere (nothing to score)."""
    if not np.any(np.asarray(input_heat) > 0):
        return {"deletion_score": None, "in_lung_share": None, "top_drop": None, "random_drop": None}
    scores = deletion_score(predict, inputs, input_heat, class_index, probabilities=probabilities,
                            predict_batch=predict_batch)
    return {"deletion_score": round(scores["deletion_score"], 6), "in_lung_share": round(in_lung_share(heat, lung_mask), 6),
            "top_drop": round(scores["top_drop"], 6), "random_drop": round(scores["random_drop"], 6)}


def summary(values: Sequence[float]) -> dict:
    """n, mean, standard deviation and quartiles of the finite values (a distribution for cards and reports)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "q25": None, "median": None, "q75": None}
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "mean": round(float(v.mean()), 6), "std": round(float(v.std()), 6),
            "q25": round(float(q25), 6), "median": round(float(median), 6), "q75": round(float(q75), 6)}


READING = ("Deletion score: the drop in the predicted class's probability when the 20 % hottest pixels are "
           "blurred, minus the drop for 20 % random pixels (near 0: the highlighted region matters no more than "
           "any other; clearly positive: the prediction rests on it). In-lung share: the part of the heat map "
           "inside the lung mask (low: the model looks outside the lungs, more likely at the source than the disease).")
