"""``python -m core predict --task ct-volume``: the CSV columns (a contract), masks in the input's own grid
and affine, refusals as rows."""

import csv

import nibabel as nib
import numpy as np
import pytest

from core.__main__ import main as core_main
from core.io import load_volume_path
from core.io.nifti import load_nifti, nifti_bytes
from core.io.series import dicom_series_bytes
from tests.core.ct_volume_fixtures import add_toy_classifiers, phantom, segmentation_registry

COLUMNS = ["file", "status", "predicted_label", "prob_covid", "prob_cap", "lung_volume_ml", "infection_volume_ml",
           "infection_ratio", "size_group", "model", "model_version", "seconds", "message"]


@pytest.fixture(scope="module")
def case():
    return phantom()


def _abdomen(case) -> np.ndarray:
    """The lung bases only: the slices below the lungs and three with lung, stacked to 20 slices."""
    lowest = int(np.flatnonzero(case.lung_mask.any(axis=(1, 2)))[0])
    below = case.hu[: lowest + 3]
    return np.concatenate([np.repeat(below[:1], 20 - len(below), axis=0), below])


def _inputs(folder, case) -> dict[str, str]:
    """name in the CSV -> path given on the command line."""
    folder.mkdir()
    (folder / "chest_lps.nii").write_bytes(nifti_bytes(case.hu, case.spacing_mm, "LPS"))
    (folder / "chest_ras.nii.gz").write_bytes(nifti_bytes(case.hu, case.spacing_mm, "RAS", compress=True))
    series = folder / "chest_series"
    series.mkdir()
    for index, data in enumerate(dicom_series_bytes(case.hu, case.spacing_mm, shuffle_seed=2)):
        (series / f"IM{index:04d}").write_bytes(data)
    (folder / "abdomen.nii.gz").write_bytes(nifti_bytes(_abdomen(case), case.spacing_mm, "RAS", compress=True))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 64)
    (folder / "mask.nii").write_bytes(nifti_bytes(case.lung_mask.astype(np.uint8), case.spacing_mm, "LPS", np.uint8))
    return {name: str(folder / name) for name in
            ("chest_lps.nii", "chest_ras.nii.gz", "chest_series", "abdomen.nii.gz", "broken.nii.gz", "mask.nii")}


def _rows(out) -> dict[str, dict]:
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        return {row["file"].rsplit("/", 1)[-1]: row for row in reader}


def test_ct_volume_predict_writes_the_contract_columns_and_masks_in_the_input_grid(tmp_path, bundled_weights_dir, case):
    weights = add_toy_classifiers(segmentation_registry(bundled_weights_dir, tmp_path / "weights"))
    inputs = _inputs(tmp_path / "in", case)
    out, masks = tmp_path / "volumes.csv", tmp_path / "masks"
    assert core_main(["--weights", str(weights), "predict", "--task", "ct-volume", *inputs.values(),
                      "--out", str(out), "--masks", str(masks)]) == 0
    rows = _rows(out)
    assert set(rows) == set(inputs)
    for name in ("abdomen.nii.gz", "broken.nii.gz", "mask.nii"):
        assert rows[name]["status"] == "refused" and rows[name]["message"], name
        assert rows[name]["predicted_label"] == "" and rows[name]["lung_volume_ml"] == ""
    assert "Too little lung" in rows["abdomen.nii.gz"]["message"]
    assert "Hounsfield" in rows["mask.nii"]["message"]
    ok = [rows[name] for name in ("chest_lps.nii", "chest_ras.nii.gz", "chest_series")]
    for row in ok:
        assert row["status"] == "ok" and row["predicted_label"] in ("cap", "covid")
        assert float(row["prob_covid"]) + float(row["prob_cap"]) == pytest.approx(1.0, abs=2e-4)
        assert float(row["lung_volume_ml"]) > 800 and 0 <= float(row["infection_ratio"]) <= 1
        assert row["size_group"] in ("small", "medium", "large")
        assert row["model"] == "toy-3d-uniform+toy-3d-size-balanced" and row["model_version"] == "0.0.1"
        assert float(row["seconds"]) > 0
    assert len({(r["lung_volume_ml"], r["infection_volume_ml"], r["prob_covid"]) for r in ok}) == 1  # one anatomy

    canonical = {}
    for name, stem in (("chest_lps.nii", "chest_lps"), ("chest_ras.nii.gz", "chest_ras"), ("chest_series", "chest_series")):
        source = load_volume_path(inputs[name])
        for suffix in ("lungs", "infection"):
            image = nib.load(masks / f"{stem}_{suffix}.nii.gz")
            data = np.asanyarray(image.dataobj)
            assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
            assert data.shape == source.source_shape  # the input's own voxel grid ...
            np.testing.assert_allclose(image.affine, source.source_affine, atol=1e-4)  # ... and affine
            canonical[stem, suffix] = load_nifti((masks / f"{stem}_{suffix}.nii.gz").read_bytes()).hu > 0
    for suffix in ("lungs", "infection"):
        assert np.array_equal(canonical["chest_lps", suffix], canonical["chest_ras", suffix])
        assert np.array_equal(canonical["chest_lps", suffix], canonical["chest_series", suffix])
    assert canonical["chest_lps", "lungs"].any()
    assert sorted(p.name for p in masks.iterdir()) == sorted(
        f"{stem}_{suffix}.nii.gz" for stem in ("chest_lps", "chest_ras", "chest_series") for suffix in ("lungs", "infection"))


def test_without_classifiers_the_rows_hold_the_measurements_only(tmp_path, bundled_weights_dir, case, capsys):
    weights = segmentation_registry(bundled_weights_dir, tmp_path / "weights")
    folder = tmp_path / "niftis"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(nifti_bytes(case.hu, case.spacing_mm, "LPS", compress=True))
    out = tmp_path / "volumes.csv"
    assert core_main(["--weights", str(weights), "predict", "--task", "ct-volume", str(folder), "--out", str(out)]) == 0
    row = _rows(out)["a.nii.gz"]  # a folder of NIfTI files: one case per file
    assert row["status"] == "ok" and row["predicted_label"] == "" and row["prob_covid"] == "" and row["prob_cap"] == ""
    assert float(row["lung_volume_ml"]) > 800 and row["size_group"]
    assert row["model"] == "ct-infection-infnet" and "not classified" in row["message"]
    assert "No 3D classifier" in capsys.readouterr().err

