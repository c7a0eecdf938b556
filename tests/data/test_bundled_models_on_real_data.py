"""The bundled models on the real data pack's test split (skipped when ../shared/data is absent).

A stratified sample keeps this under a minute on a 2-core CPU; the full figures are in the model
cards, produced by the training command.
"""

import random

import numpy as np
import pytest

from core.classes import MANET_CLASSES
from core.errors import UnsupportedInputError
from core.pipelines.cxr import CxrPipeline
from core.registry import Registry
from core.study import Study
from tests.conftest import DATA
from training.data import load_gray, read_cxr_records
from training.metrics import dice_iou

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not (DATA / "cxr" / "labels.csv").is_file(), reason="real data pack not present"),
]


@pytest.fixture(scope="module")
def pipeline(bundled_weights_dir):
    return CxrPipeline(Registry.open(bundled_weights_dir))


@pytest.fixture(scope="module")
def test_records():
    return [r for r in read_cxr_records(DATA) if r.split == "test"]


def test_lung_masks_match_the_ground_truth(pipeline, test_records):
    with_mask = random.Random(0).sample([r for r in test_records if r.lung_mask], 30)
    dices, refused = [], 0
    for record in with_mask:
        try:
            result = pipeline.analyse(Study(pixels=load_gray(record.image), file_format="jpeg"), explain=False)
        except UnsupportedInputError:  # the segmenter found no lungs: counts as a total miss
            refused += 1
            dices.append(0.0)
            continue
        dices.append(dice_iou(result.lung_mask, load_gray(record.lung_mask) > 0.5)[0])
    assert refused <= 1
    assert np.mean(dices) > 0.88


def test_five_class_accuracy_on_a_stratified_sample(pipeline, test_records):
    rng = random.Random(0)
    sample = [r for label in MANET_CLASSES for r in rng.sample([x for x in test_records if x.label == label], 12)]
    correct = 0
    for record in sample:
        result = pipeline.analyse(Study(pixels=load_gray(record.image), file_format="jpeg"), explain=False)
        correct += result.predicted_label == record.label
    # Balanced sample: chance is 0.2; the bundled model's test macro recall is about 0.70.
    assert correct / len(sample) > 0.6


@pytest.mark.parametrize("classifier", ["covid-cxnet-binary", "covid-cxnet-three"])
def test_served_covid_cxnet_reproduces_its_recipe_test_accuracy(bundled_weights_dir, test_records, classifier):
    """Serving (image -> lung UNet -> crop -> CLAHE/BEASF -> ONNX) must score what the recipe measured in training."""
    from training.served import served_accuracy

    result = served_accuracy(bundled_weights_dir, classifier, test_records)
    card = Registry.open(bundled_weights_dir).card(classifier).metrics["test"]
    assert result["n"] == card["n"] and result["refused"] == 0
    assert abs(result["served_accuracy"] - card["accuracy"]) < 0.005
