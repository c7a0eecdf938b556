"""Score a served X-ray classifier's Grad-CAM on the pack's test split and write it on the model card.

``python -m training faithfulness --weights W --classifier NAME [--data DIR] [--limit N] [--dry-run]``

Every test image goes the way the app sends it (decode, de-identify, guards, the image-kind gate, lung model,
classifier, Grad-CAM: ``CxrPipeline.analyse(..., faithfulness=True)``); per true class, the distribution of the
deletion score (the predicted class's probability drop when the 20 % hottest pixels are blurred, minus the drop
for 20 % random pixels) and of the in-lung share (the heat map's mass inside the lung mask), ``core.faithfulness``.
``--limit N`` takes the first N test images of each class (the pack's order). Images the app refuses are left out
(counted); so are images whose Grad-CAM is zero everywhere (counted as ``no_heat``). The card's ``faithfulness``
entry in ``W/manifest.json`` holds the result; the model card shows the per-class table.

X-ray classifiers only (``cxr-classification``); the CT pipelines' heat maps are not scored here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.errors import ChestReviewError
from core.faithfulness import RANDOM_MASKS, TOP_FRACTION, summary


class FaithfulnessError(ChestReviewError):
    """The classifier cannot be scored here (not an X-ray classifier, no test images)."""


def faithfulness_entry(scores: dict[str, list[dict]], refused: int, no_heat: int, limit: int | None,
                       command: str = "") -> dict:
    """The card's entry from per-class lists of ``CxrResult.faithfulness`` dicts (true class -> scores)."""
    per_class = {}
    for name, rows in scores.items():
        per_class[name] = {
            "n": len(rows),
            "deletion_score": summary([r["deletion_score"] for r in rows]),
            "in_lung_share": summary([r["in_lung_share"] for r in rows]),
        }
    every = [r for rows in scores.values() for r in rows]
    n = len(every)
    return {
        "method": (f"deletion score: drop of the predicted class's probability when the top {TOP_FRACTION:.0%} Grad-CAM "
                   f"pixels are replaced by a blurred copy, minus the mean drop over {RANDOM_MASKS} random masks of the "
                   "same size; in-lung share: Grad-CAM mass inside the lung mask / total (core.faithfulness)"),
        "evaluated_on": f"test, {n} images" + (f" (at most {limit} per class)" if limit else ""),
        "refused": refused,
        "no_heat": no_heat,
        "per_class": per_class,
        "all": {"n": n, "deletion_score": summary([r["deletion_score"] for r in every]),
                "in_lung_share": summary([r["in_lung_share"] for r in every])},
        "command": command,
    }


def score_split(pipeline, files: list[Path], targets, classes: list[str], gate, progress: bool = True):
    """Per true class, the faithfulness dicts of the images the app analysed; the refused and no-heat counts."""
    from tqdm import tqdm

    from core.guard import check_chest_xray
    from core.guard.image_kind import check_image_kind
    from core.io import load_image

    scores: dict[str, list[dict]] = {name: [] for name in classes}
    refused = no_heat = 0
    for path, target in tqdm(list(zip(files, targets)), desc="faithfulness", unit="image", disable=not progress):
        try:
            study = load_image(Path(path).read_bytes(), Path(path).name)
            study = check_image_kind(check_chest_xray(study), "chest-xray", gate) if gate else check_chest_xray(study)
            result = pipeline.analyse(study, explain=True, faithfulness=True)
        except (ChestReviewError, OSError):
            refused += 1
            continue
        if result.faithfulness is None or result.faithfulness["deletion_score"] is None:
            no_heat += 1
            continue
        scores[classes[int(target)]].append(result.faithfulness)
    return scores, refused, no_heat


def faithfulness(weights: Path, classifier: str, data: Path | None = None, limit: int | None = None,
                 progress: bool = True, write: bool = True) -> dict:
    """Score ``classifier``'s Grad-CAM on the test split through the app's pipeline; (``write``) store it on its card."""
    from core.guard.image_kind import open_gate
    from core.pipelines.cxr import CxrPipeline
    from core.registry import Registry
    from training.__main__ import load_records
    from training.served import task_for
    from training.tasks import select

    registry = Registry.open(Path(weights))
    card = registry.card(classifier)
    if card.task != "cxr-classification":
        raise FaithfulnessError(f"{card.name} is a {card.task} model; faithfulness scores X-ray classifiers only.")
    pipeline = CxrPipeline(registry, classifier=card.name)
    task = task_for(pipeline.classes)
    records = load_records([str(data)] if data else None)
    chosen, targets = select([r for r in records if r.split == "test"], task)
    if limit:
        counts: dict[int, int] = {}
        kept = []
        for record, target in zip(chosen, targets):
            counts[int(target)] = counts.get(int(target), 0) + 1
            if counts[int(target)] <= limit:
                kept.append((record, target))
        chosen, targets = [r for r, _ in kept], [t for _, t in kept]
    if not chosen:
        raise FaithfulnessError(f"The data pack has no test images for {card.name}'s classes.")
    scores, refused, no_heat = score_split(pipeline, [r.image for r in chosen], targets, pipeline.classes,
                                           open_gate(registry), progress)
    command = (f"python -m training faithfulness --weights {weights} --classifier {card.name}"
               + (f" --data {data}" if data else "") + (f" --limit {limit}" if limit else ""))
    entry = faithfulness_entry(scores, refused, no_heat, limit, command)
    if write:
        registry.write_card(replace(card, faithfulness=entry))
    return entry


def _cell(stats: dict) -> str:
    if not stats["n"]:
        return "-"
    return f"{stats['mean']:.3f} (median {stats['median']:.3f}, IQR {stats['q25']:.3f}-{stats['q75']:.3f})"


def format_faithfulness(name: str, entry: dict) -> str:
    lines = [(f"{name}: heat-map faithfulness on {entry['evaluated_on']} ({entry['refused']} refused, "
              f"{entry['no_heat']} with an all-zero Grad-CAM)"),
             f"{'class':<20} {'n':>4}  {'deletion score: mean (median, IQR)':<44} in-lung share: mean (median, IQR)"]
    rows = [*entry["per_class"].items(), ("all", entry["all"])]
    for cls, v in rows:
        lines.append(f"{cls:<20} {v['n']:>4}  {_cell(v['deletion_score']):<44} {_cell(v['in_lung_share'])}")
    return "\n".join(lines)
