"""Dice of the bundled 2D CT models, run slice by slice as served, against the volume phantoms' ground truth.

    .venv/bin/python scripts/check_ct_volume_phantoms.py [--weights weights] [--seeds 0 1 2] [--labels covid cap]

For each phantom: the served lung mask (ct-lungs-resunet through ``core.imaging.ct_input`` and
``core.lung``, as ``core.pipelines.ct_slice`` runs it) on the axial slices through the middle of the
lungs (the central half of their height), Dice per slice against ``lung_mask``; and the served
infection mask (binary Inf-Net >= 0.5 inside the served lungs) on the same slices, Dice over them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from core.ct_volume_phantoms import make_ct_volume
from core.imaging.ct_input import hu_to_model_pixels
from core.lung import lung_mask_from_probability, lung_probability_small, probability_to_shape, sigmoid
from core.preprocess import segmenter_input
from core.registry import Registry
from core.runtime import OnnxModel


def mid_lung_slices(lung_mask: np.ndarray) -> np.ndarray:
    """Indices of the axial slices in the central half of the lungs' height."""
    rows = np.flatnonzero(lung_mask.any(axis=(1, 2)))
    low, high = rows[0], rows[-1]
    quarter = (high - low) / 4
    return np.arange(int(np.ceil(low + quarter)), int(high - quarter) + 1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / total) if total else 1.0


class ServedSliceModels:
    def __init__(self, weights: Path):
        registry = Registry.open(weights)
        self.lung_card = registry.card("ct-lungs-resunet")
        self.infection_card = registry.card("ct-infection-infnet")
        self.lungs = OnnxModel(registry.verified_path(self.lung_card, "onnx"))
        self.infection = OnnxModel(registry.verified_path(self.infection_card, "onnx"))

    def lung_mask(self, hu_slice: np.ndarray) -> np.ndarray:
        pixels = hu_to_model_pixels(hu_slice)
        small = lung_probability_small(pixels, self.lungs, self.lung_card.input_size)
        return lung_mask_from_probability(probability_to_shape(small, pixels.shape))

    def infection_mask(self, hu_slice: np.ndarray, lung_mask: np.ndarray) -> np.ndarray:
        pixels = hu_to_model_pixels(hu_slice)
        size = self.infection_card.input_size
        small = sigmoid(self.infection(segmenter_input(pixels, size)[None])[0, 0])
        return (probability_to_shape(small, pixels.shape) >= 0.5) & lung_mask


def check(models: ServedSliceModels, label: str, seed: int, ratio: float | None) -> dict:
    phantom = make_ct_volume(label, seed, infection_ratio=ratio)
    lung_dice, served_inf, true_inf = [], [], []
    for k in mid_lung_slices(phantom.lung_mask):
        served = models.lung_mask(phantom.hu[k])
        lung_dice.append(dice(served, phantom.lung_mask[k]))
        served_inf.append(models.infection_mask(phantom.hu[k], served))
        true_inf.append(phantom.infection_mask[k] > 0)
    return {"label": label, "seed": seed, "ratio": phantom.infection_ratio, "slices": len(lung_dice),
            "lung_dice_min": min(lung_dice), "lung_dice_mean": float(np.mean(lung_dice)),
            "infection_dice": dice(np.array(served_inf), np.array(true_inf))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("weights"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", nargs="+", default=["covid", "cap"])
    parser.add_argument("--ratio", type=float, default=None, help="infection ratio (default: drawn per seed)")
    args = parser.parse_args()
    models = ServedSliceModels(args.weights)
    print("label  seed  ratio    slices  lung Dice min  mean   infection Dice  seconds")
    for label in args.labels:
        for seed in args.seeds:
            start = time.perf_counter()
            r = check(models, label, seed, args.ratio)
            print(f"{r['label']:6} {r['seed']:4}  {r['ratio']:.4f}  {r['slices']:6}  {r['lung_dice_min']:.3f}"
                  f"          {r['lung_dice_mean']:.3f}  {r['infection_dice']:.3f}           {time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
