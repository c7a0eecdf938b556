"""The CT slice pipeline on generated phantoms with toy models: shapes, burden arithmetic, boxes, typed refusals."""

import numpy as np
import pytest

from core.ct_phantoms import make_ct_phantom
from core.errors import UnsupportedInputError
from core.pipelines.ct_slice import CtSlicePipeline, measure_burden
from core.registry import Registry


@pytest.fixture(scope="module")
def pipeline(tiny_ct_registry_dir):
    return CtSlicePipeline(Registry.open(tiny_ct_registry_dir))


def test_a_phantom_slice_gets_masks_burden_probabilities_and_boxes(pipeline):
    study = make_ct_phantom("covid", seed=1, size=128).to_study()
    result = pipeline.analyse(study)

    shape = study.pixels.shape
    assert result.lung_mask.shape == shape and result.infection_labels.shape == shape
    assert result.infection_probability.shape == shape and result.heatmap.shape == shape
    assert set(np.unique(result.infection_labels)) <= {0, 1, 2}
    assert not (result.infection_labels > 0)[~result.lung_mask].any()  # infection is counted inside the lungs only
    burden = result.burden
    assert burden.ggo_fraction + burden.consolidation_fraction == pytest.approx(burden.infection_fraction)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert set(result.branch_probabilities) == {"global", "heatmap", "infected", "fusion"}
    assert result.prob_covid == pytest.approx(result.branch_probabilities["fusion"])
    for box in [result.heatmap_box, *result.infected_boxes.values()]:
        if box is not None:
            assert 0 <= box[0].start < box[0].stop <= shape[0] and 0 <= box[1].start < box[1].stop <= shape[1]
    assert set(result.cards) == {"lungs", "infection", "multiclass", "classifier"}
    assert result.cards["lungs"].name == "tiny-ct-lungs"  # the lung model the classifier's card names


def test_heat_map_faithfulness_is_scored_on_request_only(pipeline):
    study = make_ct_phantom("covid", seed=1, size=128).to_study()
    plain = pipeline.analyse(study)
    scored = pipeline.analyse(study, faithfulness=True)
    assert plain.faithfulness is None and "faithfulness" not in plain.timings_ms
    assert scored.probabilities == plain.probabilities  # scoring perturbs copies, never the served answer
    scores = scored.faithfulness
    assert set(scores) == {"deletion_score", "in_lung_share", "top_drop", "random_drop"}
    assert np.any(scored.heatmap > 0)
    assert scores["deletion_score"] == pytest.approx(scores["top_drop"] - scores["random_drop"], abs=1e-5)
    assert -1 <= scores["deletion_score"] <= 1 and 0 <= scores["in_lung_share"] <= 1
    assert pipeline.analyse(study, faithfulness=True).faithfulness == scores  # seeded: same case, same score


def test_hu_and_its_8_bit_export_give_the_same_model_input(pipeline):
    from core.imaging.ct_input import ct_model_pixels
    from core.study import Study

    hu_study = make_ct_phantom("covid", seed=2, size=96).to_study()
    exported = ct_model_pixels(hu_study)  # what an 8-bit lung-window export of this slice holds
    png_study = Study(pixels=exported, file_format="png")
    assert np.array_equal(pipeline.analyse(hu_study).infection_labels, pipeline.analyse(png_study).infection_labels)


def test_burden_fractions_are_of_the_lung_area():
    lung = np.zeros((10, 10), bool)
    lung[:, :5] = True  # 50 lung pixels
    labels = np.zeros((10, 10), np.uint8)
    labels[0:2, 0:5] = 1  # 10 ground glass
    labels[2:3, 0:5] = 2  # 5 consolidation
    labels[9, 9] = 1  # outside the lungs: not counted
    burden = measure_burden(lung, labels, multiclass=True)
    assert burden.lung_area_fraction == 0.5
    assert burden.infection_fraction == pytest.approx(15 / 50)
    assert (burden.ggo_fraction, burden.consolidation_fraction) == pytest.approx((10 / 50, 5 / 50))


def test_infection_touching_the_lungs_is_kept_whole_and_counted_as_lung(tiny_ct_registry_dir):
    """The lung model can cut dense infection out of the lungs: a region that touches them is kept whole and the
    lungs grow by it; one that does not touch them is not infection."""
    from core.study import Study

    def logits(box_of_side):
        def run(x):
            out = np.full(x.shape, -20.0, dtype=np.float32)
            out[(..., *box_of_side(x.shape[-1]))] = 20.0
            return out
        return run

    pipeline = CtSlicePipeline(Registry.open(tiny_ct_registry_dir))
    pipeline.multiclass = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "lungs", logits(lambda n: (slice(n // 8, 7 * n // 8), slice(n // 8, n // 2))))
        patch.setattr(pipeline, "infection", logits(lambda n: (slice(n // 4, n // 2), slice(3 * n // 8, 5 * n // 8))))
        result = pipeline.analyse(Study(pixels=np.random.default_rng(0).random((96, 96), dtype=np.float32),
                                        file_format="png"))
    infected = result.infection_labels > 0
    assert infected[24:48, 36:60].all() and infected.sum() == 24 * 24  # the whole region, half of it past the lungs
    assert result.lung_mask[12:84, 12:48].all() and result.lung_mask[24:48, 48:60].all()  # lungs + the infection
    assert result.lung_mask.sum() == 72 * 36 + 24 * 12
    assert result.burden.infection_fraction == pytest.approx(24 * 24 / (72 * 36 + 24 * 12))

    with pytest.MonkeyPatch.context() as patch:  # the same region moved clear of the lungs: no infection
        patch.setattr(pipeline, "lungs", logits(lambda n: (slice(n // 8, 7 * n // 8), slice(n // 8, n // 2))))
        patch.setattr(pipeline, "infection", logits(lambda n: (slice(n // 4, n // 2), slice(5 * n // 8, 7 * n // 8))))
        result = pipeline.analyse(Study(pixels=np.random.default_rng(0).random((96, 96), dtype=np.float32),
                                        file_format="png"))
    assert not result.infection_labels.any() and result.burden.infection_fraction == 0.0


def test_a_slice_without_lungs_is_refused(tiny_ct_registry_dir):
    from core.study import Study

    pipeline = CtSlicePipeline(Registry.open(tiny_ct_registry_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "lungs", lambda x: np.full_like(x, -20.0))  # the lung model finds nothing
        with pytest.raises(UnsupportedInputError, match="No lungs were found"):
            pipeline.analyse(Study(pixels=np.random.default_rng(0).random((96, 96), dtype=np.float32), file_format="png"))


def test_benchmark_prints_the_ct_slice_stages(tiny_ct_registry_dir, capsys):
    from core.benchmark import CT_STAGES, run_ct_slice_benchmark

    rows = run_ct_slice_benchmark(Registry.open(tiny_ct_registry_dir), runs=2, size=128)
    assert [row["backend"] for row in rows] == ["torch", "onnx"]
    for row in rows:
        assert all(0 < row[stage][0] <= row[stage][1] for stage in CT_STAGES)
    assert "infection p50" in capsys.readouterr().out


def _asymmetric_slice(size: int = 96) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size] / size
    return (0.3 * cols + 0.6 * np.exp(-((rows - 0.4) ** 2 + (cols - 0.25) ** 2) / 0.02)).astype(np.float32)


def test_infection_views_undo_their_mirroring_and_resizing():
    """A 'model' whose logits are its input sees the same picture in every view: the averaged answer is the one-view
    answer, which it would not be if a mirrored view were not mirrored back."""
    from core.pipelines.ct_slice import InfectionViews, infection_probability_views
    from core.preprocess import segmenter_input

    pixels = _asymmetric_slice()
    calls = []

    def run(grey):
        calls.append(grey.shape[-1])
        return grey * 8 - 4

    def grey_at(size):
        return segmenter_input(pixels, size)[None]

    one = infection_probability_views(run, grey_at, 64, InfectionViews((64,)))
    assert one.shape == (1, 64, 64) and calls == [64]
    mirrored = infection_probability_views(run, grey_at, 64, InfectionViews((64,), flip=True))
    np.testing.assert_allclose(mirrored, one, atol=1e-6)
    several = infection_probability_views(run, grey_at, 64, InfectionViews((32, 64, 96), flip=True))
    assert several.shape == (1, 64, 64) and calls[-6:] == [32, 32, 64, 64, 96, 96]
    np.testing.assert_allclose(several, one, atol=0.06)  # resizing blurs a little, nothing moves


def test_the_pipeline_serves_the_views_on_the_infection_card(tiny_ct_registry_dir, tmp_path):
    import dataclasses
    import shutil

    from core.imaging.ct_input import ct_model_pixels
    from core.lung import probability_to_shape
    from core.pipelines.ct_slice import InfectionViews, infection_probability_views
    from core.preprocess import segmenter_input

    shutil.copytree(tiny_ct_registry_dir, tmp_path / "registry")
    registry = Registry.open(tmp_path / "registry")
    card = registry.card("tiny-ct-infection")
    assert InfectionViews.of(card) == InfectionViews((64,))  # no views on the card: the model's own size, once
    views = InfectionViews((32, 64), flip=True)
    registry.write_card(dataclasses.replace(card, input_config={"views": views.as_config()}))
    viewed = CtSlicePipeline(Registry.open(tmp_path / "registry"))
    assert InfectionViews.of(viewed.cards["infection"]) == views

    study = make_ct_phantom("covid", seed=3, size=96).to_study()
    result = viewed.analyse(study)
    plain = CtSlicePipeline(Registry.open(tiny_ct_registry_dir))
    pixels = ct_model_pixels(study)
    expected = infection_probability_views(plain.infection, lambda s: segmenter_input(pixels, s)[None], 64, views)[0]
    np.testing.assert_allclose(result.infection_probability, probability_to_shape(expected, pixels.shape), atol=1e-5)
    assert not np.allclose(result.infection_probability, plain.analyse(study).infection_probability, atol=1e-4)
