"""The dual-sampling recipe's volume layouts: a NIfTI folder and a folder of DICOM series with a labels.csv,
masks given or found by the segmentation hook, and the cache the recipe trains from."""

import csv
import sys

import numpy as np
import pytest

from core.imaging.volume_input import classifier_input, quantise
from core.io import load_volume_path
from core.io.nifti import nifti_bytes
from core.io.series import dicom_series_bytes
from training import volume_data
from training.volume_data import InputSettings, SyntheticSettings, build_volume_set, read_volume_records

SHAPE, SPACING = (16, 48, 48), (15.0, 7.2, 7.2)
SETTINGS = InputSettings((16, 32, 32), 8.0, SyntheticSettings(SHAPE, SPACING))


def phantom(label, seed):
    return volume_data.synthetic_volume(label, seed, SHAPE, SPACING)


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def expected_input(path, p):
    """The classifier input of the phantom as the file stores it (HU rounded, spacing as the header gives it)."""
    volume = load_volume_path(path)
    lungs = p.lung_mask | (p.infection_mask > 0)
    return quantise(classifier_input(volume.hu, lungs, volume.spacing_mm, SETTINGS.shape, SETTINGS.factor)[0])


def test_nifti_folder_with_masks_in_any_orientation(tmp_path):
    rows, phantoms = [], []
    for index, (label, orientation) in enumerate((("covid", "LPS"), ("cap", "RAS"), ("covid", "LAS"))):
        p = phantom(label, index)
        phantoms.append(p)
        for kind, array, dtype in (("ct", p.hu, np.int16), ("lungs", p.lung_mask, np.uint8),
                                   ("infection", p.infection_mask, np.uint8)):
            (tmp_path / f"case{index}_{kind}.nii.gz").write_bytes(
                nifti_bytes(array.astype(np.float32), SPACING, orientation, dtype=dtype, compress=True))
        rows.append({"file": f"case{index}_ct.nii.gz", "label": label.upper() if index else "COVID-19",
                     "lung_mask": f"case{index}_lungs.nii.gz", "infection_mask": f"case{index}_infection.nii.gz",
                     "patient_id": f"p{index // 2}", "split": ("tv", "train", "test")[index]})
    write_csv(tmp_path / "labels.csv", rows)
    records = read_volume_records(tmp_path)
    assert [r.label for r in records] == ["covid", "cap", "covid"]
    assert [r.split for r in records] == ["tv", "tv", "test"]
    assert [r.patient_id for r in records] == ["p0", "p0", "p1"]
    data = build_volume_set(records, tmp_path / "cache", SETTINGS)
    for i, p in enumerate(phantoms):
        assert np.array_equal(data.inputs[i], expected_input(tmp_path / f"case{i}_ct.nii.gz", p))
        assert data.facts[i]["infection_ratio"] == pytest.approx(p.infection_ratio, rel=1e-6)
        assert data.facts[i]["mask_source"] == "given"
    assert data.labels.tolist() == [1, 0, 1]


def test_dicom_series_folders_get_their_masks_from_the_segmentation_hook(tmp_path, monkeypatch):
    phantoms = {"series-a": phantom("covid", 5), "series-b": phantom("cap", 6)}
    for name, p in phantoms.items():
        (tmp_path / name).mkdir()
        for number, blob in enumerate(dicom_series_bytes(p.hu, SPACING, shuffle_seed=1)):
            (tmp_path / name / f"IM{number:04d}").write_bytes(blob)
    write_csv(tmp_path / "labels.csv", [{"file": "series-a", "label": "covid", "split": "tv"},
                                         {"file": "series-b", "label": "cap", "split": "test"}])
    seen = []

    def fake_models(volume, models_dir):  # stands in for the app's CT lung and infection models
        p = next(q for q in phantoms.values() if np.allclose(volume.hu, np.clip(np.rint(q.hu), -1024, 3071)))
        seen.append(volume.file_format)
        return p.lung_mask, p.infection_mask > 0

    monkeypatch.setattr(volume_data, "segment_with_bundled_models", fake_models)
    data = build_volume_set(read_volume_records(tmp_path), tmp_path / "cache", SETTINGS)
    assert seen == ["dicom-series", "dicom-series"]
    for i, (name, p) in enumerate(phantoms.items()):
        assert np.array_equal(data.inputs[i], expected_input(tmp_path / name, p))
        assert data.facts[i]["mask_source"] == "models"


def test_without_masks_or_pipeline_the_error_says_what_to_do(tmp_path, monkeypatch):
    p = phantom("covid", 7)
    (tmp_path / "a.nii").write_bytes(nifti_bytes(p.hu, SPACING))
    write_csv(tmp_path / "labels.csv", [{"file": "a.nii", "label": "covid"}])
    monkeypatch.setitem(sys.modules, "core.pipelines.ct_volume", None)  # import fails
    with pytest.raises(RuntimeError, match="lung_mask, infection_mask"):
        build_volume_set(read_volume_records(tmp_path), tmp_path / "cache", SETTINGS)


def test_without_a_split_column_a_fifth_of_each_label_is_held_out(tmp_path):
    for index in range(10):
        (tmp_path / f"v{index}.nii").write_bytes(b"")
    write_csv(tmp_path / "labels.csv", [{"file": f"v{i}.nii", "label": ("covid", "cap")[i % 2]} for i in range(10)])
    records = read_volume_records(tmp_path)
    test = [r for r in records if r.split == "test"]
    assert len(test) == 2 and {r.label for r in test} == {"covid", "cap"}
    assert read_volume_records(tmp_path) == records  # seeded


@pytest.mark.parametrize("row, message", [
    ({"file": "v.nii", "label": "normal"}, "covid or cap"),
    ({"file": "missing.nii", "label": "cap"}, "does not exist"),
    ({"file": "v.nii", "label": "cap", "split": "later"}, "tv or test"),
])
def test_bad_rows_are_refused(tmp_path, row, message):
    (tmp_path / "v.nii").write_bytes(b"")
    write_csv(tmp_path / "labels.csv", [row])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_volume_records(tmp_path)


def test_a_folder_without_labels_csv_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        read_volume_records(tmp_path)


def test_synthetic_records_have_disjoint_seeds_and_one_volume_per_patient():
    records = volume_data.synthetic_records(6, 4, seed_tv=0, seed_test=1000)
    tv = {r.seed for r in records if r.split == "tv"}
    test = {r.seed for r in records if r.split == "test"}
    assert len(tv) == 6 and len(test) == 4 and not tv & test
    assert len({r.patient_id for r in records}) == 10
    assert [r.label for r in records[:4]] == ["covid", "cap", "covid", "cap"]


def bundled_ct_segmenters():
    """The repository's weights/ folder, or a skip where it lacks the CT lung and infection models."""
    from pathlib import Path

    from core.registry import Registry

    weights = Path(__file__).resolve().parents[2] / "weights"
    pytest.importorskip("core.pipelines.ct_volume")
    try:
        tasks = {card.task for card in Registry.open(weights).cards()}
    except Exception:  # noqa: BLE001  (no bundled registry in this checkout)
        tasks = set()
    if not {"ct-lung-segmentation", "ct-infection-segmentation"} <= tasks:
        pytest.skip("the bundled CT lung and infection models are not in weights/")
    return weights


def test_masks_from_the_bundled_ct_models_through_the_volume_pipeline(tmp_path):
    from training.metrics import dice_iou

    weights = bundled_ct_segmenters()
    p = volume_data.synthetic_volume("covid", 3, (48, 96, 96), (5.0, 3.6, 3.6), infection_ratio=0.05)
    (tmp_path / "a.nii.gz").write_bytes(nifti_bytes(p.hu, p.spacing_mm, "RAS", compress=True))
    write_csv(tmp_path / "labels.csv", [{"file": "a.nii.gz", "label": "covid"}])
    case = volume_data.load_case(read_volume_records(tmp_path)[0], SyntheticSettings(), weights)
    assert case.mask_source == "models"
    assert dice_iou(case.lungs, p.lung_mask | (p.infection_mask > 0))[0] > 0.9
    assert not (case.infection & ~case.lungs).any()


def test_synthetic_volumes_can_train_on_the_masks_the_app_serves():
    from training.metrics import dice_iou

    weights = bundled_ct_segmenters()
    record = volume_data.synthetic_records(1, 0)[0]
    settings = SyntheticSettings((48, 96, 96), (5.0, 3.6, 3.6))
    truth = volume_data.load_case(record, settings, weights)
    served = volume_data.load_case(record, SyntheticSettings(settings.shape, settings.spacing_mm, "models"), weights)
    assert (truth.mask_source, served.mask_source) == ("ground truth", "models")
    np.testing.assert_array_equal(served.hu, truth.hu)
    assert 0.85 < dice_iou(served.lungs, truth.lungs)[0] < 1.0  # the models' lungs, not the generator's
    assert not (served.infection & ~served.lungs).any()
