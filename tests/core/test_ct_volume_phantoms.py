"""Synthetic chest CT volumes: determinism, anatomy along z, lesions where the diseases put them, the asked
infection ratio, NIfTI demo cases, speed, and the bundled 2D CT lung model finding their lungs."""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import pytest
from scipy import ndimage as ndi

from core.ct_volume_phantoms import (
    CONSOLIDATION_RANGE,
    CT_VOLUME_LABELS,
    GGO_RANGE,
    CtVolumePhantom,
    draw_infection_ratio,
    make_ct_volume,
    write_ct_volume_demo_cases,
)

SHAPE = (48, 96, 96)
SPACING = (5.0, 3.6, 3.6)  # the default field of view on fewer voxels


@lru_cache(maxsize=16)
def phantom(label: str, seed: int, ratio: float | None = None) -> CtVolumePhantom:
    return make_ct_volume(label, seed, shape=SHAPE, spacing_mm=SPACING, infection_ratio=ratio)


def right_half(shape) -> np.ndarray:
    """The patient's right: small x (canonical frame)."""
    mask = np.zeros(shape, dtype=bool)
    mask[..., : shape[-1] // 2] = True
    return mask


def test_same_arguments_same_values_and_seeds_differ():
    again = make_ct_volume("covid", 3, shape=SHAPE, spacing_mm=SPACING, infection_ratio=0.05)
    first = phantom("covid", 3, 0.05)
    assert np.array_equal(again.hu, first.hu) and np.array_equal(again.infection_mask, first.infection_mask)
    assert not np.array_equal(phantom("covid", 4, 0.05).hu, first.hu)


def test_the_label_changes_only_the_lesions():
    covid, cap = phantom("covid", 2, 0.05), phantom("cap", 2, 0.05)
    assert np.array_equal(covid.lung_mask, cap.lung_mask)
    lesions = ndi.binary_dilation((covid.infection_mask > 0) | (cap.infection_mask > 0), np.ones((3, 3, 3)))  # blur
    assert np.array_equal(covid.hu[~lesions], cap.hu[~lesions])


def test_shapes_types_and_spacing():
    ph = phantom("cap", 0)
    assert ph.hu.shape == ph.lung_mask.shape == ph.infection_mask.shape == SHAPE
    assert ph.hu.dtype == np.float32 and ph.lung_mask.dtype == bool and ph.infection_mask.dtype == np.uint8
    assert ph.spacing_mm == SPACING and ph.label == "cap" and ph.seed == 0
    assert set(np.unique(ph.infection_mask)) <= {0, 1, 2}
    assert 0.04 < ph.lung_mask.mean() < 0.2


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_ct_volume("non-covid")
    with pytest.raises(ValueError):
        make_ct_volume("covid", shape=(8, 96, 96))
    with pytest.raises(ValueError):
        make_ct_volume("covid", spacing_mm=(0.0, 1.0, 1.0))
    for ratio in (0.0, -0.1, 0.9):
        with pytest.raises(ValueError):
            make_ct_volume("covid", shape=SHAPE, infection_ratio=ratio)
    assert CT_VOLUME_LABELS == ("covid", "cap")


# --------------------------------------------------------------------------------------------------
# anatomy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_lungs_of_aerated_lung_inside_the_field(seed):
    ph = phantom("covid", seed, 0.01)
    assert ndi.label(ph.lung_mask)[1] == 2
    assert ph.lung_mask[..., : SHAPE[2] // 2].any() and ph.lung_mask[..., SHAPE[2] // 2 :].any()
    parenchyma = ph.hu[ph.lung_mask & (ph.infection_mask == 0) & ~ph.vessel_mask & ~ph.airway_mask]
    assert -900 < np.median(parenchyma) < -800
    assert not ph.lung_mask[0].any() and not ph.lung_mask[-1].any()  # the scan covers bases and apices


def test_lungs_taper_to_the_apex_and_stop_on_the_diaphragm():
    ph = phantom("cap", 0)
    area = ph.lung_mask.sum(axis=(1, 2))
    rows = np.flatnonzero(area)
    widest = int(np.argmax(area))
    assert rows[0] < widest < rows[-1]
    assert area[rows[-1]] < 0.2 * area.max()  # the apex is small
    assert np.all(np.diff(area[widest:]) <= 0.02 * area.max())  # and the lungs shrink towards it
    below = ph.hu[rows[0] - 1][ph.lung_mask[widest]]  # under the lowest lung: soft tissue (liver, spleen)
    assert np.median(below) > 0


def test_the_right_dome_is_higher_on_average():
    """The liver lifts the right hemidiaphragm: the right lung has less volume in its lowest slices."""
    lower_right, lower_left = 0, 0
    for seed in range(4):
        ph = phantom("cap", seed)
        rows = np.flatnonzero(ph.lung_mask.any(axis=(1, 2)))
        base = ph.lung_mask[rows[0] : rows[0] + 6]
        lower_right += base[..., : SHAPE[2] // 2].sum()
        lower_left += base[..., SHAPE[2] // 2 :].sum()
    assert lower_right < lower_left


def test_the_trachea_is_air_outside_the_lungs():
    ph = phantom("covid", 0, 0.01)
    top = ph.airway_mask[-1]
    assert top.any() and not (top & ph.lung_mask[-1]).any()
    assert np.median(ph.hu[-1][top]) < -900


def test_vessels_are_blood_and_thicker_towards_the_hila():
    ph = make_ct_volume("covid", 0, infection_ratio=0.01)  # full resolution: 1.8 mm voxels
    depth = ndi.distance_transform_edt(ph.lung_mask, sampling=ph.spacing_mm)
    vessels = ph.vessel_mask & (ph.infection_mask == 0)
    assert np.median(ph.hu[vessels & (depth > 8)]) > -400
    radius = ndi.maximum_filter(ndi.distance_transform_edt(vessels, sampling=ph.spacing_mm), 5)  # local half-width
    assert radius[vessels & (depth > 15)].mean() > 1.2 * radius[vessels & (depth < 5)].mean()


def test_axial_slices_are_radiological():
    """Anterior at the top (small y): the sternum in front of the heart, the spine behind it."""
    ph = phantom("covid", 0, 0.01)
    rows = np.flatnonzero(ph.lung_mask.any(axis=(1, 2)))
    k = (rows[0] + rows[-1]) // 2
    centre = ph.hu[k, :, SHAPE[2] // 2 - 2 : SHAPE[2] // 2 + 3].mean(axis=1)
    bone = np.flatnonzero(centre > 300)
    assert bone.size and bone.max() > SHAPE[1] // 2  # the vertebra is posterior
    lungs_y = np.nonzero(ph.lung_mask)[1]
    assert lungs_y.min() > 5 and lungs_y.max() < SHAPE[1] - 5


# --------------------------------------------------------------------------------------------------
# lesions


@pytest.mark.parametrize("ratio", [0.0005, 0.003, 0.02, 0.1, 0.3])
@pytest.mark.parametrize("label", CT_VOLUME_LABELS)
def test_an_asked_infection_ratio_is_met(label, ratio):
    ph = phantom(label, 5, ratio)
    assert ph.infection_ratio == pytest.approx(ratio, rel=0.3)
    assert not (ph.infection_mask > 0)[~ph.lung_mask].any()


def test_every_volume_has_a_lesion():
    ph = make_ct_volume("cap", 1, shape=SHAPE, spacing_mm=SPACING, infection_ratio=1e-9)
    assert 1 <= np.count_nonzero(ph.infection_mask) < 10


def test_drawn_ratios_give_the_papers_group_weights_of_about_one_and_a_half():
    covid = np.array([draw_infection_ratio("covid", seed) for seed in range(600)])
    cap = np.array([draw_infection_ratio("cap", seed) for seed in range(600)])
    covid_large, cap_small = (covid >= 0.03).sum(), (cap <= 0.001).sum()
    assert 1.3 < covid_large / (len(covid) - covid_large) < 1.7  # W covid-small = N large / N small
    assert 1.3 < cap_small / (len(cap) - cap_small) < 1.7  # W cap-large = N small / N large
    assert (covid < 0.005).mean() > 0.05 and (cap > 0.03).mean() > 0.05  # the groups overlap
    assert phantom("covid", 7).infection_ratio == pytest.approx(draw_infection_ratio("covid", 7), rel=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_covid_is_bilateral_peripheral_and_posterior(seed):
    ph = phantom("covid", seed, 0.05)
    infected = ph.infection_mask > 0
    right = right_half(SHAPE)
    assert (infected & right).sum() > 0.1 * infected.sum() and (infected & ~right).sum() > 0.1 * infected.sum()
    depth = ndi.distance_transform_edt(ph.lung_mask, sampling=SPACING)
    assert depth[infected].mean() < 0.7 * depth[ph.lung_mask].mean()  # subpleural
    y = np.nonzero(ph.lung_mask)[1], np.nonzero(infected)[1]
    assert y[1].mean() > y[0].mean()  # posterior (dependent)
    ggo = ph.hu[(ph.infection_mask == 1) & ~ph.vessel_mask & ~ph.airway_mask]
    assert GGO_RANGE[0] - 30 < np.median(ggo) < GGO_RANGE[1] + 30
    assert (ph.infection_mask == 1).sum() > (ph.infection_mask == 2).sum()  # ground glass first


def test_covid_comes_with_and_without_consolidation():
    shares = [(phantom("covid", seed, 0.05).infection_mask == 2).mean() for seed in range(8)]
    assert min(shares) == 0 and max(shares) > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cap_is_unilateral_consolidation_with_air_bronchograms(seed):
    ph = phantom("cap", seed, 0.06)
    infected = ph.infection_mask > 0
    right = right_half(SHAPE)
    assert min((infected & right).sum(), (infected & ~right).sum()) < 0.02 * infected.sum()  # one lung
    solid = ph.infection_mask == 2
    assert solid.sum() > 0.5 * infected.sum()
    assert CONSOLIDATION_RANGE[0] - 30 < np.median(ph.hu[solid & ~ph.airway_mask]) < CONSOLIDATION_RANGE[1] + 30
    assert (solid & ph.airway_mask).any()  # bronchi still hold air inside the consolidation


def test_small_cap_is_one_segmental_focus():
    ph = phantom("cap", 3, 0.002)
    labels, _ = ndi.label(ph.infection_mask > 0)
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.max() > 0.8 * sizes.sum()


# --------------------------------------------------------------------------------------------------
# as a loaded volume, as demo files, speed


def test_to_volume_is_a_synthetic_canonical_volume():
    ph = phantom("covid", 0, 0.01)
    volume = ph.to_volume()
    assert np.array_equal(volume.hu, ph.hu) and tuple(volume.spacing_mm) == SPACING
    assert volume.synthetic and volume.file_format == "synthetic"


def test_demo_cases_are_small_nifti_files_that_load_back(tmp_path):
    from core.io.nifti import load_nifti

    paths = write_ct_volume_demo_cases(tmp_path)
    volumes = [p for p in paths if p.name.endswith(".nii.gz")]
    assert len(volumes) >= 3 and any(p.suffix == ".txt" for p in paths)
    for path in volumes:
        assert path.stat().st_size < 3_000_000
        loaded = load_nifti(path.read_bytes())
        assert loaded.hu.shape == (80, 160, 160)
        assert tuple(loaded.spacing_mm) == pytest.approx((3.0, 2.16, 2.16))
    covid = load_nifti(volumes[0].read_bytes())
    expected = make_ct_volume("covid", 0, shape=(80, 160, 160), spacing_mm=(3.0, 2.16, 2.16), infection_ratio=0.12)
    assert np.abs(covid.hu - expected.hu).max() <= 0.5 + 1e-3  # int16 HU, same frame


def test_a_default_volume_is_fast():
    """96 x 192 x 192 in <= 2 s on the project's CPU; the bound here leaves room for a busy machine."""
    start = time.perf_counter()
    ph = make_ct_volume("covid", 11)
    assert time.perf_counter() - start < 6.0
    assert ph.hu.shape == (96, 192, 192)


# --------------------------------------------------------------------------------------------------
# the bundled 2D CT lung model, slice by slice as served


def test_the_bundled_ct_lung_model_finds_the_phantom_lungs(bundled_weights_dir):
    """Dice >= 0.85 on every 3rd axial slice of the central half of the lungs (scripts/check_ct_volume_phantoms.py)."""
    from core.imaging.ct_input import hu_to_model_pixels
    from core.lung import lung_mask_from_probability, lung_probability_small, probability_to_shape
    from core.registry import Registry
    from core.runtime import OnnxModel

    registry = Registry.open(bundled_weights_dir)
    if "ct-lungs-resunet" not in {card.name for card in registry.cards("ct-lung-segmentation")}:
        pytest.skip("the bundled weights lack ct-lungs-resunet")
    card = registry.card("ct-lungs-resunet")
    model = OnnxModel(registry.verified_path(card, "onnx"))
    for label, seed in (("covid", 0), ("covid", 1), ("cap", 2)):
        ph = make_ct_volume(label, seed)
        rows = np.flatnonzero(ph.lung_mask.any(axis=(1, 2)))
        quarter = (rows[-1] - rows[0]) // 4
        for k in range(rows[0] + quarter, rows[-1] - quarter + 1, 3):
            pixels = hu_to_model_pixels(ph.hu[k])
            small = lung_probability_small(pixels, model, card.input_size)
            served = lung_mask_from_probability(probability_to_shape(small, pixels.shape))
            truth = ph.lung_mask[k]
            dice = 2 * (served & truth).sum() / (served.sum() + truth.sum())
            assert dice >= 0.85, f"{label} seed {seed} slice {k}: Dice {dice:.3f}"
