"""Score a served classifier's heat map on the pack's test split and write it on the model card.

``python -m training faithfulness --weights W --classifier NAME [--data DIR] [--limit N] [--dry-run]``

Every test image goes the way the app sends it (decode, de-identify, guards, the image-kind gate, lung model,
classifier, Grad-CAM: ``CxrPipeline.analyse(..., faithfulness=True)``); per true class, the distribution of the
deletion score (the predicted class's probability drop when the 20 % hottest pixels are blurred, minus the drop
for 20 % random pixels) and of the in-lung share (the heat map's mass inside the lung mask), ``core.faithfulness``.
``--limit N`` takes the first N test images of each class (the pack's order). Images the app refuses are left out
(counted); so are images whose Grad-CAM is zero everywhere (counted as ``no_heat``). The card's ``faithfulness``
entry in ``W/manifest.json`` holds the result; the model card shows the per-class table.

X-ray classifiers (``cxr-classification``: Grad-CAM through ``CxrPipeline``) and the served CT slice classifier
(``ct-classification``: paper 002's heat map H, Eq. 1, through ``CtSlicePipeline``, deleting on the global branch's
input with the crops as served; the ``ct_slices`` test split as every CT recipe splits it). The CT volume models'
attention maps are scored in the dual-sampling recipe's report (overlap with the infection, share in the lungs).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.errors import ChestReviewError
from core.faithfulness import RANDOM_MASKS, READING, TOP_FRACTION, summary


class FaithfulnessError(ChestReviewError):
    """The classifier cannot be scored here (not an X-ray classifier, no test images)."""


def faithfulness_entry(scores: dict[str, list[dict]], refused: int, no_heat: int, limit: int | None,
                       command: str = "", heat_map: str = "Grad-CAM") -> dict:
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
        "heat_map": heat_map,
        "method": (f"deletion score: drop of the predicted class's probability when the top {TOP_FRACTION:.0%} heat-map "
                   f"pixels are replaced by a blurred copy, minus the mean drop over {RANDOM_MASKS} random masks of the "
                   "same size; in-lung share: heat-map mass inside the lung mask / total (core.faithfulness)"),
        "evaluated_on": f"test, {n} images" + (f" (at most {limit} per class)" if limit else ""),
        "refused": refused,
        "no_heat": no_heat,
        "per_class": per_class,
        "all": {"n": n, "deletion_score": summary([r["deletion_score"] for r in every]),
                "in_lung_share": summary([r["in_lung_share"] for r in every])},
        "command": command,
    }


def _analysed(task: str, pipeline, path: Path, gate):
    """The app's path for one file: decode, de-identify, guards, image-kind gate, the pipeline with faithfulness."""
    from core.guard import check_chest_xray, check_ct_slice
    from core.guard.image_kind import check_image_kind
    from core.io import load_image

    study = load_image(Path(path).read_bytes(), Path(path).name)
    if task == "ct-classification":
        study = check_image_kind(check_ct_slice(study), "chest-ct", gate) if gate else check_ct_slice(study)
        return pipeline.analyse(study, faithfulness=True)
    study = check_image_kind(check_chest_xray(study), "chest-xray", gate) if gate else check_chest_xray(study)
    return pipeline.analyse(study, explain=True, faithfulness=True)


def score_split(pipeline, files: list[Path], targets, classes: list[str], gate, progress: bool = True,
                task: str = "cxr-classification"):
    """Per true class, the faithfulness dicts of the images the app analysed; the refused and no-heat counts."""
    from core.progress import progress_bar

    scores: dict[str, list[dict]] = {name: [] for name in classes}
    refused = no_heat = 0
    for path, target in progress_bar(list(zip(files, targets)), desc="faithfulness", unit="image", disable=not progress):
        try:
            result = _analysed(task, pipeline, path, gate)
        except (ChestReviewError, OSError):
            refused += 1
            continue
        if result.faithfulness is None or result.faithfulness["deletion_score"] is None:
            no_heat += 1
            continue
        scores[classes[int(target)]].append(result.faithfulness)
    return scores, refused, no_heat


def _xray_split(registry, card, data: Path | None):
    """(pipeline, test files, class indices) of an X-ray classifier, its classes folded as its recipe did."""
    from core.pipelines.cxr import CxrPipeline
    from training.__main__ import load_records
    from training.served import task_for
    from training.tasks import select

    pipeline = CxrPipeline(registry, classifier=card.name)
    chosen, targets = select([r for r in load_records([str(data)] if data else None) if r.split == "test"],
                             task_for(pipeline.classes))
    return pipeline, [r.image for r in chosen], list(targets)


def _ct_slice_split(registry, card, data: Path | None):
    """(pipeline, test files, class indices) of the served CT slice classifier on ``ct_slices``."""
    from core.pipelines.ct_slice import CtSlicePipeline
    from training.calibration import CT_SLICE_LABELS
    from training.ct_data import read_ct_slice_records
    from training.data import resolve_data_root

    pipeline = CtSlicePipeline(registry)
    served = pipeline.cards.get("classifier")
    if served is None or served.name != card.name:
        raise FaithfulnessError(f"The CT slice page serves {served.name if served else 'no classifier'}, not {card.name}.")
    chosen = [r for r in read_ct_slice_records(resolve_data_root(data, ("ct_slices",)))
              if r.split == "test" and r.label in CT_SLICE_LABELS]
    return pipeline, [r.image for r in chosen], [card.classes.index(CT_SLICE_LABELS[r.label]) for r in chosen]


SPLITS = {"cxr-classification": _xray_split, "ct-classification": _ct_slice_split}


def faithfulness(weights: Path, classifier: str, data: Path | None = None, limit: int | None = None,
                 progress: bool = True, write: bool = True) -> dict:
    """Score ``classifier``'s heat map on the test split through the app's pipeline; (``write``) store it on its card."""
    from core.guard.image_kind import open_gate
    from core.registry import Registry

    registry = Registry.open(Path(weights))
    card = registry.card(classifier)
    if card.task not in SPLITS:
        raise FaithfulnessError(f"{card.name} is a {card.task} model; faithfulness scores the X-ray and CT slice "
                                "classifiers.")
    pipeline, files, targets = SPLITS[card.task](registry, card, Path(data) if data else None)
    if limit:
        counts: dict[int, int] = {}
        kept = []
        for path, target in zip(files, targets):
            counts[int(target)] = counts.get(int(target), 0) + 1
            if counts[int(target)] <= limit:
                kept.append((path, target))
        files, targets = [p for p, _ in kept], [t for _, t in kept]
    if not files:
        raise FaithfulnessError(f"The data pack has no test images for {card.name}'s classes.")
    scores, refused, no_heat = score_split(pipeline, files, targets, list(card.classes), open_gate(registry), progress,
                                           card.task)
    command = (f"python -m training faithfulness --weights {weights} --classifier {card.name}"
               + (f" --data {data}" if data else "") + (f" --limit {limit}" if limit else ""))
    entry = faithfulness_entry(scores, refused, no_heat, limit, command, HEAT_MAPS[card.task])
    if write:
        registry.write_card(replace(card, faithfulness=entry))
    return entry


HEAT_MAPS = {"cxr-classification": "Grad-CAM", "ct-classification": "heat map H (paper 002, Eq. 1)"}


def network_faithfulness(net, data, prepare, classes, device, single_logit: bool = False,
                         per_class: int | None = 100, lungs_are_nonzero: bool = False) -> dict:
    """A recipe report's faithfulness table: the trained ``net``'s Grad-CAM on its own test ``ArraySet``.

    As the app scores a case (``core.faithfulness``) but on the training arrays: the deletion score on the input
    grid, the in-lung share against the input's lung mask when the network takes one (MANet), or against the input's
    non-zero pixels for lung-only inputs (``lungs_are_nonzero``: HRNet's segmented images, black outside), else None.
    At most ``per_class`` images of each true class (the split's order) keep the report's cost to minutes.
    """
    import numpy as np
    import torch

    from core.explain import grad_cam
    from core.faithfulness import deletion_score, in_lung_share
    from training.classification import to_probabilities

    def predict(arrays):
        with torch.no_grad():
            return to_probabilities(net(*(torch.from_numpy(np.asarray(x)[None]).to(device) for x in arrays)))[0].cpu().numpy()

    net.eval()
    labels = data.labels.numpy()
    scores: dict[str, list[dict]] = {name: [] for name in classes}
    no_heat = 0
    for label in range(len(classes)):
        for index in np.flatnonzero(labels == label)[:per_class]:
            inputs = prepare(tuple(x[index:index + 1] for x in data.inputs), device, False)
            arrays = [x[0].detach().cpu().numpy() for x in inputs]
            predicted = int(np.argmax(predict(arrays)))
            heat = grad_cam(net, inputs[0], inputs[1] if len(inputs) > 1 else None, predicted, single_logit)
            if not np.any(heat > 0):
                no_heat += 1
                continue
            row = deletion_score(predict, arrays, heat, predicted)
            lungs = arrays[1][0] > 0 if len(arrays) > 1 else arrays[0][0] > 0 if lungs_are_nonzero else None
            row["in_lung_share"] = None if lungs is None else in_lung_share(heat, lungs)
            scores[classes[label]].append(row)
    entry = faithfulness_entry(scores, 0, no_heat, per_class, "the recipe's report (training arrays, trained network)")
    entry["evaluated_on"] = entry["evaluated_on"].replace("test,", "test arrays,")
    return entry


def add_faithfulness_table(report, title: str, entry: dict) -> None:
    """Per true class: deletion score and in-lung share, mean (median, IQR), into a recipe's ``reports.Report``."""
    rows = [[name, v["n"], _cell(v["deletion_score"]), _cell(v["in_lung_share"])]
            for name, v in [*entry["per_class"].items(), ("all", entry["all"])]]
    report.table(title, ["true class", "n", "deletion score: mean (median, IQR)", "in-lung share: mean (median, IQR)"], rows,
                 f"{entry['evaluated_on']}; {entry['no_heat']} all-zero maps ({entry.get('heat_map', 'Grad-CAM')}) left out. {READING}")


def _cell(stats: dict) -> str:
    if not stats["n"]:
        return "-"
    return f"{stats['mean']:.3f} (median {stats['median']:.3f}, IQR {stats['q25']:.3f}-{stats['q75']:.3f})"


def format_faithfulness(name: str, entry: dict) -> str:
    lines = [(f"{name}: heat-map faithfulness on {entry['evaluated_on']} ({entry['refused']} refused, "
              f"{entry['no_heat']} with an all-zero {entry.get('heat_map', 'Grad-CAM')})"),
             f"{'class':<20} {'n':>4}  {'deletion score: mean (median, IQR)':<44} in-lung share: mean (median, IQR)"]
    rows = [*entry["per_class"].items(), ("all", entry["all"])]
    for cls, v in rows:
        lines.append(f"{cls:<20} {v['n']:>4}  {_cell(v['deletion_score']):<44} {_cell(v['in_lung_share'])}")
    return "\n".join(lines)
