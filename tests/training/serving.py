"""Checks that an exported classifier is served with exactly the inputs its recipe trained it on."""

import numpy as np

from core.lung import lung_mask_from_probability, lung_probability_small, probability_to_shape
from core.pipelines.cxr import classifier_inputs
from core.registry import Registry
from core.runtime import TorchModel
from training.data import load_gray


def served_inputs(registry: Registry, classifier: str, image_path) -> np.ndarray:
    """The first network input the app builds for ``image_path`` with ``classifier`` and its segmenter."""
    card = registry.card(classifier)
    seg_card = registry.card(card.segmenter)
    pixels = load_gray(image_path)
    small = lung_probability_small(pixels, TorchModel(registry.load_torch(seg_card), "cpu"), seg_card.input_size)
    reference = registry.load_array(card, "histogram_reference") if "histogram_reference" in card.files else None
    prob = probability_to_shape(small, pixels.shape)
    return classifier_inputs(card, pixels, small, prob, lung_mask_from_probability(prob), reference).arrays[0]
