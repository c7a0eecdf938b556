"""The image-kind recipe end to end (smoke profile) on a generated pack, the export, and the served gate."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from core.guard.image_kind import IMAGE_KINDS, ImageKindGate
from core.phantoms import make_phantom
from core.preprocess import resize_square, segmenter_input
from core.registry import Registry
from tests.training.conftest import write_pack
from tests.training.ct_pack import write_ct_pack
from training.__main__ import main as training_main
from training.recipes import image_kind


@pytest.fixture
def kind_pack(tmp_path, monkeypatch):
    """X-ray phantoms (cxr) and drawn CT slices (ct_slices, ct_infection) in the pack's layout."""
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_pack(root)
    write_ct_pack(root)
    return root


def test_records_give_kinds_sources_and_usable_splits(kind_pack):
    records = image_kind.read_records(kind_pack)
    kinds = Counter(r.kind for r in records)
    assert kinds == {"chest-xray": 30, "chest-ct": 24 + 12 + 12 + 4}  # multiclass-train copies left out
    assert {r.split for r in records} == {"train", "val", "test"}  # unlabelled slices train
    assert {r.source for r in records if r.kind == "chest-ct"} == {
        "ct_slices/ucsd-covid-ct", "ct_slices/sarscov2-ct", "ct_infection/doctor-label",
        "ct_infection/ma2020-slices", "ct_infection/unlabelled"}
    capped = image_kind.capped(records, {"train": 2, "val": 1, "test": 1}, seed=0)
    per_key = Counter((r.source, r.split) for r in capped)
    assert max(count for (_, split), count in per_key.items() if split == "train") == 2
    assert capped == image_kind.capped(records, {"train": 2, "val": 1, "test": 1}, seed=0)


def test_photo_groups_never_straddle_splits_and_load_offline():
    photos, missing = image_kind.negative_photos()
    assert "astronaut" in photos and image_kind.photo_split("astronaut") == "test"
    assert set(image_kind.PHOTO_SPLITS) <= set(image_kind.PHOTO_LOADERS)
    assert {image_kind.photo_split(g) for g in photos} == {"train", "val", "test"}
    rng = np.random.default_rng(0)
    variant = image_kind.photo_variant(photos["astronaut"][0], rng, 64)
    assert variant.shape == (64, 64) and variant.dtype == np.uint8
    plain = image_kind.photo_variant(photos["astronaut"][0], rng, 64, plain=True)
    luma = photos["astronaut"][0] @ np.array([0.299, 0.587, 0.114]) / 255.0
    assert np.abs(plain.astype(float) - resize_square(luma.astype(np.float32), 64) * 255).max() <= 1


def test_recipe_trains_reports_and_exports_a_served_gate(tmp_path, kind_pack):
    run, weights = tmp_path / "run", tmp_path / "weights"
    training_main(["image-kind", "--profile", "smoke", "--data", str(kind_pack), "--out", str(run),
                   "--export", str(weights)])
    result = json.loads((run / "test.json").read_text())
    groups = result["data"]["photo_groups"]
    assert not (set(groups["train"]) & set(groups["test"])) and not (set(groups["val"]) & set(groups["test"]))
    sources = set(result["report"]["per_source"])
    assert "photo/astronaut" in sources and "cxr/synthetic-a" in sources and "ct_slices/sarscov2-ct" in sources
    assert not any(s.startswith("photo/camera") for s in sources)  # a training photo never in test
    phantom_sources = set(result["phantoms"]["per_source"])
    assert {f"phantom/cxr-{label}" for label in ("normal", "covid", "tb", "bacterial", "viral")} <= phantom_sources
    assert result["speed"]["images_per_second"] > 0
    report = (run / "report.md").read_text()
    for heading in ("Held-out test: confusion matrix", "per source collection", "Synthetic phantoms", "images/s",
                    "What the guard does"):
        assert heading in report, heading

    registry = Registry.open(weights)
    card = registry.default("image-kind")
    assert (card.name, card.classes, card.input_kind, card.output) == (
        "image-kind-gate", list(IMAGE_KINDS), "grey", "softmax")
    assert card.metrics["test"]["n"] == result["report"]["n"]
    gate = ImageKindGate(registry)
    study = make_phantom("normal", seed=3, size=64).to_study()
    served = gate.classify(study)
    profile = image_kind.PROFILES["smoke"]
    network = image_kind.load_gate(run, profile)
    with torch.no_grad():
        trained = torch.softmax(network(torch.from_numpy(segmenter_input(study.pixels, profile.size)[None])), 1)[0]
    assert np.allclose([served[k] for k in IMAGE_KINDS], trained.numpy(), atol=1e-5)


def test_training_batches_are_the_served_input(kind_pack):
    """The uint8 cache + min-max of ``prepare`` equals ``segmenter_input`` up to 8-bit quantisation."""
    pixels = make_phantom("tb", seed=2, size=80).pixels
    stored = torch.from_numpy(np.clip(resize_square(pixels, 64) * 255 + 0.5, 0, 255).astype(np.uint8)[None])
    (batch,) = image_kind.prepare((stored,), torch.device("cpu"), False)
    assert np.abs(batch[0].numpy() - segmenter_input(pixels, 64)).max() < 1.5 / 255 / np.ptp(resize_square(pixels, 64))
