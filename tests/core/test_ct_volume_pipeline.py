"""The CT volume pipeline on a synthetic chest volume: the same anatomy however it is stored, left and
right the patient's, the slice models' maths, the dual-sampling fusion and attention, refusals, threads."""

import threading

import numpy as np
import pytest

from core.errors import UnsupportedInputError
from core.guard.ct_volume import check_ct_volume
from core.imaging.ct_input import hu_to_model_pixels
from core.imaging.infection_burden import dual_sampling_probability, fusion_weight, ratio_band
from core.imaging.volume_masks import split_lungs
from core.io.nifti import load_nifti, nifti_bytes
from core.io.series import dicom_series_bytes, load_dicom_series
from core.lung import lung_probability_small, probability_to_shape
from core.pipelines.ct_volume import NO_CLASSIFIER_WARNING, STAGES, CtVolumePipeline
from core.registry import Registry
from tests.core.ct_volume_fixtures import add_toy_classifiers, dice, phantom, segmentation_registry


@pytest.fixture(scope="module")
def segmentation_dir(bundled_weights_dir, tmp_path_factory):
    return segmentation_registry(bundled_weights_dir, tmp_path_factory.mktemp("ct-volume-seg"))


@pytest.fixture(scope="module")
def classifier_dir(bundled_weights_dir, tmp_path_factory):
    return add_toy_classifiers(segmentation_registry(bundled_weights_dir, tmp_path_factory.mktemp("ct-volume-cls")))


@pytest.fixture(scope="module")
def case():
    return phantom()


@pytest.fixture(scope="module")
def classified(classifier_dir, case):
    stages = []
    result = CtVolumePipeline(Registry.open(classifier_dir)).analyse(
        check_ct_volume(case.to_volume()), progress=lambda stage, fraction: stages.append((stage, fraction)))
    return result, stages


def test_lps_ras_and_a_shuffled_dicom_series_give_the_same_masks_and_sides(segmentation_dir, case):
    pipeline = CtVolumePipeline(Registry.open(segmentation_dir))
    layouts = {
        "lps": load_nifti(nifti_bytes(case.hu, case.spacing_mm, "LPS")),
        "ras": load_nifti(nifti_bytes(case.hu, case.spacing_mm, "RAS", compress=True)),
        "dicom": load_dicom_series(dicom_series_bytes(case.hu, case.spacing_mm, shuffle_seed=5)),
    }
    results = {name: pipeline.analyse(check_ct_volume(volume)) for name, volume in layouts.items()}
    reference = results["lps"]
    for name, result in results.items():
        assert np.array_equal(result.lung_mask, reference.lung_mask), name
        assert np.array_equal(result.infection_labels, reference.infection_labels), name
        for side in ("right", "left", "total"):
            assert result.lung_volume_ml[side] == pytest.approx(reference.lung_volume_ml[side], rel=1e-5), (name, side)
    # the masks are the phantom's lungs, and "right" is the patient's right (small x), not the viewer's
    truth_right, truth_left = split_lungs(case.lung_mask)
    right, left = split_lungs(reference.lung_mask)
    assert dice(reference.lung_mask, case.lung_mask) > 0.9
    assert dice(right, truth_right) > 0.9 and dice(left, truth_left) > 0.9
    voxel_ml = float(np.prod(case.spacing_mm)) / 1000
    assert reference.lung_volume_ml["right"] == pytest.approx(right.sum() * voxel_ml)
    assert reference.lung_volume_ml["right"] + reference.lung_volume_ml["left"] == pytest.approx(
        reference.lung_volume_ml["total"])


def test_each_slice_is_segmented_as_the_ct_slice_path_would(segmentation_dir, case):
    """Batched windowing and resizes equal the single-slice functions (a few ties at 0.5 may flip)."""
    pipeline = CtVolumePipeline(Registry.open(segmentation_dir))
    raw = pipeline._raw_lungs(case.hu, {}, lambda stage, fraction: None)
    size = pipeline.cards["lungs"].input_size
    for k in (5, case.hu.shape[0] // 2, case.hu.shape[0] - 8):
        pixels = hu_to_model_pixels(case.hu[k])
        expected = probability_to_shape(lung_probability_small(pixels, pipeline.lungs, size), pixels.shape) >= 0.5
        assert (raw[k] != expected).sum() <= 2, k


def test_dual_sampling_fusion_attention_burden_and_progress(classified, case):
    result, stages = classified
    p_us, p_ss = result.model_probabilities["uniform"], result.model_probabilities["size-balanced"]
    ratio = result.infection_ratio
    assert result.fusion_weight == fusion_weight(ratio)
    assert result.model_probabilities["dual"] == pytest.approx(dual_sampling_probability(p_us, p_ss, ratio))
    assert result.probabilities["covid"] == pytest.approx(result.model_probabilities["dual"])
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert result.predicted_label in ("cap", "covid")
    for sampling in ("uniform", "size-balanced"):
        attention = result.attention[sampling]
        assert attention.shape == case.hu.shape and attention.dtype == np.float32
        assert 0.0 <= attention.min() and attention.max() <= 1.0
        assert result.cards[sampling].input_config["sampling"] == sampling
    # burden: infection inside the lungs, ground glass + consolidation = infection, the band of the ratio
    infected = result.infection_labels > 0
    assert not infected[~result.lung_mask].any()
    ml = result.infection_volume_ml
    assert ml["ggo"] + ml["consolidation"] == pytest.approx(ml["total"])
    assert ratio == pytest.approx(ml["total"] / result.lung_volume_ml["total"])
    assert result.ratio_band == ratio_band(ratio)
    assert result.lung_slices == int(result.lung_mask.any(axis=(1, 2)).sum())
    # every stage reports, in order, and ends at 1; every stage is timed
    assert [s for s in dict.fromkeys(stage for stage, _ in stages)] == list(STAGES)
    for stage in STAGES:
        fractions = [f for s, f in stages if s == stage]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(isinstance(f, float) for f in fractions)
    assert set(result.timings_ms) == {*STAGES, "total"}
    assert not result.warnings


def test_without_classifier_cards_the_volume_is_segmented_and_measured(segmentation_dir, case):
    pipeline = CtVolumePipeline(Registry.open(segmentation_dir))
    assert not pipeline.classifiers
    result = pipeline.analyse(check_ct_volume(case.to_volume()))
    assert result.lung_volume_ml["total"] > 800 and result.lung_mask.any()
    assert result.probabilities == {} and result.model_probabilities == {} and result.attention == {}
    assert result.fusion_weight is None and result.predicted_label is None
    assert NO_CLASSIFIER_WARNING in result.warnings
    assert "classification" not in result.timings_ms


def test_one_classifier_alone_is_used_with_a_warning(segmentation_dir, tmp_path, case):
    folder = add_toy_classifiers(segmentation_registry(segmentation_dir, tmp_path / "one"), samplings=("uniform",))
    result = CtVolumePipeline(Registry.open(folder)).analyse(check_ct_volume(case.to_volume()))
    assert set(result.model_probabilities) == {"uniform", "dual"} and result.fusion_weight is None
    assert result.probabilities["covid"] == pytest.approx(result.model_probabilities["uniform"])
    assert any("size-balanced" in warning for warning in result.warnings)


def test_a_volume_without_enough_lung_is_refused(segmentation_dir, case):
    pipeline = CtVolumePipeline(Registry.open(segmentation_dir))
    abdomen = case.to_volume()
    lowest = int(np.flatnonzero(case.lung_mask.any(axis=(1, 2)))[0])
    abdomen.hu = np.ascontiguousarray(case.hu[max(lowest - 14, 0): lowest + 3])  # the lung bases only
    with pytest.raises(UnsupportedInputError, match="Too little lung"):
        pipeline.analyse(abdomen)


def test_concurrent_analyses_equal_the_sequential_one(classifier_dir, classified, case):
    """One pipeline serves every session's thread (ONNX sessions, the 3D classifiers under their locks)."""
    reference, _ = classified
    pipeline = CtVolumePipeline(Registry.open(classifier_dir))
    results, errors = [None, None], []

    def run(index):
        try:
            results[index] = pipeline.analyse(check_ct_volume(case.to_volume()))
        except Exception as error:  # noqa: BLE001  (surfaced below, in the test thread)
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for result in results:
        assert np.array_equal(result.lung_mask, reference.lung_mask)
        assert np.array_equal(result.infection_labels, reference.infection_labels)
        assert result.model_probabilities == pytest.approx(reference.model_probabilities, abs=1e-6)
        np.testing.assert_allclose(result.attention["uniform"], reference.attention["uniform"], atol=1e-5)


def test_benchmark_prints_the_ct_volume_stages(classifier_dir, monkeypatch, capsys):
    from core import benchmark
    from tests.core.ct_volume_fixtures import PHANTOM_SHAPE, PHANTOM_SPACING_MM

    monkeypatch.setattr(benchmark, "VOLUME_CASES", ((PHANTOM_SHAPE, PHANTOM_SPACING_MM),))
    rows = benchmark.run_ct_volume_benchmark(Registry.open(classifier_dir), runs=1, backends=("onnx",))
    assert [row["backend"] for row in rows] == ["onnx"] and rows[0]["shape"] == PHANTOM_SHAPE
    assert all(rows[0][stage][0] > 0 for stage in benchmark.VOLUME_STAGES)
    out = capsys.readouterr().out
    assert "lungs_3d p50" in out and "toy-3d-uniform + toy-3d-size-balanced" in out


def test_each_3d_classifier_is_calibrated_by_its_cards_temperature_before_the_fusion(classifier_dir, classified,
                                                                                     tmp_path, case):
    import dataclasses
    import shutil

    raw, _stages = classified
    folder = shutil.copytree(classifier_dir, tmp_path / "calibrated")
    registry = Registry.open(folder)
    temperatures = {"uniform": 2.0, "size-balanced": 0.5}
    for card in registry.cards("ct-volume-classification"):
        registry.write_card(dataclasses.replace(card, calibration={"temperature": temperatures[card.input_config["sampling"]]}))
    result = CtVolumePipeline(Registry.open(folder)).analyse(check_ct_volume(case.to_volume()))
    for sampling, t in temperatures.items():
        p = raw.model_probabilities[sampling]
        expected = 1 / (1 + np.exp(-np.log(p / (1 - p)) / t))
        assert result.model_probabilities[sampling] == pytest.approx(expected, abs=1e-5)
    fused = dual_sampling_probability(result.model_probabilities["uniform"], result.model_probabilities["size-balanced"],
                                      result.infection_ratio)
    assert result.probabilities["covid"] == pytest.approx(fused)
