"""The bundled CT-volume pipeline, end to end as served, on held-out synthetic volumes.

    .venv/bin/python scripts/check_ct_volume_served.py [--weights weights] [--count 40] [--out FILE.csv]

The volumes are the dual-sampling recipe's synthetic test set (``training.volume_data.synthetic_records``,
seeds from 1,000,000, never used for training or model selection) at the cpu-quick profile's shape and
spacing. Unlike the recipe's evaluation, which feeds the classifiers the generator's ground-truth lung
masks and infection ratios, here the lungs and the infection come from the bundled 2D CT models
(``core.pipelines.ct_volume``), as for an upload. Prints AUC and accuracy per model (uniform,
size-balanced, dual), overall and by the true infection-ratio band, the measured vs true infection ratio
and lung volume, and one row per volume.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from sklearn.metrics import roc_auc_score

from core.imaging.infection_burden import BAND_TITLES, ratio_band
from core.pipelines.ct_volume import CtVolumePipeline
from core.registry import Registry
from training.recipes.dual_sampling import PROFILES
from training.volume_data import synthetic_records, synthetic_volume


def served_rows(pipeline: CtVolumePipeline, count: int, profile_name: str) -> list[dict]:
    profile = PROFILES[profile_name]
    records = [r for r in synthetic_records(0, count, seed_test=1_000_000 + profile.seed * 10_000)]
    rows = []
    for record in records:
        phantom = synthetic_volume(record.label, record.seed, profile.synthetic_shape, profile.synthetic_spacing)
        result = pipeline.analyse(phantom.to_volume())
        voxel_ml = float(np.prod(phantom.spacing_mm)) / 1000
        rows.append({
            "case": record.case_id, "label": record.label, "true_ratio": phantom.infection_ratio,
            "served_ratio": result.infection_ratio, "true_lung_ml": float(phantom.lung_mask.sum()) * voxel_ml,
            "served_lung_ml": result.lung_volume_ml["total"],
            **{f"p_{name}": p for name, p in result.model_probabilities.items()},
        })
        print(f"{record.case_id:28} {record.label:5} ratio true {phantom.infection_ratio:.4f} served "
              f"{result.infection_ratio:.4f}  P(covid) " + " ".join(
                  f"{name} {p:.3f}" for name, p in result.model_probabilities.items()), flush=True)
    return rows


def summary(rows: list[dict]) -> None:
    y = np.array([r["label"] == "covid" for r in rows])
    print(f"\n{len(rows)} volumes ({y.sum()} COVID-19-like, {(~y).sum()} CAP-like)")
    for name in ("uniform", "size-balanced", "dual"):
        p = np.array([r[f"p_{name}"] for r in rows])
        print(f"{name:14} AUC {roc_auc_score(y, p):.3f}  accuracy at 0.5 {np.mean((p >= 0.5) == y):.3f}")
    true, served = (np.array([r[k] for r in rows]) for k in ("true_ratio", "served_ratio"))
    print("AUC by the generator's (true) infection-ratio band, Table III's bands:")
    bands = np.array([ratio_band(r) for r in true])
    for band in ("small", "medium", "large"):
        pick = bands == band
        scores = [f"{name} {roc_auc_score(y[pick], [r[f'p_{name}'] for r, k in zip(rows, pick) if k]):.3f}"
                  if 0 < y[pick].sum() < pick.sum() else f"{name} -" for name in ("uniform", "size-balanced", "dual")]
        print(f"  {BAND_TITLES[band]:>13} ({int(y[pick].sum())} COVID-19, {int((~y[pick]).sum())} CAP): {', '.join(scores)}")
    print(f"infection ratio: mean |served - true| {np.mean(np.abs(served - true)):.4f}, Spearman "
          f"{_spearman(true, served):.3f}")
    # CAP-like volumes carry lesions too (true ratio 0.0002-0.2), so a served ratio on them is not by itself a
    # false positive: what the model marks on nearly clean lungs is its floor, what it finds of large lesions its reach.
    nearly_clean, large = true < 0.001, true > 0.03
    print(f"  nearly clean lungs (true < 0.001, {nearly_clean.sum()} volumes): served median "
          f"{np.median(served[nearly_clean]):.4f}, max {np.max(served[nearly_clean]):.4f}")
    print(f"  large lesions (true > 0.03, {large.sum()} volumes): served / true median "
          f"{np.median(served[large] / true[large]):.3f}")
    lung_true, lung_served = (np.array([r[k] for r in rows]) for k in ("true_lung_ml", "served_lung_ml"))
    print(f"lung volume: served / true median {np.median(lung_served / lung_true):.3f} "
          f"(min {np.min(lung_served / lung_true):.3f}, max {np.max(lung_served / lung_true):.3f})")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(v)) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("weights"))
    parser.add_argument("--count", type=int, default=40, help="test volumes, alternating COVID-19 / CAP")
    parser.add_argument("--profile", default="cpu-quick", help="the recipe profile whose synthetic shape is used")
    parser.add_argument("--out", type=Path, help="also write the rows as CSV")
    args = parser.parse_args()
    rows = served_rows(CtVolumePipeline(Registry.open(args.weights)), args.count, args.profile)
    summary(rows)
    if args.out:
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
