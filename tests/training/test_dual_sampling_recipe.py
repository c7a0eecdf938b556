"""The dual-sampling recipe (paper 004) end to end on tiny synthetic volumes: 2 folds x 3 models, the DS
fusion, Tables II and III, the attention overlap and figure, the uint8 cache, and an export the registry
serves (the served network gives the recipe's probabilities on the cached inputs)."""

import json

import numpy as np
import pytest
import torch

from core.imaging.infection_burden import dual_sampling_probability
from core.imaging.volume_input import classifier_input, quantise
from core.model_card import card_markdown
from core.registry import Registry
from training.__main__ import main as training_main
from training.recipes import dual_sampling
from training.volume_data import build_volume_set, synthetic_records, synthetic_volume


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dual_sampling")
    run, weights = tmp / "run", tmp / "weights"
    threads = torch.get_num_threads()
    # One thread: on a busy 2-core machine two spinning threads make these tiny steps far slower.
    training_main(["--threads", "1", "dual-sampling", "--profile", "smoke", "--out", str(run), "--export", str(weights)])
    torch.set_num_threads(threads)
    return {"run": run, "weights": weights}


def test_every_fold_trains_three_models_with_best_and_last_checkpoints(trained_run):
    run = trained_run["run"]
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "dual-sampling" and config["profile"] == "smoke"
    for fold in (0, 1):
        for name in dual_sampling.MODELS:
            folder = run / f"fold{fold}" / name
            assert (folder / "best.pt").is_file() and (folder / "last.pt").is_file()
            assert len((folder / "log.csv").read_text().splitlines()) == 1 + 2  # header + 2 epochs
        result = json.loads((run / f"fold{fold}" / "result.json").read_text())
        assert set(result["scores"]["test"]) == set(dual_sampling.ROWS)
        assert not set(result["train"]) & set(result["val"])


def test_dual_sampling_is_eq_5_of_the_us_and_ss_probabilities(trained_run):
    run = trained_run["run"]
    stored = np.load(run / "fold0" / "predictions.npz")
    facts = json.loads((run / "cache" / "volumes.json").read_text())["facts"]
    for position, i in enumerate(stored["test_index"]):
        expected = dual_sampling_probability(stored["test_att-us"][position], stored["test_att-ss"][position],
                                             facts[i]["infection_ratio"])
        assert stored["test_att-ds"][position] == pytest.approx(expected)


def test_report_has_tables_ii_and_iii_overlap_and_figures(trained_run):
    run = trained_run["run"]
    report = (run / "report.md").read_text()
    for heading in ("Table II", "Table III", "Attention vs infection", "Size-balanced sampling", "Speed",
                    "Exported pair", "Volumes per set"):
        assert heading in report, heading
    for row in ("RN34 + US", "Attention RN34 + US", "Attention RN34 + SS", "Attention RN34 + DS"):
        assert row in report
    assert "0.944" in report  # the paper's DS test AUC beside ours
    for figure in ("attention.png", "curves.png"):
        assert (run / figure).is_file(), figure
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["table2"]) == {"val_pooled", "val", "test"}
    assert set(summary["table3"]) == {"small", "medium", "large"}
    assert set(summary["overlap"]) == set(dual_sampling.MODELS)
    assert summary["synthetic"] is True
    assert summary["table2"]["test"]["att-ds"]["auc"]["n"] in (0, 2)  # one value per fold (none where undefined)


def test_inputs_are_cached_once_as_uint8_and_match_the_serving_code(trained_run, monkeypatch):
    run = trained_run["run"]
    profile = dual_sampling.PROFILES["smoke"]
    inputs = np.load(run / "cache" / "inputs.npy", mmap_mode="r")
    masks = np.load(run / "cache" / "masks.npy", mmap_mode="r")
    assert inputs.dtype == np.uint8 and inputs.shape == (12, *profile.shape)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    records = synthetic_records(profile.synthetic_tv, profile.synthetic_test, seed_tv=0, seed_test=1_000_000)
    phantom = synthetic_volume(records[0].label, records[0].seed, profile.synthetic_shape, profile.synthetic_spacing)
    served, _ = classifier_input(phantom.hu, phantom.lung_mask | (phantom.infection_mask > 0), phantom.spacing_mm,
                                 profile.shape, profile.factor)
    assert np.array_equal(quantise(served), inputs[0])

    def no_regeneration(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr("training.volume_data.synthetic_volume", no_regeneration)
    again = build_volume_set(records, run / "cache", dual_sampling.input_settings(profile))
    assert np.array_equal(np.asarray(again.inputs), np.asarray(inputs))


def test_export_gives_two_synthetic_cards_that_reproduce_the_recipe(trained_run):
    registry = Registry.open(trained_run["weights"])
    cards = registry.cards("ct-volume-classification")
    assert {c.input_config["sampling"] for c in cards} == {"uniform", "size-balanced"}
    summary = json.loads((trained_run["run"] / "summary.json").read_text())
    fold = summary["selected_fold"]
    stored = np.load(trained_run["run"] / f"fold{fold}" / "predictions.npz")
    inputs = np.load(trained_run["run"] / "cache" / "inputs.npy", mmap_mode="r")
    test = stored["test_index"]
    x = torch.from_numpy(np.stack([inputs[i] for i in test]))[:, None].float() / 255
    size = 0
    for card in cards:
        assert card.classes == ["cap", "covid"] and card.output == "sigmoid" and card.input_kind == "volume"
        assert card.synthetic and any("SYNTHETIC" in line for line in card.limitations)
        assert "--profile paper --data DATA" in card.training_command
        assert card.input_config["shape"] == [16, 32, 32] and card.input_config["factor"] == 8.0
        assert card.architecture == "resnet3d34_attention" and card.metrics["fold"] == fold
        assert "masks from the generator (ground truth)" in card.training_data  # the smoke profile's masks
        calibration = card.calibration  # T fitted on the fold's validation volumes, scored on the test set
        assert calibration["temperature"] > 0 and calibration["fitted_on"].startswith(f"validation volumes of fold {fold}")
        assert calibration["evaluated_on"] == f"test volumes, {len(test)} volumes"
        shown = card_markdown(card)  # the page shows every card: its scores must render
        assert "16 × 32 × 32 voxels" in shown and "dual-sampling fusion, test" in shown and "mean ± std of 2 folds" in shown
        model = registry.load_torch(card)
        with torch.no_grad():
            served = torch.sigmoid(model(x)[:, 0]).numpy()
        name = "att-us" if card.input_config["sampling"] == "uniform" else "att-ss"
        assert np.allclose(served, stored[f"test_{name}"], atol=0.01)
        size += registry.verified_path(card, "pytorch").stat().st_size
    assert size < 20 * 2**20


def test_a_rerun_reuses_the_finished_folds(trained_run, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(dual_sampling, "train_model", no_training)
    threads = torch.get_num_threads()
    result = dual_sampling.run(None, trained_run["run"], "smoke")
    torch.set_num_threads(threads)
    assert len(result["folds"]) == 2


def test_batch_norm_recalibration_averages_the_given_volumes_and_keeps_the_weights():
    from types import SimpleNamespace

    from models import create_model

    torch.manual_seed(0)
    model = create_model("resnet3d34_attention", width=4).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    volumes = torch.rand(6, 1, 16, 32, 32)
    data = SimpleNamespace(batch=lambda index, device: (volumes[torch.as_tensor(index)], None))
    dual_sampling.recalibrate_batch_norm(model, data, np.arange(6), "cpu", batch=3)
    assert not model.training
    with torch.no_grad():
        stem = model.stem[0](volumes)
    halves = [stem[:3].mean(dim=(0, 2, 3, 4)), stem[3:].mean(dim=(0, 2, 3, 4))]
    assert torch.allclose(model.stem[1].running_mean, (halves[0] + halves[1]) / 2, atol=1e-5)
    assert model.stem[1].momentum == 0.1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
