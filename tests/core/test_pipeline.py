"""The chest X-ray pipeline end to end on synthetic phantoms, with the bundled models."""

import csv

import numpy as np
import pytest
from PIL import Image

from core.__main__ import main as core_main
from core.classes import MANET_CLASSES
from core.errors import UnsupportedInputError
from core.phantoms import make_phantom
from core.pipelines.cxr import CxrPipeline
from core.registry import Registry
from core.study import Study


@pytest.fixture(scope="module")
def pipelines(bundled_weights_dir):
    registry = Registry.open(bundled_weights_dir)
    return {backend: CxrPipeline(registry, backend=backend) for backend in ("torch", "onnx")}


@pytest.mark.parametrize("label", MANET_CLASSES)
def test_phantom_analysis_is_complete(pipelines, label):
    study = make_phantom(label, seed=3, size=384).to_study()
    result = pipelines["onnx"].analyse(study)
    assert set(result.probabilities) == set(MANET_CLASSES)
    assert np.isclose(sum(result.probabilities.values()), 1.0, atol=1e-5)
    assert result.lung_mask.shape == study.pixels.shape
    assert 0.05 < result.lung.area_fraction < 0.7
    for heat in (result.gradcam, result.attention_map):
        assert heat.shape == study.pixels.shape and 0 <= heat.min() and heat.max() <= 1
    # Mask attention: the map is the pooled lung mask, high inside the lungs and zero far outside them.
    assert result.attention_map[result.lung_mask].mean() > 0.5
    assert result.attention_map[:10, :10].max() < 0.05
    assert {"lung_mask", "classification", "gradcam"} <= set(result.timings_ms)
    assert any("Synthetic" in w for w in result.warnings)


def test_onnx_and_pytorch_agree(pipelines):
    study = make_phantom("viral", seed=1, size=300).to_study()
    onnx = pipelines["onnx"].analyse(study, explain=False)
    torch_ = pipelines["torch"].analyse(study, explain=False)
    assert np.abs(onnx.lung_probability - torch_.lung_probability).max() < 1e-3
    for name in MANET_CLASSES:
        assert abs(onnx.probabilities[name] - torch_.probabilities[name]) < 1e-3


def test_an_image_without_lungs_is_refused(pipelines):
    flat = np.full((256, 256), 0.8, np.float32)
    flat[::8] = 0.2  # stripes: not blank, but nothing lung-like
    with pytest.raises(UnsupportedInputError, match="No lungs were found"):
        pipelines["onnx"].analyse(Study(pixels=flat, file_format="png"))


def test_batch_predict_writes_one_row_per_file(tmp_path, bundled_weights_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    for label in ("normal", "tb"):
        pixels = make_phantom(label, seed=2, size=256).pixels
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{label}.png")
    (folder / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "results.csv"
    assert core_main(["--weights", str(bundled_weights_dir), "predict", str(folder), "--out", str(out)]) == 0
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"normal.png", "tb.png", "broken.png"}
    assert rows["broken.png"]["status"] == "refused" and rows["broken.png"]["message"]
    for name in ("normal.png", "tb.png"):
        row = rows[name]
        assert row["status"] == "ok" and row["predicted_label"] in MANET_CLASSES
        assert np.isclose(sum(float(row[f"prob_{c}"]) for c in MANET_CLASSES), 1.0, atol=1e-4)
        assert 0 < float(row["lung_area_fraction"]) < 1 and float(row["seconds"]) > 0
        assert row["model"] and row["model_version"]


def test_benchmark_prints_every_stage_for_both_backends(bundled_weights_dir, capsys):
    from core.benchmark import STAGES, run_benchmark

    rows = run_benchmark(Registry.open(bundled_weights_dir), runs=2, size=256)
    assert [r["backend"].split("/")[0] for r in rows] == ["torch", "onnx"]
    for row in rows:
        for stage in STAGES:
            p50, p90 = row[stage]
            assert 0 < p50 <= p90
        assert row["ratio_to_bare"] == pytest.approx(row["total"][0] / row["bare_densenet121_ms"])
    out = capsys.readouterr().out
    assert "lung_mask p50" in out and "total p50" in out and "bare forward p50" in out


@pytest.mark.parametrize("classifier", ["tiny-cls", "tiny-cls-lung-crop", "tiny-lung-only", "tiny-cxnet-three"])
def test_every_input_kind_is_served_by_both_backends(tiny_registry_dir, classifier):
    """MANet image+mask (whole image; lung crop, equalised), UNet + HRNet lung-only and COVID-CXNet's enhanced lung
    crop, from their model cards."""
    registry = Registry.open(tiny_registry_dir)
    card = registry.card(classifier)
    study = make_phantom("covid", seed=5, size=200).to_study()
    results = {backend: CxrPipeline(registry, backend=backend, classifier=classifier).analyse(study) for backend in ("torch", "onnx")}
    for result in results.values():
        assert list(result.probabilities) == card.classes
        assert np.isclose(sum(result.probabilities.values()), 1.0, atol=1e-5)
        assert result.gradcam.shape == study.pixels.shape and 0 <= result.gradcam.min() and result.gradcam.max() <= 1
        assert (result.attention_map is not None) == (card.input_kind == "image+mask")
    for name in card.classes:
        assert abs(results["onnx"].probabilities[name] - results["torch"].probabilities[name]) < 1e-3


def test_binary_sigmoid_output_and_cropped_heat_maps():
    from core.pipelines.cxr import heat_to_image, to_probabilities

    assert np.allclose(to_probabilities(np.array([0.0]), "sigmoid"), [0.5, 0.5])
    assert to_probabilities(np.array([3.0]), "sigmoid")[1] > 0.95
    assert np.allclose(to_probabilities(np.array([1.0, 1.0, 1.0]), "softmax"), 1 / 3)
    # A heat map over a crop lands in the crop's place on the whole image, zero elsewhere.
    box = (slice(10, 30), slice(40, 60))
    full = heat_to_image(np.ones((8, 8), np.float32), (50, 80), box)
    assert full.shape == (50, 80) and full[box].min() == 1.0 and full.sum() == 20 * 20


def test_lung_cropped_equalised_input_covers_the_lungs_box_only():
    from core.preprocess import masked_classifier_input

    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.2, 0.4, (100, 120)).astype(np.float32)
    lungs = np.zeros((100, 120), bool)
    lungs[30:70, 20:50] = lungs[30:70, 70:100] = True
    pixels[lungs] = rng.uniform(0.5, 0.6, lungs.sum())  # a narrow band: min-max would not fill [-1, 1]
    (image, mask), box = masked_classifier_input(pixels, lungs, 32, {"lung_crop": 0.05, "equalise": True})
    assert box == (slice(25, 75), slice(14, 106))  # 5 % of each side around the lungs
    assert image.shape == mask.shape == (1, 32, 32) and mask.mean() > 0.5  # the lungs fill the crop
    inside = image[mask > 0]
    assert np.all(image[mask == 0] == -1.0)
    assert abs(np.median(inside)) < 0.1 and inside.min() < -0.8 and inside.max() > 0.9  # equalised: uniform in [-1, 1]
    (whole, _), none = masked_classifier_input(pixels, lungs, 32, {})
    assert none is None and (whole > -1).mean() < mask.mean()  # the paper's input: whole image, smaller lungs
