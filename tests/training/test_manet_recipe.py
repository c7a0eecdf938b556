"""The MANet recipe end to end on a tiny synthetic data pack in the shared pack's layout, then export."""



from core.classes import MANET_CLASSES
from core.phantoms import make_phantom
from core.pipelines.cxr import CxrPipeline
from core.registry import Registry
from training.__main__ import main as training_main

def test_recipe_trains_reports_and_exports_a_servable_registry(tmp_path, synthetic_pack):
    run, weights = tmp_path / "run", tmp_path / "weights"
    training_main(["manet", "--profile", "smoke", "--data", str(synthetic_pack), "--out", str(run),
                   "--export", str(weights)])
    for name in ("config.json", "segmenter_test.json", "summary.json", "segmenter/log.csv", "report.md",
                 "confusion.png", "roc.png", "curves.png", "gradcam.png"):
        assert (run / name).is_file(), name
    for variant in ("resnet34-none", "resnet34-mask"):  # the smoke profile: two variants x two seeds
        for seed in (0, 1):
            assert (run / "classifiers" / variant / f"seed{seed}" / "test.json").is_file()
    report = (run / "report.md").read_text()
    assert "Table 2" in report and "Attention vs plain" in report and "per source" in report
    assert "training images/s" in report and "Heat-map faithfulness" in report and "deletion score" in report
    registry = Registry.open(weights)
    classifier = registry.default("cxr-classification")
    assert classifier.classes == list(MANET_CLASSES)
    assert classifier.metrics["test"]["n"] == 10 and "confusion_matrix" in classifier.metrics["test"]
    assert registry.default("lung-segmentation").metrics["test"]["by_class"]["n"] == 10
    # Re-running resumes from the checkpoints (nothing left to train) and re-exports the same weights.
    training_main(["export", str(run), "--weights", str(weights)])
    assert Registry.open(weights).default("cxr-classification").weights_sha256 == classifier.weights_sha256
    result = CxrPipeline(registry).analyse(make_phantom("covid", seed=99, size=96).to_study(), explain=True)
    assert set(result.probabilities) == set(MANET_CLASSES)
