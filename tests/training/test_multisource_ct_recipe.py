"""The multisource-ct recipe (paper 002) end to end on a generated CT-slice pack with tiny random
infection and lung models from a registry: four branches trained G -> H -> I -> F with the earlier ones
frozen, the report's tables and figures, and an export the registry and the CT pipeline serve."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.ct_phantoms import make_ct_phantom
from core.imaging.windowing import LUNG, apply_window
from core.registry import ModelCard, Registry, WeightFile, sha256_of
from models import create_model
from training.__main__ import main as training_main

COLUMNS = ["image", "label", "source", "source_file", "patient_id", "split", "width", "height"]
STAGE_ORDER = ["global", "heatmap", "infected", "fusion", "global+heatmap"]


def write_slice_pack(root, count=48, size=64):
    """``root/ct_slices``: lung-window 8-bit phantoms, two thirds UCSD-like (patient ids, one
    ``official-train-val`` split), one third SARS-CoV-2-like (its own train/val/test)."""
    folder = root / "ct_slices"
    rows = []
    for index in range(count):
        label = ("covid", "non-covid")[index % 2]
        pixels = (apply_window(make_ct_phantom(label, seed=index, size=size).hu, LUNG) * 255).astype(np.uint8)
        if index % 3:
            source, patient, split = "ucsd-covid-ct", f"ucsd-p{index // 2}", "official-train-val"
        else:
            source, patient, split = "sarscov2-ct", f"sarscov2-{index}", ("train", "val", "test", "train")[index // 3 % 4]
        name = f"images/{source}/{source}__{label}__{index}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)
        rows.append({"image": name, "label": label.replace("-", ""), "source": source, "source_file": f"{index}.png",
                     "patient_id": patient, "split": split, "width": size, "height": size})
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def add_card(registry_dir, model, name, task, arch, config, classes, size):
    path = registry_dir / f"{name}.pt"
    torch.save(model.state_dict(), path)
    card = ModelCard(name=name, version="0", task=task, architecture=arch, architecture_config=config, classes=classes,
                     input_size=size, preprocessing="test fixture", files={"pytorch": WeightFile(path.name, sha256_of(path))},
                     training_data="none (random weights)", training_command="-", input_kind="grey", output="sigmoid"
                     if len(classes) == 2 else "softmax", synthetic=True)
    Registry.open_or_empty(registry_dir).write_card(card)


def write_tiny_models(registry_dir):
    """Random tiny ResUNets: the lung model biased to call the whole slice lung (so the pipeline analyses every
    slice), the infection model left as initialised (it marks most of the slice, a little differently per slice:
    a random slim Inf-Net's map is flat, all or nothing, which would leave the infected branch untested)."""
    registry_dir.mkdir(parents=True)
    torch.manual_seed(0)
    lungs = create_model("resunet", widths=(4, 8, 16))
    with torch.no_grad():
        lungs.head.bias.fill_(8.0)
    add_card(registry_dir, lungs, "tiny-lungs", "ct-lung-segmentation", "resunet", {"widths": [4, 8, 16]}, ["lung"], 32)
    infection = create_model("resunet", widths=(4, 8, 16))
    add_card(registry_dir, infection, "tiny-infection", "ct-infection-segmentation", "resunet", {"widths": [4, 8, 16]},
             ["infection"], 64)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multisource")
    pack = write_slice_pack(tmp / "pack")
    weights, run = tmp / "weights", tmp / "run"
    write_tiny_models(weights)
    cache = tmp / "cache"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHEST_CACHE", str(cache))
        # One thread: on a busy 2-core machine, two spinning threads per process make tiny steps seconds long.
        training_main(["--threads", "1", "multisource-ct", "--profile", "smoke", "--data", str(pack), "--out", str(run),
                       "--set", f"models_dir={weights}", "--set", "infection_model=tiny-infection",
                       "--set", "lung_model=tiny-lungs", "--export", str(weights)])
    torch.set_num_threads(threads)
    return {"run": run, "weights": weights, "pack": pack}


def _prefixed(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_branches_train_in_order_with_earlier_ones_frozen(trained_run):
    run = trained_run["run"]
    trials = [(b, s) for b, seeds in (("resnet50", (0, 1)), ("densenet169", (0,))) for s in seeds]
    for backbone, seed in trials:
        folder = run / backbone / f"seed{seed}"
        result = json.loads((folder / "result.json").read_text())
        stages = result["stages"]
        assert [s["branch"] for s in stages] == STAGE_ORDER
        assert all(a["finished"] <= b["started"] for a, b in zip(stages, stages[1:]))
        assert all(s["images_per_second"] and s["images_per_second"] > 0 for s in stages)
        # The final network's branches are exactly each stage's best checkpoint: later stages changed nothing.
        final = torch.load(folder / "fusion_model.pt", weights_only=True)
        for prefix, stage in (("global_branch.", "global"), ("heatmap_branch.", "heatmap"),
                              ("infected_branch.", "infected")):
            best = torch.load(folder / stage / "best.pt", weights_only=True)
            part = _prefixed(final, prefix)
            assert part.keys() == best.keys()
            assert all(torch.equal(part[k], best[k]) for k in best), stage
        # The fusion FC is the trained (standardised) head with its standardisation folded in.
        head = torch.load(folder / "fusion" / "best.pt", weights_only=True)
        features = torch.randn(5, head["mean"].numel()) * 3 + 1
        trained = (features - head["mean"]) / head["std"] @ head["linear.weight"].T + head["linear.bias"]
        served = features @ final["fc.weight"].T + final["fc.bias"]
        assert torch.allclose(trained, served, atol=1e-4)
        assert set(result["test"]) == {"global", "heatmap", "global+heatmap", "global+infected", "fusion"}


def test_standardised_head_folds_into_a_plain_fc():
    from training.recipes.multisource_ct import StandardisedHead

    torch.manual_seed(0)
    features = torch.randn(50, 6) * torch.tensor([0.1, 1, 10, 100, 0, 3]) + 20
    head = StandardisedHead(torch.nn.Linear(6, 1), features)
    before = head(features)
    fc = head.fold()
    assert torch.allclose(fc(features), before, rtol=1e-4, atol=1e-3)


def test_report_has_paper_tables_per_source_and_figures(trained_run):
    run = trained_run["run"]
    report = (run / "report.md").read_text()
    for heading in ("Table 1", "Per source", "Fusion minus Global", "Training speed", "Selected model",
                    "Infected regions found", "Slices per split and source", "Heat-map faithfulness (H of the global"):
        assert heading in report, heading
    faithfulness = json.loads((run / "faithfulness.json").read_text())
    assert faithfulness["heat_map"].startswith("heat map H") and set(faithfulness["per_class"]) == {"non-covid", "covid"}
    assert faithfulness["all"]["n"] + faithfulness["no_heat"] > 0
    assert "Fusion, resnet50" in report and "Global + Infected, densenet169" in report
    assert "0.91" in report  # the paper's ResNet50 fusion AUC beside ours
    for figure in ("roc.png", "tsne.png", "regions.png", "curves.png"):
        assert (run / figure).is_file(), figure
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["sizes"]) == {"train", "val", "test"}
    assert summary["half_precision"]["cached_vs_full_forward"] < 1e-4  # cached features = the four-input net


def test_export_gives_a_card_the_registry_and_the_ct_pipeline_serve(trained_run):
    from core.imaging.ct_input import ct_model_pixels
    from core.pipelines.ct_slice import CtSlicePipeline
    from core.study import Study

    registry = Registry.open(trained_run["weights"])
    summary = json.loads((trained_run["run"] / "summary.json").read_text())
    card = registry.card(f"ct-multisource-{summary['selected']['backbone']}")
    assert card.task == "ct-classification" and card.classes == ["non-covid", "covid"]
    assert card.input_kind == "multisource" and card.output == "sigmoid" and card.input_size == 32
    assert card.input_config["infection_model"] == "tiny-infection" and card.input_config["lung_model"] == "tiny-lungs"
    assert card.input_config["tau"] == 0.75 and card.input_config["crop_size"] == 32
    versions = {name: registry.card(name).version for name in ("tiny-infection", "tiny-lungs")}
    assert (f"trained on the regions of tiny-infection {versions['tiny-infection']} and tiny-lungs {versions['tiny-lungs']};"
            in " ".join(card.limitations))
    model = registry.load_torch(card)
    inputs = [torch.rand(2, 1, 32, 32) for _ in range(4)]
    assert model(*inputs).shape == (2, 1)
    stored = torch.load(registry.verified_path(card, "pytorch"), weights_only=True)
    half = summary["half_precision"]["store_half"]
    assert stored["fc.weight"].dtype == (torch.float16 if half else torch.float32)

    # Served through the CT pipeline, a test slice gets the recipe's fusion probability (train = serve).
    pack = trained_run["pack"]
    with open(pack / "ct_slices" / "labels.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["source"] == "sarscov2-ct" and r["split"] == "test")
    pixels = np.asarray(Image.open(pack / "ct_slices" / row["image"]).convert("L"), dtype=np.float32) / 255.0
    study = Study(pixels=pixels, file_format="png", modality="CT")
    result = CtSlicePipeline(registry, backend="torch").analyse(study)
    assert np.array_equal(result.model_pixels, ct_model_pixels(study))
    assert set(result.branch_probabilities) == {"global", "heatmap", "infected", "fusion"}
    run = trained_run["run"]
    order = [s["image"] for s in json.loads((run / "slices.json").read_text())]
    index = order.index(str(pack / "ct_slices" / row["image"]))
    selected = summary["selected"]
    recipe = np.load(run / selected["backbone"] / f"seed{selected['seed']}" / "outputs.npz")["prob_fusion"][index]
    assert result.prob_covid == pytest.approx(float(recipe), abs=0.01)


def test_source_auc_is_the_mean_of_the_per_source_aucs():
    """Two sources each ranked perfectly inside, but told apart by level: pooled AUC below 1, source AUC 1."""
    from training.recipes.multisource_ct import val_scores

    labels = np.array([0, 1, 0, 1])
    probs = np.array([0.1, 0.2, 0.8, 0.9])
    scores = val_scores(labels, probs, ["a", "a", "b", "b"])
    assert scores["source_auc"] == 1.0
    assert scores["auc"] == pytest.approx(0.75)
    assert scores["accuracy"] == 0.5


def test_served_accuracy_scores_the_ct_classifier_through_the_ct_pipeline(trained_run, capsys):
    summary = json.loads((trained_run["run"] / "summary.json").read_text())
    name = f"ct-multisource-{summary['selected']['backbone']}"
    args = ["served-accuracy", "--weights", str(trained_run["weights"]), "--classifier", name,
            "--data", str(trained_run["pack"]), "--split", "test"]
    assert training_main(args) == 0
    printed = capsys.readouterr().out
    test = [s for s in json.loads((trained_run["run"] / "slices.json").read_text()) if s["split"] == "test"]
    assert f"on {len(test)} test images" in printed and "AUC" in printed and "sarscov2-ct n=" in printed
    # A classifier the CT page does not serve is a clear refusal, not a traceback.
    assert training_main(args[:4] + ["tiny-lungs"] + args[5:]) == 2
