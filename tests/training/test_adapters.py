import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.adapters import cohen_label, detect_layout, read_cohen, read_kermany, read_nlm_tb, read_records
from training.data import DataNotFoundError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_image(path: Path, width=40, height=30, pixels=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = pixels if pixels is not None else np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def half_mask(side: str) -> np.ndarray:
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:25, 2:18] = 255 if side == "left" else 0
    mask[5:25, 22:38] = 255 if side == "right" else 0
    mask[5:8, 15:25] = 1 if side == "right" else 0  # overlapping strip, stored as 0/1 like some copies
    return mask


def make_montgomery(root: Path) -> Path:
    for name in ("MCUCXR_0001_0.png", "MCUCXR_0002_1.png"):
        write_image(root / "CXR_png" / name, width=64)
        write_image(root / "ManualMask" / "leftMask" / name, pixels=half_mask("left"))
        write_image(root / "ManualMask" / "rightMask" / name, pixels=half_mask("right"))
    return root


def test_montgomery_labels_patients_and_merged_masks(tmp_path, cache):
    root = make_montgomery(tmp_path / "montgomery")
    records = read_nlm_tb(root)
    assert [(r.label, r.patient_id, r.source, r.orig_width) for r in records] == [
        ("normal", "MCUCXR_0001", "nlm-montgomery", 64), ("tb", "MCUCXR_0002", "nlm-montgomery", 64),
    ]
    assert {r.split for r in records} <= {"train", "val", "test"}
    merged_path = records[0].lung_mask
    assert merged_path == cache / "merged-masks" / "nlm-montgomery" / "MCUCXR_0001_0.png"
    merged = np.asarray(Image.open(merged_path))
    expected = (half_mask("left") > 0) | (half_mask("right") > 0)
    assert set(np.unique(merged)) == {0, 255}
    assert np.array_equal(merged > 0, expected)
    assert merged[6, 20] == 255 and merged[4, 20] == 0  # the 0/1 strip counts as lung


def test_merged_mask_is_reused_until_an_input_changes(tmp_path):
    root = make_montgomery(tmp_path / "montgomery")
    merged_path = read_nlm_tb(root)[0].lung_mask
    written = merged_path.stat().st_mtime_ns
    assert read_nlm_tb(root)[0].lung_mask.stat().st_mtime_ns == written
    left = root / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png"
    write_image(left, pixels=np.full((30, 40), 255, dtype=np.uint8))
    later = merged_path.stat().st_mtime + 10
    os.utime(left, (later, later))
    assert np.asarray(Image.open(read_nlm_tb(root)[0].lung_mask)).min() == 255


def test_shenzhen_single_masks_and_missing_masks(tmp_path):
    root = tmp_path / "shenzhen"
    write_image(root / "CXR_png" / "CHNCXR_0001_0.png")
    write_image(root / "CXR_png" / "CHNCXR_0002_1.png")
    mask = write_image(root / "mask" / "CHNCXR_0001_0_mask.png", pixels=half_mask("left"))
    records = read_nlm_tb(root)
    assert [(r.label, r.source, r.lung_mask) for r in records] == [
        ("normal", "nlm-shenzhen", mask), ("tb", "nlm-shenzhen", None),
    ]
    assert read_nlm_tb(root, source="my-tb")[0].source == "my-tb"


COHEN_ROWS = [
    # patientid, finding, view, modality, filename
    ("1", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "covid-pa.jpg"),
    ("1", "Pneumonia/Viral/COVID-19", "L", "X-ray", "covid-lateral.jpg"),
    ("2", "Pneumonia/Bacterial/Streptococcus", "AP Supine", "X-ray", "strep.jpg"),
    ("3", "Pneumonia/Viral/SARS", "AP", "X-ray", "sars.jpg"),
    ("4", "Pneumonia/Fungal/Pneumocystis", "PA", "X-ray", "pcp.jpg"),
    ("5", "No Finding", "PA", "X-ray", "normal.jpg"),
    ("6", "Tuberculosis", "PA", "X-ray", "tb.jpg"),
    ("7", "Pneumonia", "AP semi erect", "X-ray", "cap.jpg"),
    ("8", "Pneumonia/Lipoid", "PA", "X-ray", "lipoid.jpg"),
    ("9", "Pneumonia/Viral/COVID-19", "Axial", "CT", "ct.jpg"),
    ("10", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "missing.jpg"),
]


def make_cohen(root: Path) -> Path:
    root.mkdir(parents=True)
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientid", "offset", "sex", "finding", "view", "modality", "folder", "filename"])
        for patient, finding, view, modality, filename in COHEN_ROWS:
            writer.writerow([patient, "", "M", finding, view, modality, "images", filename])
            if filename != "missing.jpg":
                write_image(root / "images" / filename)
    return root


def test_cohen_keeps_frontal_xrays_maps_findings_and_warns_about_missing_files(tmp_path):
    root = make_cohen(tmp_path / "covid-chestxray-dataset")
    with pytest.warns(UserWarning, match="skipped 1 of 9"):
        records = read_cohen(root)
    assert [(r.image.name, r.label, r.patient_id) for r in records] == [
        ("covid-pa.jpg", "covid", "cohen-1"), ("strep.jpg", "bacterial", "cohen-2"), ("sars.jpg", "viral", "cohen-3"),
        ("pcp.jpg", "fungal", "cohen-4"), ("normal.jpg", "normal", "cohen-5"), ("tb.jpg", "tb", "cohen-6"),
        ("cap.jpg", "pneumonia", "cohen-7"), ("lipoid.jpg", "other", "cohen-8"),
    ]
    assert {r.source for r in records} == {"cohen"} and records[0].orig_width == 40


@pytest.mark.parametrize("finding, label", [
    ("COVID-19", "covid"), ("COVID-19, ARDS", "covid"), ("Streptococcus", "bacterial"), ("Klebsiella", "bacterial"),
    ("SARS", "viral"), ("MERS-CoV", "viral"), ("Pneumocystis", "fungal"), ("ARDS", "other"), ("todo", "other"),
])
def test_cohen_plain_findings_of_older_metadata(finding, label):
    assert cohen_label(finding) == label


def make_kermany(root: Path) -> Path:
    files = {
        "train/NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-1427-0001.jpeg"],
        "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_6.jpeg"],
        "val/PNEUMONIA": ["person3_virus_1.jpeg"],
        "test/NORMAL": ["IM-0001-0001.jpeg"],
        "test/PNEUMONIA": ["person100_bacteria_475.jpeg"],
    }
    for folder, names in files.items():
        for name in names:
            write_image(root / "chest_xray" / folder / name)
    return root


def test_kermany_labels_patients_and_splits(tmp_path):
    root = make_kermany(tmp_path / "kermany")
    records = {r.image.name: r for r in read_kermany(root)}
    assert len(records) == 9
    assert {name: r.label for name, r in records.items() if "person" in name} == {
        "person1_bacteria_1.jpeg": "bacterial", "person1_bacteria_2.jpeg": "bacterial", "person2_virus_6.jpeg": "viral",
        "person3_virus_1.jpeg": "viral", "person100_bacteria_475.jpeg": "bacterial",
    }
    assert records["IM-0115-0002.jpeg"].label == "normal"
    assert records["IM-0115-0002.jpeg"].patient_id == "kermany-IM-0115"
    assert records["NORMAL2-IM-1427-0001.jpeg"].patient_id == "kermany-NORMAL2-IM-1427"
    assert records["person1_bacteria_2.jpeg"].patient_id == "kermany-person1"
    test_names = {name for name, r in records.items() if r.split == "test"}
    assert test_names == {"IM-0001-0001.jpeg", "person100_bacteria_475.jpeg"}
    assert {records[name].source for name in test_names} == {"kermany-test"}
    assert records["person3_virus_1.jpeg"].source == "kermany-train"
    assert {r.split for name, r in records.items() if name not in test_names} <= {"train", "val"}
    assert records["IM-0115-0001.jpeg"].split == records["IM-0115-0002.jpeg"].split
    # root may also be the chest_xray folder itself
    assert len(read_kermany(root / "chest_xray")) == 9


def make_pack(root: Path) -> Path:
    write_image(root / "cxr" / "images" / "a.jpg")
    with open(root / "cxr" / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image", "label", "source", "patient_id", "split", "lung_mask", "orig_width"])
        writer.writeheader()
        writer.writerow({"image": "images/a.jpg", "label": "tb", "source": "tb-collection", "patient_id": "x",
                         "split": "val", "lung_mask": "", "orig_width": "256"})
    return root


def test_layouts_are_detected_and_read_together(tmp_path):
    roots = {
        "pack": make_pack(tmp_path / "pack"), "nlm": make_montgomery(tmp_path / "montgomery"),
        "cohen": make_cohen(tmp_path / "cohen"), "kermany": make_kermany(tmp_path / "kermany"),
    }
    assert {layout: detect_layout(root) for layout, root in roots.items()} == {layout: layout for layout in roots}
    assert detect_layout(roots["kermany"] / "chest_xray") == "kermany"
    with pytest.warns(UserWarning):
        records = read_records([str(root) for root in roots.values()])
    sources = [r.source for r in records]
    assert sources.count("tb-collection") == 1 and sources.count("nlm-montgomery") == 2
    assert sources.count("cohen") == 8 and sources.count("kermany-train") == 7 and sources.count("kermany-test") == 2
    assert records[0].split == "val" and records[0].orig_width == 256


def test_unknown_layout_names_the_path_and_the_layouts(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataNotFoundError) as error:
        read_records([tmp_path / "stuff"])
    message = str(error.value)
    assert str(tmp_path / "stuff") in message
    assert all(hint in message for hint in ("cxr/labels.csv", "CXR_png", "metadata.csv", "NORMAL,PNEUMONIA"))
