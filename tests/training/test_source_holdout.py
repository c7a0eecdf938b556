"""Leave-one-source-out study on the tiny synthetic pack: folds, AUC bookkeeping, the winner, the report."""

import numpy as np
import torch

from training.__main__ import main as training_main
from training.classification import ArraySet
from training.source_holdout import COVID, covid_auc, fold_sets
from training.tasks import MANET, select


def test_study_holds_each_source_out_and_names_a_winner(tmp_path, synthetic_pack):
    out = tmp_path / "study"
    training_main(["source-holdout", "--profile", "smoke", "--data", str(synthetic_pack), "--out", str(out),
                   "--sources", "synthetic-a"])
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["winner"] in summary["candidates"]
    for result in summary["candidates"].values():
        held = [row["held_out"] for row in result["rows"]]
        assert held == ["synthetic-a", None]
    assert "COVID-19 vs rest AUC per held-out source" in (out / "report.md").read_text()


def test_held_out_source_never_trains_and_its_images_all_test(synthetic_pack):
    from training.adapters import read_records

    chosen, labels = select(read_records([synthetic_pack]), MANET)
    sources = [r.source for r in chosen]
    arrays = (np.zeros((len(chosen), 8, 8), np.float16), np.zeros((len(chosen), 8, 8), np.uint8))

    class Profile:
        max_train_per_class = None

    sets = fold_sets(chosen, labels, sources, arrays, "synthetic-b", Profile())
    assert "synthetic-b" not in sets["train"].sources + sets["val"].sources
    assert sets["test"].sources.count("synthetic-b") == sources.count("synthetic-b")
    others = [(s, int(y)) for s, y in zip(sets["test"].sources, sets["test"].labels) if s != "synthetic-b"]
    assert others and all(label != COVID for _, label in others)  # other sites add negatives only


def test_covid_auc_per_source_and_undefined_without_both_kinds():
    labels = torch.tensor([COVID, 0, COVID, 0])
    data = ArraySet((torch.zeros(4),), labels, ["a", "a", "b", "b"])
    probs = np.zeros((4, 5))
    probs[:, COVID] = [0.9, 0.2, 0.1, 0.8]
    assert covid_auc(data, probs) == 0.5
    assert covid_auc(data, probs, "a") == 1.0 and covid_auc(data, probs, "b") == 0.0
    assert covid_auc(data.subset([0, 2]), probs[[0, 2]]) is None
