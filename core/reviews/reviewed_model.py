"""What a review records as "the model" when a prediction is the fusion of several models.

A review names one model (``model_name``, ``model_version``, ``weights_sha256``). Paper 004's
dual-sampling prediction is made by two models together (uniform and size-balanced sampling, fused
with Eq. 5), so its review names the pair: names and versions joined by ``+`` in the order given,
and the SHA-256 of their weight digests joined the same way. The same two weight files always give
the same identity, and a change to either gives another one; each file's own digest stays on its
model card.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from core.reviews.schema import MODEL_FIELD_MAX

FUSION_NAME = "dual-sampling-fusion"  # when the joined names do not fit the review log's column


@dataclass(frozen=True)
class ReviewedModel:
    """The fields of a model card a review records (``pages.common.review_form`` reads these)."""

    name: str
    version: str
    weights_sha256: str
    classes: tuple[str, ...]


def reviewed_model(cards: Sequence) -> ReviewedModel:
    """One card as it is; several cards (same classes) as their fusion, named by all of them."""
    if not cards:
        raise ValueError("A reviewed model needs at least one model card.")
    classes = tuple(cards[0].classes)
    if any(tuple(card.classes) != classes for card in cards):
        raise ValueError("Fused models must predict the same classes.")
    if len(cards) == 1:
        card = cards[0]
        return ReviewedModel(card.name, card.version, card.weights_sha256, classes)
    name = "+".join(card.name for card in cards)
    version = "+".join(card.version for card in cards)
    digests = "+".join(card.weights_sha256 for card in cards)
    return ReviewedModel(
        name=name if len(name) <= MODEL_FIELD_MAX else FUSION_NAME,
        version=version if len(version) <= MODEL_FIELD_MAX else hashlib.sha256(version.encode()).hexdigest()[:16],
        weights_sha256=hashlib.sha256(digests.encode()).hexdigest(),
        classes=classes,
    )
