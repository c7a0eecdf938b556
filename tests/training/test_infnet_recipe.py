"""The infnet recipe end to end on a generated CT pack: Inf-Net, the Semi-Inf-Net loop, the multi-class head."""

import dataclasses
import json

import pytest
import torch

from core.errors import ModelError
from training.__main__ import main as training_main
from training.recipes import infnet
from tests.training.ct_pack import write_ct_pack


def test_infnet_smoke_run_trains_every_stage_and_reports(tmp_path):
    pack = write_ct_pack(tmp_path / "pack", medseg=20, unlabelled=8)  # MedSeg: 10 test, 5 val, 5 train
    run = tmp_path / "run"
    training_main(["infnet", "--profile", "smoke", "--data", str(pack), "--out", str(run)])

    results = json.loads((run / "results.json").read_text())
    for model in ("Inf-Net", "Semi-Inf-Net"):
        assert results[model]["n"] == 3 + 10  # ma2020 test slices + the MedSeg hold-out
        assert set(results[model]["per_group"]) == {"doctor-label", "ma2020-slices"}
        assert 0.0 <= results[model]["dice"] <= 1.0
    # Algorithm 1: 8 unlabelled slices, 4 per round -> two rounds, each adding 4 pseudo-labelled slices
    assert [r["training_slices"] for r in results["semi_rounds"]] == [results["sizes"]["binary"]["train"] + 4,
                                                                      results["sizes"]["binary"]["train"] + 8]
    assert set(results["multiclass"]) >= {"ggo", "consolidation", "n"}
    report = (run / "report.md").read_text()
    assert "Inf-Net Table II shape" in report and "Semi-Inf-Net rounds" in report
    assert results["images_per_second"] > 0

    # The same command again resumes a finished run: nothing trains, the speed measured before is still reported.
    training_main(["infnet", "--profile", "smoke", "--data", str(pack), "--out", str(run)])
    assert json.loads((run / "results.json").read_text())["images_per_second"] == results["images_per_second"]
    assert "nan images/s" not in (run / "report.md").read_text()


def test_export_gives_binary_and_multiclass_cards_the_ct_pipeline_serves(tmp_path, capsys):
    from core.ct_phantoms import make_ct_phantom
    from core.pipelines.ct_slice import CtSlicePipeline
    from core.registry import Registry
    from tests.conftest import build_tiny_ct_registry

    pack = write_ct_pack(tmp_path / "pack", medseg=20, unlabelled=4)
    run, weights = tmp_path / "run", tmp_path / "weights"
    training_main(["infnet", "--profile", "smoke", "--data", str(pack), "--out", str(run), "--set", "semi_k=4"])
    training_main(["export", str(run), "--weights", str(weights)])
    registry = Registry.open(weights)
    binary, multiclass = registry.card("ct-infection-infnet"), registry.card("ct-infection-multiclass")
    assert binary.classes == ["infection"] and binary.metrics["model"] in ("Inf-Net", "Semi-Inf-Net")
    assert multiclass.classes == ["background", "ggo", "consolidation"]

    # served next to toy lung and classifier models: the exported files load and run in the app's pipeline
    build_tiny_ct_registry(tmp_path / "toy")
    toy = Registry.open(tmp_path / "toy")
    for card in (registry.card("ct-infection-infnet"), registry.card("ct-infection-multiclass")):
        for entry in card.files.values():
            (tmp_path / "toy" / entry.path).write_bytes((weights / entry.path).read_bytes())
        toy.write_card(card)
    toy = Registry.open(tmp_path / "toy")
    toy_classifier = toy.card("tiny-ct-fusion")
    toy.write_card(type(toy_classifier)(**{**toy_classifier.__dict__,
                                           "input_config": {**toy_classifier.input_config, "infection_model": "ct-infection-infnet"}}))
    pipeline = CtSlicePipeline(Registry.open(tmp_path / "toy"))
    assert pipeline.cards["infection"].name == "ct-infection-infnet"
    result = pipeline.analyse(make_ct_phantom("covid", seed=0, size=96).to_study())
    assert result.burden.ggo_fraction is not None

    # The infection Dice of the mask the page shows, through the same pipeline, from the command line.
    assert training_main(["served-accuracy", "--weights", str(tmp_path / "toy"), "--classifier", "ct-infection-infnet",
                          "--data", str(pack), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert "mean Dice of the app's infection mask" in printed and f"on {3 + 10} test slices" in printed
    assert "doctor-label: n=10" in printed and "ma2020-slices: n=3" in printed
    assert "Inf-Net protocol on the served probability, all" in printed
    assert "multiclass as served, 10 test slices: ggo Dice" in printed

    # Test-time views chosen on val, written on the card, then served (the ONNX graph takes any size).
    assert training_main(["infection-views", "--weights", str(tmp_path / "toy"), "--data", str(pack)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("val Dice") == 4 and "chosen:" in printed  # 64 px: the set reaching down to 0 px is left out
    card = Registry.open(tmp_path / "toy").card("ct-infection-infnet")
    candidates = card.metrics["views_chosen_on"]["candidates"]
    best = max(candidates, key=lambda c: round(c["dice"], 3))
    assert round(best["dice"], 3) == round(max(c["dice"] for c in candidates), 3)
    assert card.input_config["views"] in [c["views"] for c in candidates]
    assert sum(line.startswith("Test-time views") for line in card.limitations) == 1
    assert training_main(["served-accuracy", "--weights", str(tmp_path / "toy"), "--classifier", "ct-infection-infnet",
                          "--data", str(pack), "--split", "test"]) == 0

    # Progressive resizing: a later run's stage 1 starts from the exported card's verified weights, at any size.
    profile = dataclasses.replace(infnet.PROFILES["smoke"], size=96, init_model="ct-infection-infnet",
                                  models_dir=str(weights))
    model = infnet.build(profile, in_channels=1, num_classes=1)
    assert infnet.warm_start(model, profile) == {"name": "ct-infection-infnet", "version": binary.version,
                                                 "sha256": binary.weights_sha256}
    served = registry.load_torch(binary).state_dict()
    assert all(torch.equal(value, served[name].float()) for name, value in model.state_dict().items())
    with pytest.raises(ModelError, match="same architecture"):
        infnet.warm_start(infnet.build(profile, "infnet"), dataclasses.replace(profile, arch="infnet"))
    training_main(["infnet", "--profile", "smoke", "--data", str(pack), "--out", str(tmp_path / "warm"),
                   "--set", "semi_k=4", "--set", "size=96", "--set", "init_model=ct-infection-infnet",
                   "--set", f"models_dir={weights}"])
    results = json.loads((tmp_path / "warm" / "results.json").read_text())
    assert results["started_from"]["sha256"] == binary.weights_sha256
    assert binary.weights_sha256 in (tmp_path / "warm" / "report.md").read_text()
