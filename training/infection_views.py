"""Choose the served infection model's test-time views on val and write them on its card.

``python -m training infection-views --weights weights`` scores a few view sets (the model's own size; that
size mirrored too; one or two sizes 32 px either side, mirrored) by the mean per-slice Dice of the mask the CT
slice page shows (regions of p >= 0.5 touching the served lung mask) on the pack's ``val`` slices with
infection masks, and writes the best one (``core.pipelines.ct_slice.InfectionViews``) and every set's val Dice
on the card. Averaging views is test-time augmentation: the network is unchanged, each view costs one more
forward pass. Each slice's views are computed once and shared by the sets that use them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.imaging.ct_input import ct_model_pixels
from core.io import load_image
from core.lung import probability_to_shape
from core.pipelines.ct_slice import (
    MIN_LUNG_FRACTION,
    CtSlicePipeline,
    InfectionViews,
    infection_and_lungs,
    view_probabilities,
)
from core.preprocess import segmenter_input
from core.progress import progress_bar
from core.registry import Registry
from training.data import load_gray
from training.metrics import dice_iou

STEP = 32  # Inf-Net takes sides that are multiples of 32


def candidate_views(size: int) -> list[InfectionViews]:
    """From one forward pass to six, around the size the model was trained at (no side under 32 px)."""
    candidates = [InfectionViews((size,)), InfectionViews((size,), flip=True),
                  InfectionViews((size - STEP, size), flip=True), InfectionViews((size - STEP, size, size + STEP), flip=True),
                  InfectionViews((size - 2 * STEP, size - STEP, size), flip=True)]
    return [views for views in candidates if min(views.sizes) >= STEP]


def score_views(weights: Path, data: Path | None, split: str = "val") -> dict:
    """Mean per-slice Dice of the served mask on ``split`` for every candidate view set; refused slices score empty."""
    from training.ct_data import by_split, read_ct_infection_records
    from training.data import resolve_data_root

    pipeline = CtSlicePipeline(Registry.open(weights))
    card = pipeline.cards["infection"]
    candidates = candidate_views(card.input_size)
    every_view = InfectionViews(tuple(sorted({s for views in candidates for s in views.sizes})), flip=True)
    labelled = [r for r in read_ct_infection_records(resolve_data_root(data, ("ct_infection",))) if r.mask_kind == "binary"]
    records = by_split(labelled).get(split, [])
    if not records:
        raise InputError(f"The data pack has no {split} CT slices with an infection mask.")
    dice = np.zeros((len(records), len(candidates)))
    for row, record in enumerate(progress_bar(records, desc=f"infection views on {split}", leave=False)):
        target = load_gray(record.mask) > 0.5
        pixels = ct_model_pixels(load_image(Path(record.image).read_bytes(), Path(record.image).name))
        lung_mask = pipeline.lung_mask(pixels)
        if lung_mask.mean() < MIN_LUNG_FRACTION:  # the pipeline refuses the slice: an empty mask
            dice[row] = dice_iou(np.zeros_like(target), target)[0]
            continue
        maps = view_probabilities(pipeline.infection, lambda s, pixels=pixels: segmenter_input(pixels, s)[None], card.input_size,
                                  every_view)
        for column, views in enumerate(candidates):
            small = np.mean([maps[(s, f)] for s in views.sizes for f in (False, True)[: 1 + views.flip]], axis=0)[0]
            infected, _ = infection_and_lungs(probability_to_shape(small, pixels.shape), lung_mask)
            dice[row, column] = dice_iou(infected, target)[0]
    scores = [{"views": views.as_config(), "dice": float(dice[:, i].mean())} for i, views in enumerate(candidates)]
    return {"model": card.name, "version": card.version, "split": split, "n": len(records), "candidates": scores}


def chosen(scores: dict) -> InfectionViews:
    """The best val Dice; the fewer views when two sets tie to 3 decimals."""
    best = max(scores["candidates"], key=lambda c: (round(c["dice"], 3), -len(c["views"]["sizes"]) * (1 + c["views"]["flip"])))
    return InfectionViews.from_config(best["views"])


VIEWS_NOTE = "Test-time views"


def write_views(weights: Path, scores: dict) -> InfectionViews:
    """Put the chosen views, every candidate's val Dice and a line saying so on the infection model's card."""
    registry = Registry.open(weights)
    card = registry.card(scores["model"])
    views = chosen(scores)
    dice = {InfectionViews.from_config(c["views"]): c["dice"] for c in scores["candidates"]}
    one_view = candidate_views(card.input_size)[0]
    note = (f"{VIEWS_NOTE} (chosen on {scores['n']} {scores['split']} slices by `python -m training infection-views`): "
            f"the mean probability of the slice at {', '.join(f'{s} px' for s in views.sizes)}"
            f"{', each also mirrored left-right' if views.flip else ''}; {scores['split']} Dice of the served mask "
            f"{dice[views]:.3f} against {dice[one_view]:.3f} "
            "for the one view it was trained on. The CT volume page runs the one view (speed); the recipe's test figures "
            "are of the one view.")
    limitations = [line for line in card.limitations if not line.startswith(VIEWS_NOTE)] + [note]
    metrics = card.metrics | {"views_chosen_on": {k: scores[k] for k in ("split", "n", "candidates")}}
    registry.write_card(dataclasses.replace(card, input_config=card.input_config | {"views": views.as_config()},
                                            metrics=metrics, limitations=limitations))
    return views
