"""``python -m training external-eval``: a labelled folder scored through the app's pipeline, with numbers
checked against scikit-learn on the same predictions (synthetic phantoms, tiny random-weight registry)."""

import csv
import math

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

from core.classes import MANET_CLASSES
from core.phantoms import make_phantom
from training.__main__ import main
from training.external_eval import ExternalEvalError, external_eval, read_labels, reliability, write_per_image

PER_CLASS = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 phantoms per MANet class from two 'sites', one image too small for the app and one missing file."""
    root = tmp_path_factory.mktemp("external")
    (root / "images").mkdir()
    rows = []
    for label in MANET_CLASSES:
        for seed in range(PER_CLASS):
            name = f"images/{label}_{seed}.png"
            Image.fromarray((make_phantom(label, seed=seed, size=128).pixels * 255).astype(np.uint8)).save(root / name)
            rows.append((name, label, "site-a" if seed % 2 else "site-b"))
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(root / "images" / "tiny.png")
    rows += [("images/tiny.png", "normal", "site-a"), ("images/missing.png", "covid", "site-b")]
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "source"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def scored(folder, tiny_registry_dir, tmp_path_factory):
    result = external_eval(tiny_registry_dir, "tiny-cls", folder, progress=False)
    out = tmp_path_factory.mktemp("out") / "per_image.csv"
    write_per_image(result, out)
    with open(out, newline="") as handle:
        return result, list(csv.DictReader(handle))


def independent_ece(confidence, correct, bins=15):
    totals = {}
    for c, ok in zip(confidence, correct):
        b = min(max(math.ceil(c * bins) - 1, 0), bins - 1)
        totals.setdefault(b, []).append((c, ok))
    return sum(len(v) / len(confidence) * abs(np.mean([ok for _, ok in v]) - np.mean([c for c, _ in v]))
               for v in totals.values())


def test_refused_images_are_counted_not_dropped(scored):
    result, rows = scored
    assert result.n_images == len(rows) == 5 * PER_CLASS + 2
    assert result.refused == 2
    refused = {r["image"].rsplit("/", 1)[-1]: r for r in rows if r["status"] == "refused"}
    assert set(refused) == {"tiny.png", "missing.png"}
    assert all(r["message"] and r["correct"] == "0" for r in refused.values())
    assert result.accuracy_with_refusals == pytest.approx(sum(int(r["correct"]) for r in rows) / len(rows))


def test_the_numbers_are_sklearns_on_the_same_predictions(scored):
    result, rows = scored
    ok = [r for r in rows if r["status"] == "ok"]
    classes = list(MANET_CLASSES)
    y = np.array([classes.index(r["target"]) for r in ok])
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in ok])
    pred = probs.argmax(1)
    assert [classes[i] for i in pred] == [r["predicted_label"] for r in ok]
    report = result.report
    assert report["n"] == len(ok) == 5 * PER_CLASS
    assert report["accuracy"] == pytest.approx(accuracy_score(y, pred))
    recalls = recall_score(y, pred, labels=range(len(classes)), average=None, zero_division=0)
    for name, recall in zip(classes, recalls):
        assert report["per_class"][name]["recall"] == pytest.approx(recall)
        assert report["auc_per_class"][name] == pytest.approx(roc_auc_score((y == classes.index(name)).astype(int),
                                                                            probs[:, classes.index(name)]))
    assert report["covid_vs_rest_auc"] == pytest.approx(report["auc_per_class"]["covid"])
    assert report["ece"] == pytest.approx(independent_ece(probs.max(1), pred == y))
    assert sum(b["n"] for b in report["reliability"]) == len(ok) and len(report["reliability"]) == 15
    for source in ("site-a", "site-b"):
        pick = np.array([r["source"] == source for r in ok])
        assert report["per_source"][source]["accuracy"] == pytest.approx(accuracy_score(y[pick], pred[pick]))


def test_reliability_bins_and_a_perfectly_calibrated_case():
    ece, table = reliability(np.array([1.0, 1.0, 0.5, 0.5]), np.array([1, 1, 1, 0]))
    assert ece == pytest.approx(0.0)
    assert [b["n"] for b in table if b["n"]] == [2, 2] and table[7]["n"] == 2 and table[14]["n"] == 2
    ece, _ = reliability(np.array([0.9, 0.9]), np.array([0, 0]))
    assert ece == pytest.approx(0.9)


def test_labels_are_folded_into_the_classes_and_one_without_a_class_is_named(folder, tiny_registry_dir):
    with pytest.raises(ExternalEvalError, match=r"'tb' \(3 images\).*--skip-unknown-labels"):
        external_eval(tiny_registry_dir, "tiny-cxnet-three", folder, progress=False)
    result = external_eval(tiny_registry_dir, "tiny-cxnet-three", folder, skip_unknown=True, progress=False)
    assert result.skipped_labels == {"tb": PER_CLASS}
    assert {r["target"] for r in result.rows} == {"normal", "pneumonia", "covid"}
    assert {r["label"]: r["target"] for r in result.rows}["bacterial"] == "pneumonia"


def test_a_folder_without_labels_or_with_wrong_columns_is_a_clear_message(tmp_path, tiny_registry_dir, capsys):
    with pytest.raises(ExternalEvalError, match="No labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,diagnosis\na.png,covid\n")
    assert main(["external-eval", "--weights", str(tiny_registry_dir), "--data", str(tmp_path)]) == 2
    assert "needs the columns image and label" in capsys.readouterr().err


def test_the_command_prints_the_summary_and_writes_one_row_per_image(folder, tiny_registry_dir, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert main(["external-eval", "--weights", str(tiny_registry_dir), "--classifier", "tiny-cls",
                 "--data", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for words in ("tiny-cls", "2 refused by the app", "counting refusals as wrong", "COVID-19 vs rest AUC",
                  "recall", "expected calibration error (top label, 15 bins)", "site-a", "tiny.png"):
        assert words in printed
    with open(out, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 5 * PER_CLASS + 2
