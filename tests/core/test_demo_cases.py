"""The bundled real demo cases (``demo_cases/``): small, licensed, credited, listed by ``core.demo_cases``."""

import json
import shutil

import pytest

from core.classes import MANET_CLASSES, class_title
from core.demo_cases import ALLOWED_LICENCES, DEMO_DIR, MANIFEST, MAX_CASES, MAX_TOTAL_BYTES, DemoCaseError, demo_cases
from core.guard import check_chest_xray, check_ct_slice
from core.io import load_image

CASES = demo_cases()


def test_the_manifest_lists_every_bundled_file_and_only_those():
    assert CASES, "no real demo cases bundled"
    listed = {case.file for case in CASES}
    assert len(listed) == len(CASES)
    assert all(case.path.is_file() for case in CASES)
    on_disk = {p.name for p in DEMO_DIR.iterdir()} - {MANIFEST, "CREDITS.md"}
    assert on_disk == listed


def test_at_most_12_images_and_5_mb_in_all():
    assert len(CASES) <= MAX_CASES == 12
    assert sum(case.path.stat().st_size for case in CASES) <= MAX_TOTAL_BYTES == 5 * 1024 * 1024


def test_every_licence_allows_redistribution_and_every_case_is_credited():
    credits = (DEMO_DIR / "CREDITS.md").read_text(encoding="utf-8")
    for case in CASES:
        assert case.licence in ALLOWED_LICENCES
        assert not any(term in case.licence for term in ("NC", "ND", "SA"))
        assert case.attribution and case.source and case.source_file
        assert case.file in credits and case.licence in case.credit


def test_labels_are_the_app_classes_and_both_pages_have_cases():
    assert {case.task for case in CASES} == {"cxr", "ct-slice"}
    assert {case.label for case in demo_cases("cxr")} == set(MANET_CLASSES)
    assert {case.label for case in demo_cases("ct-slice")} <= {"covid", "non-covid"}
    assert all(class_title(case.label) in case.title and case.source in case.title for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.file)
def test_each_case_passes_its_pages_metadata_and_pixel_checks(case):
    study = load_image(case.read_bytes(), case.file)
    (check_chest_xray if case.task == "cxr" else check_ct_slice)(study)
    assert not study.synthetic and set(study.metadata) <= {"Rows", "Columns", "SourceMode"}  # plain JPEGs, nothing else


def test_no_manifest_means_no_cases_and_a_broken_one_a_clear_error(tmp_path):
    assert demo_cases("cxr", folder=tmp_path) == []
    (tmp_path / MANIFEST).write_text(json.dumps({"cases": [{"file": "x.jpg"}]}))
    with pytest.raises(DemoCaseError, match="malformed"):
        demo_cases(folder=tmp_path)
    with pytest.raises(ValueError):
        demo_cases("mri")


def test_a_missing_file_is_a_clear_error(tmp_path):
    shutil.copy(DEMO_DIR / MANIFEST, tmp_path / MANIFEST)
    with pytest.raises(DemoCaseError, match="missing"):
        demo_cases(folder=tmp_path)[0].read_bytes()
