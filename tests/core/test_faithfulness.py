"""Heat-map faithfulness (``core.faithfulness``) on a toy model whose answer is known, and in the X-ray pipeline.

The toy model looks only at the texture of the image's top-left quadrant: a heat map on that quadrant must
score high (blurring it removes the evidence), one elsewhere must score about zero or below, as random pixels do.
"""

import numpy as np
import pytest

from core.faithfulness import deletion_score, in_lung_share, random_masks, summary, top_mask

S = 32


def quadrant_model(arrays):
    """P(class 1) rises with the energy of the top-left quadrant's texture; nothing else matters."""
    x = arrays[0][0, : S // 2, : S // 2]
    p = 1 / (1 + np.exp(-10 * (float(np.mean(x ** 2)) - 0.5)))
    return np.array([1 - p, p])


def textured_case():
    image = np.zeros((1, S, S), np.float32)
    rows, cols = np.indices((S // 2, S // 2))
    image[0, : S // 2, : S // 2] = np.where((rows + cols) % 2, 1.0, -1.0)  # a checkerboard: blurring removes it
    return (image,)


def quadrant_heat(row, col):
    heat = np.zeros((S, S), np.float32)
    heat[row * S // 2:(row + 1) * S // 2, col * S // 2:(col + 1) * S // 2] = 1.0
    return heat


def test_masks_have_the_asked_size_and_are_seeded():
    heat = np.random.default_rng(1).random((S, S))
    top = top_mask(heat, 0.2)
    assert top.sum() == round(0.2 * S * S) and heat[top].min() >= heat[~top].max()
    first, again = random_masks((S, S), 50, 3, seed=4), random_masks((S, S), 50, 3, seed=4)
    assert all(m.sum() == 50 for m in first) and all((a == b).all() for a, b in zip(first, again))


def test_the_quadrant_the_model_reads_scores_high_and_others_low():
    inputs = textured_case()
    assert quadrant_model(inputs)[1] > 0.99
    right = deletion_score(quadrant_model, inputs, quadrant_heat(0, 0), class_index=1)
    assert right["top_drop"] > 0.9 and right["random_drop"] < 0.1
    assert right["deletion_score"] > 0.8
    for row, col in ((0, 1), (1, 0), (1, 1)):  # a heat map on a region the model ignores
        wrong = deletion_score(quadrant_model, inputs, quadrant_heat(row, col), class_index=1)
        assert wrong["top_drop"] == pytest.approx(0, abs=1e-6)
        assert -0.15 < wrong["deletion_score"] <= 0
    again = deletion_score(quadrant_model, inputs, quadrant_heat(0, 0), class_index=1)
    assert again == right  # seeded: the same case always gets the same score


def test_only_the_first_input_is_perturbed_and_the_grid_is_checked():
    seen = []

    def model(arrays):
        seen.append(arrays[1].copy())
        return quadrant_model(arrays)

    mask = np.ones((1, S, S), np.float32)
    deletion_score(model, (*textured_case(), mask), quadrant_heat(0, 0), class_index=1)
    assert len(seen) == 5 and all((m == mask).all() for m in seen)  # case, top, 3 random
    with pytest.raises(ValueError):
        deletion_score(quadrant_model, textured_case(), np.zeros((S // 2, S // 2)), class_index=1)


def test_in_lung_share():
    lungs = np.zeros((S, S), bool)
    lungs[:, : S // 2] = True
    assert in_lung_share(quadrant_heat(0, 0), lungs) == pytest.approx(1.0)
    assert in_lung_share(quadrant_heat(0, 1), lungs) == pytest.approx(0.0)
    assert in_lung_share(np.ones((S, S)), lungs) == pytest.approx(0.5)
    assert np.isnan(in_lung_share(np.zeros((S, S)), lungs))


def test_summary_leaves_out_missing_values():
    s = summary([0.1, 0.3, float("nan"), None, 0.5])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.3) and s["median"] == pytest.approx(0.3)
    assert summary([])["n"] == 0


@pytest.mark.parametrize("classifier", ["tiny-cls", "tiny-lung-only", "tiny-cxnet-three"])
def test_the_pipeline_fills_the_scores_only_when_asked(tiny_registry_dir, classifier):
    from core.phantoms import make_phantom
    from core.pipelines.cxr import CxrPipeline
    from core.registry import Registry
    from core.study import Study

    pipeline = CxrPipeline(Registry.open(tiny_registry_dir), classifier=classifier)
    study = Study(make_phantom("covid", seed=2, size=128).pixels, "png", synthetic=True)
    plain = pipeline.analyse(study)
    assert plain.faithfulness is None and "faithfulness" not in plain.timings_ms
    result = pipeline.analyse(study, faithfulness=True)
    scores = result.faithfulness
    if not np.any(result.gradcam > 0):  # random tiny weights may give an all-zero Grad-CAM: nothing to score
        assert set(scores.values()) == {None}
        return
    assert -1 <= scores["deletion_score"] <= 1 and 0 <= scores["in_lung_share"] <= 1
    assert scores["deletion_score"] == pytest.approx(scores["top_drop"] - scores["random_drop"], abs=1e-5)
    assert scores["in_lung_share"] == pytest.approx(in_lung_share(result.gradcam, result.lung_mask), abs=1e-5)
    assert result.probabilities == plain.probabilities and "faithfulness" in result.timings_ms
    assert pipeline.analyse(study, explain=False, faithfulness=True).faithfulness is None


def test_a_batched_predictor_gives_the_same_scores_in_one_call():
    calls = []

    def batched(arrays):
        calls.append(arrays[0].shape)
        return np.stack([quadrant_model([image, mask]) for image, mask in zip(*arrays)])

    inputs = (*textured_case(), np.ones((1, S, S), np.float32))
    for heat in (quadrant_heat(0, 0), quadrant_heat(1, 1)):
        assert deletion_score(quadrant_model, inputs, heat, 1, predict_batch=batched) == \
            deletion_score(quadrant_model, inputs, heat, 1)
    assert calls == [(4, 1, S, S)] * 2  # the top pixels and 3 random masks, one call per score
