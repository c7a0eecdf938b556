"""``python -m training faithfulness``: heat-map deletion score and in-lung share on test, written on the card.

A tiny random-weight registry (copied: the command rewrites the manifest) on the tiny synthetic pack.
"""

import shutil

import pytest

from core.model_card import card_markdown
from core.registry import Registry
from training.__main__ import main
from training.faithfulness import faithfulness_entry, format_faithfulness


@pytest.fixture
def registry_copy(tiny_registry_dir, tmp_path):
    return shutil.copytree(tiny_registry_dir, tmp_path / "registry")


def scores(*pairs):
    return [{"deletion_score": d, "in_lung_share": s} for d, s in pairs]


def test_entry_and_card_table_from_hand_made_scores():
    entry = faithfulness_entry({"covid": scores((0.4, 0.9), (0.2, 0.7)), "normal": scores((0.0, 0.5)), "viral": []},
                               refused=1, no_heat=2, limit=40, command="cmd")
    assert entry["per_class"]["covid"]["n"] == 2
    assert entry["per_class"]["covid"]["deletion_score"]["mean"] == pytest.approx(0.3)
    assert entry["per_class"]["covid"]["in_lung_share"]["mean"] == pytest.approx(0.8)
    assert entry["per_class"]["viral"]["deletion_score"]["n"] == 0
    assert entry["all"]["n"] == 3 and entry["all"]["in_lung_share"]["mean"] == pytest.approx(0.7)
    assert entry["evaluated_on"] == "test, 3 images (at most 40 per class)" and entry["refused"] == 1 and entry["no_heat"] == 2
    printed = format_faithfulness("m", entry)
    assert "covid" in printed and "0.300" in printed and "2 with an all-zero Grad-CAM" in printed


def test_the_command_writes_the_entry_and_the_card_shows_it(synthetic_pack, registry_copy, capsys):
    args = ["faithfulness", "--weights", str(registry_copy), "--classifier", "tiny-cls", "--data", str(synthetic_pack)]
    manifest = (registry_copy / "manifest.json").read_text()
    assert main([*args, "--dry-run", "--limit", "1"]) == 0
    assert (registry_copy / "manifest.json").read_text() == manifest
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "heat-map faithfulness on test" in printed and "wrote the faithfulness of tiny-cls" in printed
    registry = Registry.open(registry_copy)
    entry = registry.card("tiny-cls").faithfulness
    card = registry.card("tiny-cls")
    assert set(entry["per_class"]) == set(card.classes)
    # the synthetic pack: 10 test images; random weights may leave some Grad-CAMs all zero
    assert entry["all"]["n"] + entry["refused"] + entry["no_heat"] == 10
    assert registry.card("tiny-lung-only").faithfulness is None  # only the named card changes
    markdown = card_markdown(card)
    assert "Heat-map faithfulness" in markdown and "in-lung share: mean (median)" in markdown
    assert "Heat-map faithfulness" not in card_markdown(registry.card("tiny-lung-only"))


def test_refuses_a_non_xray_classifier(tiny_registry_dir, capsys):
    registry = Registry.open(tiny_registry_dir)
    lung = next(c for c in registry.cards("lung-segmentation"))
    assert main(["faithfulness", "--weights", str(tiny_registry_dir), "--classifier", lung.name, "--dry-run"]) == 2
    assert "scores the X-ray and CT slice classifiers" in capsys.readouterr().err


def test_the_ct_slice_classifier_heat_map_is_scored(tiny_ct_registry_dir, tmp_path, monkeypatch):
    from tests.training.ct_pack import write_ct_pack

    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    pack = write_ct_pack(tmp_path / "data")
    registry_dir = shutil.copytree(tiny_ct_registry_dir, tmp_path / "registry")
    assert main(["faithfulness", "--weights", str(registry_dir), "--classifier", "tiny-ct-fusion", "--data", str(pack),
                 "--limit", "1"]) == 0  # one test slice per class: the fusion model's six passes each take seconds
    card = Registry.open(registry_dir).card("tiny-ct-fusion")
    entry = card.faithfulness
    assert set(entry["per_class"]) == set(card.classes) and entry["heat_map"].startswith("heat map H")
    assert entry["all"]["n"] > 0 and entry["all"]["n"] + entry["refused"] + entry["no_heat"] == 2
    assert "heat map H (paper 002" in card_markdown(card)
