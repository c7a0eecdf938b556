"""The faster X-ray case gives the outputs it gave before (issue 12): each replaced piece against the library code
it replaced, and whole analyses with the old pieces patched back in against the served path.

Replaced: bilinear resizing with and without anti-aliasing (``core.imaging.resample`` for scikit-image's
``resize``), the overlays (look-up tables for matplotlib's colour map and the float blends, an erosion for
``find_boundaries``), the lung measurements (``ndimage.label`` + ``bincount`` for ``regionprops``), the
attention maps (taken from Grad-CAM's forward pass instead of a second pass) and the faithfulness base pass
(the probabilities just served instead of a repeated classification).
"""

from contextlib import nullcontext
from dataclasses import astuple

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from skimage import measure
from skimage.filters import gaussian
from skimage.segmentation import find_boundaries
from skimage.transform import resize as skimage_resize

import core.explain
import core.lung
import core.pipelines.cxr
import core.postprocess
import core.preprocess
import models
from core import viz
from core.imaging.resample import resize, resize_antialiased
from core.phantoms import make_phantom
from core.pipelines.cxr import CxrPipeline
from core.postprocess import LungMeasurements, measure_lungs
from core.preprocess import classifier_input, segmenter_input
from core.registry import Registry

SHAPES = [((1024, 1024), (256, 256)), ((256, 256), (1024, 1024)), ((128, 128), (1000, 1024)), ((700, 813), (128, 128)),
          ((37, 50), (128, 128)), ((128, 128), (37, 50)), ((1, 5), (4, 9)), ((2, 2), (7, 3)), ((300, 200), (224, 224))]


def skimage_bilinear(image, shape):
    return skimage_resize(image, shape, order=1, preserve_range=True, anti_aliasing=False)


@pytest.mark.parametrize(("source", "target"), SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resize_is_scikit_image_resize(source, target, dtype):
    image = np.random.default_rng(sum(source) + sum(target)).random(source).astype(dtype)
    ours = resize(image, target)
    assert np.abs(ours - skimage_bilinear(image.astype(np.float64), target)).max() < 1e-12
    if dtype is np.float32:  # scikit-image works in float32 here, as the app keeps it: the same float32 values,
        expected = skimage_bilinear(image, target)  # bar a rare last bit (the terms of a sum come in another order)
        np.testing.assert_array_max_ulp(ours.astype(np.float32), expected, maxulp=1)
        assert np.mean(ours.astype(np.float32) != expected) < 1e-4


def test_resize_refuses_what_it_cannot_do():
    with pytest.raises(ValueError):
        resize(np.zeros((2, 3, 3)), (4, 4))


AA_SHAPES = [((1024, 1024), (256, 256)), ((1024, 1024), (224, 224)), ((700, 813), (128, 128)), ((2000, 1800), (224, 224)),
             ((300, 200), (224, 224)), ((37, 50), (16, 16)), ((5, 9), (1, 2)), ((37, 50), (128, 128))]


def skimage_antialiased(image, shape):
    return skimage_resize(image, shape, order=1, preserve_range=True, anti_aliasing=True)


def assert_antialiased_as_scikit_image(image, target):
    ours, expected = resize_antialiased(image, target), skimage_antialiased(image, target)
    assert ours.shape == tuple(target) and ours.dtype == np.float64 and ours.flags.c_contiguous
    if expected.dtype == np.float64:  # the Gaussian's sums take the same terms in another order: the last bit
        assert np.abs(ours - expected).max() <= 1e-15 * max(1.0, np.abs(expected).max())  # measured <= 4.5e-16
    else:  # scikit-image rounds to float32 after each pass of its Gaussian and at the end: so does resize_antialiased
        ours = ours.astype(np.float32)
        np.testing.assert_array_max_ulp(ours, expected, maxulp=1)
        assert np.mean(ours != expected) <= 1e-5  # measured: none differ, on all these (and 4M smoothed values)
    return ours, expected


@pytest.mark.parametrize(("source", "target"), AA_SHAPES)  # incl. one axis growing (300 -> 224), both growing
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_antialiased_resize_is_scikit_image_resize(source, target, dtype):
    image = np.random.default_rng(sum(source) + sum(target)).random(source).astype(dtype)
    assert_antialiased_as_scikit_image(image, target)


@pytest.mark.parametrize("target", [(256, 256), (224, 224), (37, 300)])
def test_antialiased_resize_of_phantoms_masks_and_constants(target):
    phantom = make_phantom("covid", seed=3, size=1024)
    assert_antialiased_as_scikit_image(phantom.pixels, target)
    assert_antialiased_as_scikit_image(phantom.pixels.astype(np.float64) * 4095, target)
    assert_antialiased_as_scikit_image((phantom.pixels * 4095).astype(np.uint16), target)  # as float64, like scikit-image
    ours, expected = assert_antialiased_as_scikit_image(phantom.lung_mask.astype(np.float32), target)  # classifier_input's
    assert np.array_equal(ours >= 0.5, expected >= 0.5)
    constant = np.full((1024, 1024), 0.37, np.float32)
    ours, _ = assert_antialiased_as_scikit_image(constant, target)
    assert (ours == np.float32(0.37)).all()


def test_antialiased_resize_refuses_what_scikit_image_refuses():
    with pytest.raises(ValueError):
        resize_antialiased(np.zeros((8, 8), bool), (4, 4))
    with pytest.raises(ValueError):
        resize_antialiased(np.zeros((2, 8, 8)), (4, 4))


@pytest.mark.parametrize(("label", "seed", "size", "target"),
                         [("covid", 3, 1024, 256), ("tb", 4, 1024, 224), ("normal", 5, 700, 224), ("covid", 6, 333, 256)])
def test_model_inputs_are_as_before(label, seed, size, target, monkeypatch):
    """The segmenter's and the classifier's inputs (image and the lung mask thresholded at 0.5) on phantoms."""
    phantom = make_phantom(label, seed=seed, size=size)

    def inputs():
        return [segmenter_input(phantom.pixels, target)[0],
                *classifier_input(phantom.pixels, phantom.lung_mask, target),
                *classifier_input(phantom.pixels, phantom.lung_mask, target, equalise=True)]

    after = inputs()
    calls = []
    monkeypatch.setattr(core.preprocess, "bilinear_antialiased", lambda *args: calls.append(1) or skimage_antialiased(*args))
    before = inputs()
    assert len(calls) == 5  # the old resizing did run: the segmenter's image, the classifier's image and mask twice
    for new, old in zip(after, before):
        assert new.dtype == old.dtype == np.float32
        assert np.array_equal(new, old)


def plain_heat_overlay(gray, heat, opacity=0.45, cmap="jet"):  # the blend as it was
    colours = colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    base = viz.to_rgb(gray).astype(np.float32) / 255.0
    return (np.clip((1 - opacity) * base + opacity * colours, 0, 1) * 255).astype(np.uint8)


def plain_tint(rgb, mask, opacity, colour):
    out = rgb.astype(np.float32)
    tint = np.array(colour, dtype=np.float32)
    out[mask] = (1 - opacity) * out[mask] + opacity * tint
    out[find_boundaries(mask, mode="inner")] = tint
    return out.astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_overlays_are_the_plain_blends(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(40, 300, 2))
    gray = (rng.random(shape) * 1.2 - 0.1).astype(np.float32)  # values outside [0, 1] too
    heat = rng.random(shape).astype([np.float32, np.float64][seed % 2])
    heat.flat[:4] = [0.0, 1.0, np.nan, 1.5]
    mask = gaussian(rng.random(shape), 3) > 0.5
    mask[0] = True  # touching the image's edge
    opacity = [0.0, 0.35, 0.45, 1.0, 0.7, 0.2][seed]
    assert np.array_equal(viz.heat_overlay(gray, heat, opacity), plain_heat_overlay(gray, heat, opacity))
    assert np.array_equal(viz.mask_overlay(gray, mask, opacity), plain_tint(viz.to_rgb(gray), mask, opacity, viz.LUNG_COLOUR))
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert np.array_equal(viz.tint(rgb, mask, opacity, (230, 30, 60)), plain_tint(rgb, mask, opacity, (230, 30, 60)))
    assert np.array_equal(viz.inner_boundary(mask), find_boundaries(mask, mode="inner"))


def regionprops_measurements(mask):  # the measurements as they were
    labels = measure.label(mask, connectivity=2)
    right = left = 0
    regions = measure.regionprops(labels)
    for region in regions:
        if region.centroid[1] < mask.shape[1] / 2.0:
            right += region.area
        else:
            left += region.area
    return LungMeasurements(float(mask.mean()), right / mask.size, left / mask.size, len(regions))


@pytest.mark.parametrize("seed", range(8))
def test_lung_measurements_are_regionprops(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(20, 300, 2))
    mask = gaussian(rng.random(shape), rng.uniform(1, 6)) > rng.uniform(0.45, 0.55)
    mask = np.zeros(shape, bool) if seed == 0 else np.ones(shape, bool) if seed == 1 else mask
    assert astuple(measure_lungs(mask)) == astuple(regionprops_measurements(mask))


def full_graph_grad_cam(net, image, mask, class_index, single_logit=False):
    """pytorch-grad-cam as it comes: the whole graph recorded, every weight differentiated."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    target = BinaryClassifierOutputTarget(class_index) if single_logit else ClassifierOutputTarget(class_index)
    wrapped = (core.explain.MaskBound(net, mask) if mask is not None else net).eval()
    cam = GradCAM(model=wrapped, target_layers=[net.gradcam_layer])
    try:
        return cam(input_tensor=image, targets=[target])[0]
    finally:
        cam.activations_and_grads.release()


GRAD_CAM_NETWORKS = {  # every kind of classifier the app explains (in-place ReLUs after the hooked layer in some)
    "manet-resnet34-mask": (dict(name="resnet34", attention="mask", num_classes=5, width=8), (1, 64), True, False),
    "vgg16-mask": (dict(name="vgg16", width=4, hidden=8), (1, 64), True, False),
    "inception-mask": (dict(name="inception_v3", attention="mask", num_classes=3, width=8), (1, 160), True, False),
    "cxnet-base": (dict(name="cxnet_base", in_chans=1, input_size=128, num_outputs=1), (1, 128), False, True),
    "densenet121": (dict(name="timm_densenet121", num_classes=3), (1, 64), False, False),
    "multisource-branch": (dict(name="multisource_branch", backbone="resnet50", width=0.125), (1, 64), False, True),
}


@pytest.mark.parametrize("network", sorted(GRAD_CAM_NETWORKS))
def test_grad_cam_is_the_full_graph_grad_cam(network):
    config, (channels, size), takes_mask, single_logit = GRAD_CAM_NETWORKS[network]
    torch.manual_seed(0)
    net = models.create_model(**config).eval()
    image = torch.rand(1, channels, size, size)
    mask = (torch.rand(1, 1, size, size) > 0.3).float() if takes_mask else None
    maps = []
    for class_index in (0, 1):
        expected = full_graph_grad_cam(net, image, mask, class_index, single_logit)
        net.zero_grad(set_to_none=True)
        maps.append(core.explain.grad_cam(net, image, mask, class_index, single_logit))
        np.testing.assert_allclose(maps[-1], expected, rtol=0, atol=1e-6)
    assert max(m.max() for m in maps) > 0  # not only all-zero maps compared
    assert all(p.requires_grad and p.grad is None for p in net.parameters())  # left as found, no gradients kept


def test_grad_cam_of_a_class_the_network_lacks_raises():
    net = models.create_model("resnet34", attention="mask", num_classes=2, width=8).eval()
    with pytest.raises(IndexError):
        core.explain.grad_cam(net, torch.rand(1, 1, 64, 64), torch.ones(1, 1, 64, 64), class_index=5)


def test_grad_cam_of_a_volume_is_the_full_graph_grad_cam():
    torch.manual_seed(0)
    net = models.create_model("resnet3d34_attention", num_classes=2, width=4).eval()
    volume = torch.rand(1, 1, 16, 32, 32)
    np.testing.assert_allclose(core.explain.grad_cam(net, volume, None, 1), full_graph_grad_cam(net, volume, None, 1),
                               rtol=0, atol=1e-6)


def as_before(monkeypatch):
    """Patch the replaced pieces back in: scikit-image resizing (anti-aliased too), regionprops, a separate
    attention pass."""
    monkeypatch.setattr(core.lung, "bilinear", skimage_bilinear)
    monkeypatch.setattr(core.explain, "bilinear", skimage_bilinear)
    monkeypatch.setattr(core.preprocess, "bilinear", skimage_bilinear)
    monkeypatch.setattr(core.preprocess, "bilinear_antialiased", skimage_antialiased)
    monkeypatch.setattr(core.pipelines.cxr, "measure_lungs", regionprops_measurements)
    monkeypatch.setattr(core.explain, "_backward_stops_at", lambda net, layer: nullcontext())

    def separate_passes(net, image, mask, class_index, single_logit=False):
        heat = core.explain.grad_cam(net, image, mask, class_index, single_logit)
        return heat, core.explain.mask_attention_maps(net, image, mask)

    monkeypatch.setattr(core.pipelines.cxr, "grad_cam_with_attention", separate_passes)
    plain_scores = core.pipelines.cxr.case_scores
    monkeypatch.setattr(core.pipelines.cxr, "case_scores",
                        lambda *args, **kwargs: plain_scores(*args[:6]))  # no probabilities: the base pass runs again


def analyses(pipeline, studies):
    return [pipeline.analyse(study, explain=True, faithfulness=True) for study in studies]


def assert_same(after, before):
    for new, old in zip(after, before):
        assert np.array_equal(new.lung_mask, old.lung_mask)
        np.testing.assert_array_max_ulp(new.lung_probability, old.lung_probability, maxulp=1)  # a rare last bit
        assert astuple(new.lung) == astuple(old.lung)
        assert new.probabilities == pytest.approx(old.probabilities, abs=1e-6)
        np.testing.assert_allclose(new.logits, old.logits, rtol=0, atol=1e-5)
        for ours, theirs in ((new.gradcam, old.gradcam), (new.attention_map, old.attention_map)):
            assert (ours is None) == (theirs is None)
            if ours is not None:
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
        assert new.faithfulness == pytest.approx(old.faithfulness, abs=1e-6)


@pytest.mark.parametrize("classifier", ["tiny-cls", "tiny-cls-lung-crop", "tiny-lung-only", "tiny-cxnet-three"])
def test_tiny_models_analyse_as_before(tiny_registry_dir, classifier, monkeypatch):
    torch.manual_seed(0)
    pipeline = CxrPipeline(Registry.open(tiny_registry_dir), backend="onnx", classifier=classifier)
    studies = [make_phantom(label, seed=seed, size=size).to_study()
               for label, seed, size in (("covid", 5, 200), ("normal", 2, 257), ("tb", 9, 320))]
    after = analyses(pipeline, studies)
    as_before(monkeypatch)
    assert_same(after, analyses(pipeline, studies))


def test_bundled_models_analyse_as_before(bundled_weights_dir, monkeypatch):
    """The served MANet (lung crop, equalised, mask attention) on 1024 px phantoms, both backends."""
    registry = Registry.open(bundled_weights_dir)
    studies = [make_phantom(label, seed=7, size=1024).to_study() for label in ("covid", "normal")]
    pipelines = [CxrPipeline(registry, backend=backend) for backend in ("onnx", "torch")]
    after = [analyses(pipeline, studies) for pipeline in pipelines]
    as_before(monkeypatch)
    for pipeline, results in zip(pipelines, after):
        assert_same(results, analyses(pipeline, studies))
