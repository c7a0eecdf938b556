"""Score a registry classifier through the app's own pipeline on a data split.

``python -m training served-accuracy --weights weights --classifier covid-cxnet-binary`` checks that
serving (decode -> lung model -> input building -> ONNX Runtime) reproduces the recipe's test figure.
For the CT slice classifier (``--classifier ct-multisource-densenet169``) the slices go through the CT slice
pipeline (lungs, infection, the four branches) and the AUC is given too, overall and per source. For the CT
infection model (``--classifier ct-infection-infnet``) it gives the mean per-slice Dice of the infection mask the
CT slice page shows (regions of p >= 0.5 touching the served lung mask) on the pack's ``ct_infection`` slices
with masks, Inf-Net's table of the served probability, and the ground glass / consolidation Dice of the labels
the page shows on the multi-class slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from core.errors import ChestReviewError, InputError, ModelError
from core.pipelines.cxr import CxrPipeline
from core.progress import progress_bar
from core.registry import Registry
from core.study import Study
from training.data import load_gray
from training.tasks import TASKS, select


def task_for(classes: list[str]):
    """The task whose classes are the card's, in the same order."""
    for task in TASKS.values():
        if list(task.classes) == list(classes):
            return task
    raise ValueError(f"no training task has the classes {classes}")


def served_ct_slice_scores(weights: Path, classifier: str, data: Path | None, split: str = "test") -> dict:
    """Accuracy and AUC of the served CT slice classifier on one split of the pack's ``ct_slices``, overall and per
    source; a refused slice counts as wrong and is left out of the AUC."""
    from core.batch import predict_rows
    from core.guard.image_kind import open_gate
    from core.pipelines.ct_slice import CtSlicePipeline
    from training.calibration import CT_SLICE_LABELS
    from training.ct_data import read_ct_slice_records
    from training.data import resolve_data_root

    registry = Registry.open(weights)
    pipeline = CtSlicePipeline(registry)
    card = pipeline.cards.get("classifier")
    if card is None or card.name != classifier:
        raise ModelError(f"The CT slice page serves {card.name if card else 'no classifier'}, not {classifier}.")
    chosen = [r for r in read_ct_slice_records(resolve_data_root(data, ("ct_slices",)))
              if r.split == split and r.label in CT_SLICE_LABELS]
    rows = list(predict_rows("ct-slice", pipeline, [r.image for r in chosen], open_gate(registry)))
    analysed = [i for i, row in enumerate(rows) if row["status"] == "ok"]
    targets = np.array([card.classes.index(CT_SLICE_LABELS[chosen[i].label]) for i in analysed], dtype=np.int64)
    prob = np.array([float(rows[i]["prob_covid"]) for i in analysed])
    sources = np.array([chosen[i].source for i in analysed])
    positive = card.classes.index("covid")

    def scores(pick: np.ndarray) -> dict:
        covid = targets[pick] == positive
        auc = float(roc_auc_score(covid, prob[pick])) if 0 < covid.sum() < pick.sum() else float("nan")
        return {"n": int(pick.sum()), "accuracy": float(((prob[pick] >= 0.5) == covid).mean()), "auc": auc}

    return {"classifier": card.name, "n": len(chosen), "refused": len(chosen) - len(analysed),
            "served_accuracy": float(((prob >= 0.5) == (targets == positive)).sum() / len(chosen)) if chosen else float("nan"),
            "auc": scores(np.ones(len(analysed), bool))["auc"],
            "per_source": {source: scores(sources == source) for source in sorted(set(sources))},
            "card_accuracy": card.metrics.get("test", {}).get("accuracy")}


def served_infection_dice(weights: Path, infection_model: str, data: Path | None, split: str = "test") -> dict:
    """Mean per-slice Dice of the served infection mask (``app``: the regions touching the lung mask, as shown;
    ``unrestricted``: the probability threshold alone), overall and per subset; a slice the pipeline refuses (no
    lungs) scores as an empty mask. ``protocol``: Inf-Net's table of the served probability (its test-time views
    included), refused slices left out."""
    from core.io import load_image
    from core.pipelines.ct_slice import INFECTION_THRESHOLD, CtSlicePipeline
    from training.ct_data import by_split, read_ct_infection_records
    from training.data import resolve_data_root
    from training.metrics import dice_iou, infection_metrics, infection_table

    pipeline = CtSlicePipeline(Registry.open(weights))
    if pipeline.cards["infection"].name != infection_model:
        raise ModelError(f"The CT slice page serves the infection model {pipeline.cards['infection'].name}, "
                         f"not {infection_model}.")
    records = read_ct_infection_records(resolve_data_root(data, ("ct_infection",)))
    chosen = by_split([r for r in records if r.mask_kind == "binary"]).get(split, [])
    if not chosen:
        raise InputError(f"The data pack has no {split} CT slices with an infection mask.")
    rows, refused, protocol, subsets = [], 0, [], []
    for record in progress_bar(chosen, desc=f"serving {infection_model}", leave=False):
        target = load_gray(record.mask) > 0.5
        try:
            result = pipeline.analyse(load_image(Path(record.image).read_bytes(), Path(record.image).name))
            app, unrestricted = result.infection_labels > 0, result.infection_probability >= INFECTION_THRESHOLD
            protocol.append(infection_metrics(result.infection_probability, target, INFECTION_THRESHOLD))
            subsets.append(record.subset)
        except ChestReviewError:
            refused += 1
            app = unrestricted = np.zeros_like(target)
        rows.append((record.subset, dice_iou(app, target)[0], dice_iou(unrestricted, target)[0]))

    def means(picked: list) -> dict:
        return {"n": len(picked), "app": float(np.mean([r[1] for r in picked])),
                "unrestricted": float(np.mean([r[2] for r in picked]))}

    return {"model": infection_model, "n": len(chosen), "refused": refused, **means(rows),
            "per_subset": {subset: means([r for r in rows if r[0] == subset]) for subset in sorted({r[0] for r in rows})},
            "protocol": infection_table(protocol, subsets), "multiclass": served_multiclass_dice(pipeline, records, split)}


def served_multiclass_dice(pipeline, records: list, split: str) -> dict | None:
    """Ground glass / consolidation Dice of the labels the CT slice page shows (the multi-class head inside the
    served infection mask, test-time views included) on ``split``'s multi-class slices; None without the head
    or such slices (``records``: the pack's ``ct_infection`` records). A refused slice counts as all background."""
    from core.io import load_image
    from training.ct_data import MULTICLASS_LABELS, by_split
    from training.data import load_label_map
    from training.metrics import multiclass_dice_report

    chosen = by_split([r for r in records if r.mask_kind == "multiclass"]).get(split, [])
    if "multiclass" not in pipeline.cards or not chosen:
        return None
    preds, targets = [], []
    for record in progress_bar(chosen, desc="serving the multi-class head", leave=False):
        targets.append(load_label_map(record.mask))
        try:
            preds.append(pipeline.analyse(load_image(Path(record.image).read_bytes(), Path(record.image).name)).infection_labels)
        except ChestReviewError:
            preds.append(np.zeros_like(targets[-1]))
    return multiclass_dice_report(preds, targets, MULTICLASS_LABELS) | {"model": pipeline.cards["multiclass"].name,
                                                                         "n": len(chosen)}


def served_accuracy(weights: Path, classifier: str | None, records, split: str = "test") -> dict:
    pipeline = CxrPipeline(Registry.open(weights), backend="auto", classifier=classifier)
    chosen, labels = select([r for r in records if r.split == split], task_for(pipeline.classes))
    predicted, refused = [], 0
    for record in progress_bar(chosen, desc=f"serving {pipeline.cls_card.name}", leave=False):
        try:
            result = pipeline.analyse(Study(load_gray(record.image), "png"), explain=False)
        except ChestReviewError:  # no lungs found: a wrong answer, counted
            predicted.append(-1)
            refused += 1
            continue
        predicted.append(pipeline.classes.index(result.predicted_label))
    return {"classifier": pipeline.cls_card.name, "n": len(chosen), "refused": refused,
            "served_accuracy": float(np.mean(np.array(predicted) == labels)) if chosen else float("nan"),
            "card_accuracy": pipeline.cls_card.metrics.get("test", {}).get("accuracy")}
