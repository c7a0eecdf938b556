"""The faster X-ray case gives the outputs it gave before (issue 12): each replaced piece against the library code
it replaced, and whole analyses with the old pieces patched back in against the served path.

Replaced: bilinear resizing with and without anti-aliasing (``core.imaging.resample`` for scikit-image's
``resize``), the overlays (look-up tables for matplotlib's colour map and the float blends, shifted comparisons for
``find_boundaries``), the lung measurements (``ndimage.label`` + ``bincount`` for ``regionprops``), the
attention maps (taken from Grad-CAM's forward pass instead of a second pass), the faithfulness base pass
(the probabilities just served instead of a repeated classification; the perturbed copies in one batch), and MANet's clean-up (one labelling each
for ``ndimage.binary_fill_holes`` and ``morphology.remove_small_objects``).
"""

from contextlib import nullcontext
from dataclasses import astuple

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from scipy import ndimage
from skimage import measure, morphology
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
from core.postprocess import LungMeasurements, fill_holes, manet_postprocess, measure_lungs, remove_small_objects
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
    class MaskBound(torch.nn.Module):  # net(image, mask) as net(image)
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image, mask)

    wrapped = (MaskBound() if mask is not None else net).eval()
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


def table_tint(rgb, mask, opacity, colour):  # the tint as it was before the state tables: per-channel tables, an erosion
    tint = np.array(colour, dtype=np.float32)
    levels = np.arange(256, dtype=np.uint8).astype(np.float32)
    tables = ((1 - opacity) * levels[:, None] + opacity * tint[None]).astype(np.uint8)
    out = np.array(rgb, dtype=np.uint8, copy=True)
    inside = out[mask]
    out[mask] = np.stack([tables[inside[:, c], c] for c in range(3)], axis=1)
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=1)
    out[mask & ~eroded] = tint.astype(np.uint8)
    return out


def table_colour_index(values, colormap):  # matplotlib's index as it was worked out before (intp, values' layout)
    scaled = np.clip(values, 0, 1) * colormap.N
    scaled[scaled == colormap.N] = colormap.N - 1
    bad = np.isnan(scaled)
    with np.errstate(invalid="ignore"):
        index = scaled.astype(np.intp)
    index[bad] = colormap.N + 2
    return index


def blobby(rng, shape, sigma, density):
    """Thresholded smoothed noise: a ``density`` share of the pixels, in blobs about ``sigma`` across."""
    smooth = gaussian(rng.random(shape), sigma)
    return smooth > np.quantile(smooth, 1 - density)


def special_masks():
    """Edges, corners, one-pixel shapes and holes that reach the edge (or only touch it diagonally)."""
    masks = {"empty": np.zeros((40, 50), bool), "full": np.ones((40, 50), bool), "pixel": np.ones((1, 1), bool),
             "no pixel": np.zeros((1, 1), bool), "row": np.array([[1, 0, 1, 1, 0, 1]], bool),
             "column": np.array([[1], [1], [0], [1]], bool), "2x2": np.array([[1, 0], [0, 1]], bool)}
    ring = np.zeros((30, 40), bool)
    ring[5:20, 5:25] = True
    ring[8:17, 8:22] = False  # a hole
    ring[10:12, 30:36] = True  # a 12-pixel object
    masks["ring"] = ring
    open_ring = ring.copy()
    open_ring[12:14, 5:8] = False  # the hole opened to the outside: not a hole any more
    masks["open ring"] = open_ring
    edge = np.zeros((30, 40), bool)
    edge[:12, :15] = True
    edge[:6, 4:9] = False  # a notch open at the top edge: not filled
    edge[4:9, 10:13] = False  # a hole next to it
    edge[-10:, -10:] = True
    edge[-8:-2, -1] = False  # open at the right edge
    edge[-6:-4, -6:-4] = False  # a hole in the corner block
    masks["edges"] = edge
    corner = np.ones((6, 6), bool)
    corner[0, 0] = corner[1, 1] = False  # (1, 1) meets the background at the edge only diagonally: a hole
    corner[3, 3] = False
    masks["diagonal"] = corner
    masks["checkerboard"] = (np.indices((21, 23)).sum(axis=0) % 2).astype(bool)  # single pixels everywhere
    frame = np.ones((25, 25), bool)
    frame[1:-1, 1:-1] = False  # one hole as large as the image, less its edge
    masks["frame"] = frame
    return masks


def plain_manet_postprocess(mask, min_object_fraction=0.005):  # the recipe as it was
    mask = ndimage.binary_fill_holes(mask.astype(bool))
    min_size = max(int(min_object_fraction * mask.size), 1)
    return morphology.remove_small_objects(mask, max_size=min_size - 1) if min_size > 1 else mask


def sizes_of(mask):
    labels = ndimage.label(mask)[0]
    return np.unique(np.bincount(labels.ravel())[1:])


def random_masks():
    rng = np.random.default_rng(12)
    for shape in [(1, 30), (9, 7), (64, 64), (100, 37), (257, 300)]:
        for sigma in (0.7, 2, 5):
            for density in (0.1, 0.3, 0.5, 0.7, 0.95):
                yield f"{shape} sigma {sigma} density {density}", blobby(rng, shape, sigma, density)


@pytest.mark.parametrize("name", list(special_masks()))
def test_fill_and_removal_are_scipy_and_scikit_image_on_special_masks(name):
    mask = special_masks()[name]
    assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    assert not np.shares_memory(fill_holes(mask), mask)
    for min_size in sorted({1, 2, 3, *sizes_of(mask), *(sizes_of(mask) + 1), mask.size, mask.size + 1}):
        expected = morphology.remove_small_objects(mask, max_size=min_size - 1)
        assert np.array_equal(remove_small_objects(mask, min_size), expected), min_size
        assert not np.shares_memory(remove_small_objects(mask, min_size), mask)
    for fraction in (0.0, 0.005, 0.02, 0.1, 0.5, 1.0):
        assert np.array_equal(manet_postprocess(mask, fraction), plain_manet_postprocess(mask, fraction)), fraction


def test_fill_and_removal_are_scipy_and_scikit_image_on_random_masks():
    for name, mask in random_masks():
        filled = ndimage.binary_fill_holes(mask)
        assert np.array_equal(fill_holes(mask), filled), name
        sizes = sizes_of(filled)  # a component exactly at the threshold stays, one pixel short goes
        for min_size in {1, 2, *sizes[:: max(len(sizes) // 4, 1)], *sizes[-2:], *(sizes[-2:] + 1)}:
            expected = morphology.remove_small_objects(filled, max_size=min_size - 1)
            assert np.array_equal(remove_small_objects(filled, min_size), expected), (name, min_size)
            fraction = min_size / mask.size  # the recipe at the same threshold, and just above and below it
            for f in (fraction, np.nextafter(fraction, 0), np.nextafter(fraction, 1), 0.005):
                assert np.array_equal(manet_postprocess(mask, f), plain_manet_postprocess(mask, f)), (name, f)


def test_manet_postprocess_is_the_recipe_on_lung_like_masks_and_other_dtypes():
    phantom = make_phantom("covid", seed=3, size=512)
    rng = np.random.default_rng(3)
    smooth = gaussian(phantom.lung_mask.astype(np.float32), 4)
    for strength in (1.0, 3.0, 6.0):  # from a clean prediction to specks and holes all over the image
        prob = smooth + strength * (gaussian(rng.random(smooth.shape), 2) - 0.5)
        for mask in (prob >= 0.5, (prob >= 0.5).astype(np.uint8), np.where(prob >= 0.5, prob, 0.0)):
            expected = plain_manet_postprocess(mask)
            assert ndimage.label(mask)[1] > 1 or strength == 1.0
            assert np.array_equal(manet_postprocess(mask), expected)
            assert manet_postprocess(mask).dtype == bool


def test_fill_and_removal_in_three_dimensions():
    rng = np.random.default_rng(4)
    for density in (0.2, 0.5, 0.8):
        mask = blobby(rng, (12, 30, 25), 1.5, density)
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        for min_size in (2, 10, 50):
            expected = morphology.remove_small_objects(mask, max_size=min_size - 1)
            assert np.array_equal(remove_small_objects(mask, min_size), expected)
        assert np.array_equal(manet_postprocess(mask, 0.001), plain_manet_postprocess(mask, 0.001))


def test_inner_boundary_is_find_boundaries():
    masks = list(special_masks().values()) + [mask for _, mask in random_masks()]
    rng = np.random.default_rng(5)
    masks += [blobby(rng, (10, 15, 12), 1.5, density) for density in (0.3, 0.7)]  # any number of dimensions
    for mask in masks:
        assert np.array_equal(viz.inner_boundary(mask), find_boundaries(mask, mode="inner"))
        assert np.array_equal(viz.inner_boundary(mask.astype(np.uint8)), find_boundaries(mask, mode="inner"))


def overlay_cases():
    rng = np.random.default_rng(6)
    for name, mask in list(special_masks().items()) + [(n, m) for n, m in random_masks() if m.shape[0] > 1][::3]:
        dtype = [np.float32, np.float64][len(name) % 2]
        gray = (rng.random(mask.shape) * 1.2 - 0.1).astype(dtype)  # values outside [0, 1] too
        yield name, gray, mask, float(rng.choice([0.0, 0.2, 0.35, 0.45, 1.0]))


def test_mask_and_infection_overlays_are_the_table_tints():
    rng = np.random.default_rng(7)
    for name, gray, mask, opacity in overlay_cases():
        rgb = viz.to_rgb(gray)
        expected = table_tint(rgb, mask, opacity, viz.LUNG_COLOUR)
        assert np.array_equal(expected, plain_tint(rgb, mask, opacity, viz.LUNG_COLOUR)), name  # the two references
        assert np.array_equal(viz.mask_overlay(gray, mask, opacity), expected), name
        assert np.array_equal(viz.mask_overlay(gray, mask.astype(np.uint8), opacity, (10, 20, 30)),
                              table_tint(rgb, mask, opacity, (10, 20, 30))), name
        colours = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        for colour in ((230, 30, 60), (255, 200, 0), (0, 0, 0)):
            expected = table_tint(colours, mask, opacity, colour)
            assert np.array_equal(viz.tint(colours, mask, opacity, colour), expected), name
        labels = np.where(mask, 1, 0) + 2 * (rng.random(mask.shape) < 0.3) * ~mask + 3 * (rng.random(mask.shape) < 0.05)
        labels[labels > 3] = 3  # some pixels of label 3: neither colour
        expected = rgb
        for label, colour in ((1, viz.GGO_COLOUR), (2, viz.CONSOLIDATION_COLOUR)):
            expected = table_tint(expected, labels == label, opacity, colour)
        assert np.array_equal(viz.infection_overlay(gray, labels, opacity), expected), name


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("cmap", ["jet", "viridis"])
def test_colour_index_is_matplotlib_s(order, cmap):
    colormap = colormaps[cmap]
    rng = np.random.default_rng(8)
    special = [0.0, -0.0, 1.0, np.nextafter(1.0, 0), 1.5, -0.5, np.nan, np.inf, -np.inf, 0.5, 1 / 256, 255 / 256,
               np.nextafter(255 / 256, 0), 1e-300]
    for dtype in (np.float32, np.float64, np.float16):
        values = np.asarray(rng.random((37, 41)) * 1.4 - 0.2, dtype=dtype, order=order)
        values.flat[: len(special)] = special
        values.flat[len(special): 2 * len(special)] = np.nextafter(np.array(special, dtype), dtype(1))
        index = viz._colour_index(values, colormap)
        assert index.flags.c_contiguous
        assert np.array_equal(index, table_colour_index(values, colormap))
        colours = colormap(np.clip(values, 0, 1))
        assert np.array_equal(colormap._lut[index], colours)
    for values in (np.array([[0, 1, 2, -1]]), np.array([[True, False]])):  # not floats
        assert np.array_equal(viz._colour_index(values, colormap), table_colour_index(values.astype(float), colormap))


@pytest.mark.parametrize("order", ["C", "F"])
def test_heat_overlay_is_the_plain_blend_in_either_memory_order(order):
    rng = np.random.default_rng(9)
    gray = (rng.random((150, 170)) * 1.2 - 0.1).astype(np.float32)
    heat = np.asarray(rng.random(gray.shape) * 1.2 - 0.1, dtype=np.float32, order=order)
    heat.flat[:3] = [np.nan, 1.0, 0.0]
    for opacity, cmap in ((0.45, "jet"), (0.3, "viridis"), (1.0, "jet")):
        expected = plain_heat_overlay(gray, heat, opacity, cmap)
        assert np.array_equal(viz.heat_overlay(gray, heat, opacity, cmap), expected)
    assert np.array_equal(viz.heat_overlay(np.asfortranarray(gray), heat), plain_heat_overlay(gray, heat))


def test_lung_measurements_are_regionprops_on_special_masks():
    masks = list(special_masks().values())
    middle = np.zeros((20, 41), bool)
    middle[5:15, 20] = True  # the centroid on the midline column: left, as regionprops' "<" says
    even = np.zeros((20, 40), bool)
    even[5:15, 19:21] = True  # centroid at 19.5 < 20: right
    dots = np.zeros((12, 300), bool)
    dots[::2, :200:2] = True  # many more components than rows
    specks = np.random.default_rng(10).random((12, 300)) < 0.1  # the same, not symmetric
    masks += [middle, even, dots, dots[:, ::-1].copy(), specks, np.ones((3, 1000), bool)]
    for mask in masks:
        assert astuple(measure_lungs(mask)) == astuple(regionprops_measurements(mask))
        assert all(type(value) is float for value in astuple(measure_lungs(mask))[:3])
    assert measure_lungs(dots).components == 6 * 100 and measure_lungs(specks).components > 12 * 2


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
    monkeypatch.setattr(core.pipelines.cxr, "case_scores",  # no probabilities (the base pass runs again), no batch
                        lambda *args, **kwargs: plain_scores(*args[:6]))


def in_default_layout(pipeline):
    """The classifier's PyTorch copy back in the default memory order (it is served channels-last)."""
    with pipeline.classifier_torch.exclusive() as net:
        net.to(memory_format=torch.contiguous_format)
    return pipeline


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
            if ours is not None:  # Grad-CAM's convolutions in channels-last order: float32 rounding
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
        # the perturbed copies now go through ONNX Runtime as one batch, whose float sums may end a bit
        # otherwise than one at a time: a probability moves by ~1e-7, one unit of the scores' 6th decimal at most
        assert new.faithfulness == pytest.approx(old.faithfulness, abs=1.1e-6)


@pytest.mark.parametrize("classifier", ["tiny-cls", "tiny-cls-lung-crop", "tiny-lung-only", "tiny-cxnet-three"])
def test_tiny_models_analyse_as_before(tiny_registry_dir, classifier, monkeypatch):
    torch.manual_seed(0)
    pipeline = CxrPipeline(Registry.open(tiny_registry_dir), backend="onnx", classifier=classifier)
    studies = [make_phantom(label, seed=seed, size=size).to_study()
               for label, seed, size in (("covid", 5, 200), ("normal", 2, 257), ("tb", 9, 320))]
    after = analyses(pipeline, studies)
    as_before(monkeypatch)
    assert_same(after, analyses(in_default_layout(pipeline), studies))


def test_bundled_models_analyse_as_before(bundled_weights_dir, monkeypatch):
    """The served MANet (lung crop, equalised, mask attention) on 1024 px phantoms, both backends."""
    registry = Registry.open(bundled_weights_dir)
    studies = [make_phantom(label, seed=7, size=1024).to_study() for label in ("covid", "normal")]
    pipelines = [CxrPipeline(registry, backend=backend) for backend in ("onnx", "torch")]
    after = [analyses(pipeline, studies) for pipeline in pipelines]
    as_before(monkeypatch)
    for pipeline, results in zip(pipelines, after):
        assert_same(results, analyses(in_default_layout(pipeline), studies))
