"""Leave one source out: which anti-shortcut settings let the served X-ray classifier find COVID-19 at a new site.

For every candidate (a set of MANet profile settings, ``CANDIDATES``) and every source that holds COVID-19
images, the MANet classifier is trained on the pack's train split of the *other* sources (epoch chosen on
their val split) and scores COVID-19 vs rest, P(covid) of its five-class softmax, on

- every image of the held-out source (its COVID-19 images are the positives), plus
- the test split's non-COVID images of the sources it trained on: a source with COVID-19 only (Hannover) has
  no negatives of its own, and a site's COVID-19 images must also stand out from other sites' non-COVID ones.

The same candidate trained on every source is scored on the test split (accuracy, COVID-19 AUC). The winner
is the candidate with the best worst-source AUC (then the best mean), chosen without looking at the pack's
test split; ``python -m training manet --profile bundled`` then trains the served model with its settings.
Lung masks come from one segmenter (the registry's, unless ``segmenter`` is given) for every candidate.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from core.classes import MANET_CLASSES
from training import reports
from training.classification import ArraySet
from training.engine import is_main_process, pick_device
from training.recipes import manet
from training.splits import subsample_per_class
from training.tasks import MANET, select

COVID = MANET_CLASSES.index("covid")

# Study scale (2-core CPU): the served architecture (ResNet34 + MA) at half its width and 128 px.
PROFILES = {
    "cpu-quick": replace(manet.PROFILES["bundled"], cls_width=16, cls_size=128, cls_epochs=10, max_train_per_class=250),
    "gpu": manet.PROFILES["gpu"],  # the paper's ResNet34 (width 64, 224 px, 200 epochs), mixed precision
    "smoke": manet.PROFILES["smoke"],
}
# Every anti-shortcut field is set by each candidate, so a candidate means the same whatever the
# bundled profile (which the winner's settings go into) holds.
CANDIDATES = {
    # The bundled v1 model's settings: whole image, lung min-max, 30 % of the batch down/up-sampled.
    "whole-image": {"lung_crop": None, "equalise": False, "gamma_jitter": 0.0, "resolution_jitter": 0.3},
    # Lungs fill the input: lung size and collimation no longer tell children from adults or site from site.
    "lung-crop": {"lung_crop": 0.05, "equalise": False, "gamma_jitter": 0.0, "resolution_jitter": 0.3},
    # ... and the lung histogram equalised (each site's tone curve), random gamma, more resolution jitter.
    "lung-crop-equalised": {"lung_crop": 0.05, "equalise": True, "gamma_jitter": 0.4, "resolution_jitter": 0.6},
}


def covid_sources(records) -> list[str]:
    return sorted({r.source for r in records if r.label == "covid"})


def fold_sets(records, labels, sources, arrays, held_out: str | None, profile) -> dict[str, ArraySet]:
    """train / val without ``held_out``; test: all of ``held_out`` + the other sources' non-COVID test images.

    ``held_out`` None: every source trains, test is the pack's test split."""
    images, masks = arrays
    split = np.array([r.split for r in records])
    source = np.array(sources)
    seen = source != held_out
    picks = {"train": np.flatnonzero(seen & (split == "train")), "val": np.flatnonzero(seen & (split == "val"))}
    picks["train"] = picks["train"][subsample_per_class(labels[picks["train"]], profile.max_train_per_class)]
    if held_out is None:
        picks["test"] = np.flatnonzero(split == "test")
    else:
        picks["test"] = np.flatnonzero(~seen | ((split == "test") & (labels != COVID)))
    return {name: ArraySet((torch.from_numpy(images[index]), torch.from_numpy(masks[index])),
                           torch.from_numpy(labels[index]), [sources[i] for i in index]) for name, index in picks.items()}


def covid_auc(test: ArraySet, probabilities: np.ndarray, source: str | None = None) -> float | None:
    """COVID-19 vs rest AUC, over ``source``'s images only when given; None without both kinds."""
    truth = test.labels.numpy() == COVID
    pick = np.ones(len(truth), bool) if source is None else np.array(test.sources) == source
    if truth[pick].all() or not truth[pick].any():
        return None
    return float(roc_auc_score(truth[pick], probabilities[pick, COVID]))


def study(records, out_dir: Path, profile_name: str = "cpu-quick", candidates: list[str] | None = None,
          sources: list[str] | None = None, segmenter: tuple | None = None) -> dict:
    """``segmenter``: (network, input size); default the registry's, as the served classifier uses it."""
    base = PROFILES[profile_name]
    chosen, labels = select(records, MANET)
    record_sources = [r.source for r in chosen]
    sources = sources or covid_sources(chosen)
    segmenter, seg_size = segmenter if segmenter is not None else _served_segmenter()
    results = {}
    for name in candidates or list(CANDIDATES):
        profile = replace(base, seg_size=seg_size, **CANDIDATES[name])
        arrays = manet.classifier_arrays(chosen, segmenter, profile)
        rows = []
        for held_out in [*sources, None]:
            folder = out_dir / name / (held_out or "all-sources")
            sets = fold_sets(chosen, labels, record_sources, arrays, held_out, profile)
            probabilities = manet.train_trial(sets, profile, "resnet34", "mask", 0, folder)["probabilities"]
            test = sets["test"]
            row = {"held_out": held_out, "n_train": len(sets["train"]), "n_test": len(test),
                   "positives": int((test.labels.numpy() == COVID).sum()), "auc": covid_auc(test, probabilities)}
            if held_out is None:
                row["accuracy"] = float((probabilities.argmax(1) == test.labels.numpy()).mean())
            else:  # the held-out site alone, where it has non-COVID images of its own
                row["auc_own_negatives"] = covid_auc(test, probabilities, held_out)
            rows.append(row)
            print(f"{name} without {held_out or 'nothing'}: COVID-19 AUC {row['auc']}", flush=True)
        held = [r["auc"] for r in rows if r["held_out"] is not None and r["auc"] is not None]
        results[name] = {"settings": CANDIDATES[name], "rows": rows,
                         "worst_auc": min(held) if held else None, "mean_auc": float(np.mean(held)) if held else None}
    winner = max(results, key=lambda n: (results[n]["worst_auc"] or 0.0, results[n]["mean_auc"] or 0.0))
    summary = {"profile": profile_name, "settings": _plain(asdict(base)), "sources": sources,
               "candidates": results, "winner": winner}
    if is_main_process():
        reports.write_json(out_dir / "summary.json", summary)
        write_report(out_dir, summary)
    return summary


def _served_segmenter():
    from core.registry import Registry
    from core.settings import weights_dir

    registry = Registry.open(weights_dir())
    card = registry.card(registry.default("cxr-classification").segmenter or "lung-resunet")
    return registry.load_torch(card, pick_device("cpu")), card.input_size


def _plain(settings: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def _auc(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_report(out_dir: Path, summary: dict) -> Path:
    report = reports.Report(
        out_dir, f"Leave one source out: COVID-19 vs rest ({summary['profile']} profile)",
        "MANet ResNet34 + MA trained without one COVID-19 source, scored on all of it plus the other sources' "
        "non-COVID test images (`training/source_holdout.py`). The winner has the best worst-source AUC.")
    rows = []
    for name, result in summary["candidates"].items():
        for row in result["rows"]:
            rows.append([name, row["held_out"] or "none (all sources; pack test split)", row["n_train"], row["n_test"],
                         row["positives"], _auc(row["auc"]), _auc(row.get("auc_own_negatives")),
                         reports.percent(row["accuracy"]) if "accuracy" in row else "-"])
    report.table("COVID-19 vs rest AUC per held-out source",
                 ["candidate", "held-out source", "train n", "test n", "COVID-19 n", "AUC", "AUC, own negatives only",
                  "5-class accuracy %"], rows)
    report.table("Candidates", ["candidate", "settings", "worst AUC", "mean AUC"],
                 [[n, r["settings"] or "as bundled v1", _auc(r["worst_auc"]), _auc(r["mean_auc"])]
                  for n, r in summary["candidates"].items()])
    report.text("Winner", f"`{summary['winner']}`")
    return report.write()
