"""The bundled demo cases come from the pack's test split, byte for byte, by the documented rule (skipped without the pack)."""

import csv
import json

import pytest

from core.demo_cases import DEMO_DIR, MANIFEST, demo_cases
from tests.conftest import DATA

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not (DATA / "cxr" / "labels.csv").is_file() or not (DATA / "ct_infection" / "labels.csv").is_file(),
                       reason="real data pack not present"),
]


def rows(collection: str) -> dict[str, dict]:
    with open(DATA / collection / "labels.csv", newline="", encoding="utf-8") as handle:
        return {f"{collection}/{row['image']}": row for row in csv.DictReader(handle)}


def test_every_case_is_a_test_split_image_of_the_pack_with_its_label_and_source():
    pack = rows("cxr") | rows("ct_infection")
    for case in demo_cases():
        row = pack[case.pack_image]
        assert row["split"] == "test", case.file
        assert row["source"] == case.source
        if case.task == "cxr":
            assert row["label"] == case.label and row["source_file"] == case.source_file
            assert not any(term in row["license"] for term in ("NC", "ND", "SA", "unstated", "see "))
        else:
            assert row["subset"] == "ma2020-slices" and case.label == "covid"  # CC BY 4.0, every slice infected
        assert (DATA / case.pack_image).read_bytes() == case.path.read_bytes()


def test_the_build_script_reproduces_the_bundled_folder(tmp_path):
    from scripts.make_demo_cases import build

    build(DATA, tmp_path / "demo")
    assert json.loads((tmp_path / "demo" / MANIFEST).read_text()) == json.loads((DEMO_DIR / MANIFEST).read_text())
    assert (tmp_path / "demo" / "CREDITS.md").read_text() == (DEMO_DIR / "CREDITS.md").read_text()
