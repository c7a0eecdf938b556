"""``python -m core predict --task ct-slice``: the CSV columns (a contract), the mask files, refusals."""

import csv

import numpy as np
from PIL import Image

from core.__main__ import main as core_main
from core.ct_phantoms import ct_phantom_dicom_bytes, make_ct_phantom
from core.imaging.ct_input import ct_model_pixels
from tests.core.conftest import build_dataset, gradient

COLUMNS = ["file", "status", "predicted_label", "prob_covid", "prob_noncovid", "lung_area_fraction", "infection_fraction",
           "ggo_fraction", "consolidation_fraction", "model", "model_version", "seconds", "message"]


def _inputs(folder):
    folder.mkdir()
    phantom = make_ct_phantom("covid", seed=3, size=160)
    (folder / "slice_hu.dcm").write_bytes(ct_phantom_dicom_bytes(phantom))
    exported = (ct_model_pixels(phantom.to_study()) * 255).round().astype(np.uint8)[:, :150]  # a non-square export
    Image.fromarray(exported).save(folder / "slice_export.png")
    build_dataset(gradient(), modality="CR").save_as(folder / "radiograph.dcm", enforce_file_format=True)
    (folder / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00" * 7)


def test_ct_slice_predict_writes_the_contract_columns_and_masks(tmp_path, tiny_ct_registry_dir):
    _inputs(tmp_path / "in")
    out, masks = tmp_path / "ct.csv", tmp_path / "masks"
    code = core_main(["--weights", str(tiny_ct_registry_dir), "predict", "--task", "ct-slice", str(tmp_path / "in"),
                      "--out", str(out), "--masks", str(masks)])
    assert code == 0
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = {row["file"].rsplit("/", 1)[-1]: row for row in reader}
    assert set(rows) == {"slice_hu.dcm", "slice_export.png", "radiograph.dcm", "broken.dcm"}
    assert rows["radiograph.dcm"]["status"] == "refused" and "Chest X-ray page" in rows["radiograph.dcm"]["message"]
    assert rows["broken.dcm"]["status"] == "refused" and rows["broken.dcm"]["message"]
    for name, shape in (("slice_hu.dcm", (160, 160)), ("slice_export.png", (160, 150))):
        row = rows[name]
        assert row["status"] == "ok" and row["predicted_label"] in ("covid", "non-covid")
        assert abs(float(row["prob_covid"]) + float(row["prob_noncovid"]) - 1) < 1e-3
        assert 0 < float(row["lung_area_fraction"]) <= 1 and 0 <= float(row["infection_fraction"]) <= 1
        assert abs(float(row["ggo_fraction"]) + float(row["consolidation_fraction"]) - float(row["infection_fraction"])) < 2e-4
        assert row["model"] == "tiny-ct-fusion" and row["model_version"] == "0.0.1"
        stem = name.rsplit(".", 1)[0]
        for suffix in ("lungs", "infection"):
            mask = np.asarray(Image.open(masks / f"{stem}_{suffix}.png"))
            assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
    assert "No Hounsfield units" in rows["slice_export.png"]["message"]
    assert not list(masks.glob("radiograph*")) and not list(masks.glob("broken*"))


def test_masks_are_refused_for_x_rays(tmp_path, tiny_registry_dir, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    assert core_main(["--weights", str(tiny_registry_dir), "predict", str(tmp_path), "--masks", str(tmp_path / "m")]) == 2
    assert "--masks is for --task ct-slice" in capsys.readouterr().err
