"""core.cases: the de-identified case store (round trip, content addressing, idempotence, allow-list,
retention) and the worklist's filters on a seeded multi-reader data set."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from core.cases import (
    ALLOWED_METADATA,
    CaseExpiredError,
    CasePrediction,
    CaseStore,
    CaseStoreError,
    WorklistFilters,
    model_versions,
    worklist,
)
from core.cases.__main__ import main as cases_main
from core.cases.demo import DEMO_READERS, DemoSeedError, seed_demo
from core.cases.store import decode_case, encode_case
from core.ct_phantoms import make_ct_phantom
from core.io import load_image
from core.io.volume import volume_from_canonical
from core.phantoms import make_phantom
from core.reviews import ReviewInput, ReviewStore, ReviewValidationError
from tests.core.conftest import IDENTIFIERS, make_dicom_bytes

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
CXR_PROBS = {"normal": 0.1, "covid": 0.6, "tb": 0.1, "bacterial": 0.1, "viral": 0.1}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reviews(review_db_url: str, clock: Clock):
    """The review log on SQLite, then on PostgreSQL (``tests/core/conftest.py``): the store tests run on both."""
    with ReviewStore(review_db_url, clock=clock) as store:
        yield store


@pytest.fixture
def cases(reviews: ReviewStore, tmp_path: Path, clock: Clock) -> CaseStore:
    return CaseStore(reviews, tmp_path / "cases", retention_days=30, clock=clock)


def prediction(task: str = "cxr", probs: dict | None = None, label: str = "covid", version: str = "1.0") -> CasePrediction:
    probs = probs or CXR_PROBS
    return CasePrediction(task=task, model_name="manet", model_version=version, weights_sha256=sha("w"),
                          predicted_label=label, predicted_probabilities=probs)


def stored_files(store: CaseStore) -> list[Path]:
    return sorted(store.directory.glob("*/*.npz"))


# --------------------------------------------------------------------------------------------------
# Store


def test_round_trip_of_a_radiograph_keeps_pixels_and_case_hash(cases: CaseStore) -> None:
    study = make_phantom("covid", seed=3, size=128).to_study()
    record = cases.save_case(study, prediction())
    assert record.case_hash == study.case_hash and record.task == "cxr"
    assert record.confidence == pytest.approx(0.6) and record.predicted_probabilities == CXR_PROBS
    assert record.expires_at - record.created_at == timedelta(days=30) and record.available
    assert cases.get_case(study.case_hash, "cxr") == record
    back = cases.load_image(record).to_study()
    assert np.array_equal(back.pixels, study.pixels) and back.pixels.dtype == np.float32
    assert back.case_hash == study.case_hash and back.synthetic and back.hu is None


def test_round_trip_of_a_ct_slice_keeps_hounsfield_units(cases: CaseStore) -> None:
    study = make_ct_phantom("covid", seed=1, size=96).to_study()
    record = cases.save_case(study, prediction("ct-slice", {"non-covid": 0.3, "covid": 0.7}))
    back = cases.load_image(record).to_study()
    assert np.array_equal(back.hu, study.hu) and np.array_equal(back.pixels, study.pixels)
    assert back.case_hash == study.case_hash and back.modality == study.modality


def test_round_trip_of_a_volume_keeps_hu_spacing_and_case_hash(cases: CaseStore) -> None:
    rng = np.random.default_rng(0)
    whole = rng.integers(-1024, 400, size=(12, 20, 24)).astype(np.float32)  # stored as int16, losslessly
    fractional = whole[::-1] + 0.25  # stays float32 (another case: the case hash rounds HU to whole numbers)
    for hu in (whole, fractional):
        volume = volume_from_canonical(hu, (2.5, 0.7, 0.7))
        record = cases.save_case(volume, prediction("ct-volume", {"cap": 0.2, "covid": 0.8}))
        back = cases.load_image(record).to_volume()
        assert back.hu.dtype == np.float32 and np.array_equal(back.hu, hu)
        assert back.spacing_mm == (2.5, 0.7, 0.7) and back.case_hash == volume.case_hash
    with pytest.raises(CaseStoreError, match="CT volume page"):
        cases.load_image(record).to_study()


def test_files_are_content_addressed_and_shared(cases: CaseStore) -> None:
    study = make_phantom("normal", seed=0, size=96).to_study()
    first = cases.save_case(study, prediction())
    path = cases.path_of(first.pixel_sha256)
    assert path.name == f"{first.pixel_sha256}.npz" and hashlib.sha256(path.read_bytes()).hexdigest() == first.pixel_sha256
    other_task = cases.save_case(study, prediction("ct-slice", {"non-covid": 0.9, "covid": 0.1}, "non-covid"))
    assert other_task.pixel_sha256 == first.pixel_sha256  # the same pixels, one file
    assert stored_files(cases) == [path]
    np.testing.assert_array_equal(np.load(path)["pixels"], study.pixels)  # numpy reads it as an .npz


def test_saving_twice_is_idempotent(cases: CaseStore, clock: Clock) -> None:
    study = make_phantom("tb", seed=1, size=96).to_study()
    first = cases.save_case(study, prediction())
    written = stored_files(cases)[0].stat().st_mtime_ns
    clock.now += timedelta(days=3)
    again = cases.save_case(study, prediction(version="2.0", label="normal",
                                              probs={**CXR_PROBS, "normal": 0.6, "covid": 0.1}))
    assert again == first  # first save wins: same row, same dates, same file
    assert len(cases.list_cases()) == 1 and stored_files(cases)[0].stat().st_mtime_ns == written


def test_only_allow_listed_metadata_and_shown_pixels_are_stored(cases: CaseStore) -> None:
    data = make_dicom_bytes(np.full((128, 128), 1000, dtype=np.int16) + np.arange(128, dtype=np.int16),
                            modality="CT", RescaleSlope="1", RescaleIntercept="-1024", PixelSpacing=["0.7", "0.7"],
                            ImageOrientationPatient=["1", "0", "0", "0", "1", "0"], **IDENTIFIERS)
    study = load_image(data, "Doe_Jane_PID-CT-998877.dcm")
    record = cases.save_case(study, prediction("ct-slice", {"non-covid": 0.5, "covid": 0.5}))
    raw = cases.path_of(record.pixel_sha256).read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert sorted(archive.namelist()) == ["hu.npy", "metadata.json", "pixels.npy"]
        metadata = json.loads(archive.read("metadata.json"))
        contents = b"".join(archive.read(name) for name in archive.namelist())
    assert set(metadata) <= ALLOWED_METADATA
    assert metadata == {"kind": "image", "modality": "CT", "pixel_spacing_mm": [0.7, 0.7], "synthetic": False}
    for value in [*IDENTIFIERS.values(), "Doe_Jane", "PID-CT-998877", ".dcm"]:
        assert value.encode() not in contents and value.encode() not in raw
    with cases.reviews.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT * FROM cases").mappings().one()
    assert set(row) == {"case_hash", "task", "model_name", "model_version", "weights_sha256", "predicted_label",
                        "predicted_probabilities", "confidence", "pixel_sha256", "created_at", "expires_at", "purged_at"}


def test_pixels_with_burned_in_text_are_not_kept(cases: CaseStore) -> None:
    study = make_phantom("covid", seed=0, size=96).to_study()
    study.burned_in_annotation = True
    with pytest.raises(CaseStoreError, match="burned into its pixels"):
        cases.save_case(study, prediction())
    assert cases.list_cases() == [] and stored_files(cases) == []


def test_a_file_with_fields_the_app_does_not_write_is_refused() -> None:
    pixels = {"pixels": np.zeros((4, 4), np.float32)}
    assert decode_case(encode_case(pixels, {"kind": "image", "synthetic": True})).kind == "image"
    for arrays, metadata in [(pixels, {"kind": "image", "PatientName": "Doe^Jane"}),
                             ({**pixels, "overlay": np.zeros((4, 4), np.float32)}, {"kind": "image"}),
                             (pixels, {"kind": "volume"}), (pixels, {})]:
        with pytest.raises(CaseStoreError, match="fields this app does not write"):
            decode_case(encode_case(arrays, metadata))


def test_a_damaged_file_is_refused(cases: CaseStore) -> None:
    record = cases.save_case(make_phantom("viral", seed=0, size=96).to_study(), prediction())
    path = cases.path_of(record.pixel_sha256)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CaseStoreError, match="damaged"):
        cases.load_image(record)
    path.unlink()
    with pytest.raises(CaseStoreError, match="missing"):
        cases.load_image(record)


def test_bad_prediction_names_the_field(cases: CaseStore) -> None:
    study = make_phantom("viral", seed=0, size=96).to_study()
    with pytest.raises(ReviewValidationError) as caught:
        cases.save_case(study, prediction(label="pneumothorax"))
    assert caught.value.field == "predicted_label"
    with pytest.raises(ReviewValidationError) as caught:
        cases.save_case(study, prediction(task="mri"))
    assert caught.value.field == "task"
    with pytest.raises(CaseStoreError, match="retention"):
        CaseStore(cases.reviews, cases.directory, retention_days=0)


def test_purge_deletes_expired_pixels_marks_rows_and_keeps_reviews(cases: CaseStore, reviews: ReviewStore,
                                                                   clock: Clock) -> None:
    old = make_phantom("covid", seed=10, size=96).to_study()
    old_record = cases.save_case(old, prediction())
    reviews.add_review(ReviewInput(reviewer="ana", case_hash=old.case_hash, model_name="manet", model_version="1.0",
                                   weights_sha256=sha("w"), predicted_probabilities=CXR_PROBS, predicted_label="covid",
                                   verdict="agree", confidence=3))
    clock.now += timedelta(days=20)
    young = cases.save_case(make_phantom("covid", seed=11, size=96).to_study(), prediction())
    orphan = cases.path_of("ab" * 32)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left by a failed save")
    clock.now += timedelta(days=10, seconds=1)  # the first is 30 days old, the second 10
    report = cases.purge()
    assert (report.cases_purged, report.files_deleted) == (1, 1)
    assert report.orphans_deleted == 0  # written "now" by the test clock's standard: the file's mtime is real time
    purged = cases.get_case(old.case_hash, "cxr")
    assert purged.purged_at == clock.now and not purged.available
    assert not cases.path_of(old_record.pixel_sha256).exists() and cases.path_of(young.pixel_sha256).exists()
    with pytest.raises(CaseExpiredError, match="reviews are still"):
        cases.load_image(purged)
    assert len(reviews.current_reviews()) == 1  # reviews are never deleted
    assert cases.purge().cases_purged == 0  # already marked
    report = cases.purge(now=datetime.now(timezone.utc) + timedelta(hours=2))  # the orphan is old enough now
    assert (report.cases_purged, report.files_deleted, report.orphans_deleted) == (1, 1, 1)  # and young expired
    assert not orphan.exists() and not cases.path_of(young.pixel_sha256).exists()
    # a purged case saved again gets its pixels back
    clock.now += timedelta(days=1)
    back = cases.save_case(old, prediction())
    assert back.available and back.created_at == old_record.created_at and back.expires_at == clock.now + timedelta(days=30)
    assert cases.load_image(back).to_study().case_hash == old.case_hash


def test_a_shared_file_survives_while_another_case_needs_it(cases: CaseStore, clock: Clock) -> None:
    study = make_phantom("normal", seed=5, size=96).to_study()
    cases.save_case(study, prediction())
    clock.now += timedelta(days=15)
    other = cases.save_case(study, prediction("ct-slice", {"non-covid": 0.9, "covid": 0.1}, "non-covid"))
    clock.now += timedelta(days=16)
    report = cases.purge()
    assert (report.cases_purged, report.files_deleted) == (1, 0)
    assert cases.load_image(cases.get_case(study.case_hash, "ct-slice")).arrays["pixels"].shape == (96, 96)
    assert other.pixel_sha256 == cases.get_case(study.case_hash, "cxr").pixel_sha256


def test_purge_command(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    with ReviewStore(url) as store:
        CaseStore(store, tmp_path / "cases", retention_days=1,
                  clock=lambda: datetime.now(timezone.utc) - timedelta(days=2)).save_case(
            make_phantom("covid", seed=0, size=96).to_study(), prediction())
    assert cases_main(["purge", "--db", url]) == 0  # --store defaults to cases/ beside the SQLite file
    assert "1 case(s) reached the end of their retention; 1 pixel file(s)" in capsys.readouterr().out
    assert list((tmp_path / "cases").glob("*/*.npz")) == []


# --------------------------------------------------------------------------------------------------
# Seeded multi-reader data set and the worklist


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeded")
    url = f"sqlite:///{folder / 'reviews.sqlite'}"
    report = seed_demo(url, folder / "cases", now=T0)
    with ReviewStore(url) as store:
        case_store = CaseStore(store, folder / "cases", retention_days=365)
        yield report, case_store.list_cases(), store.current_reviews(), url, folder


def test_seed_builds_a_multi_reader_set_and_refuses_a_used_log(seeded) -> None:
    report, cases, reviews, url, folder = seeded
    assert report.cases == len(cases) >= 10 and {c.task for c in cases} == {"cxr", "ct-slice", "ct-volume"}
    assert {r.reviewer for r in reviews} == set(DEMO_READERS) and report.reviews == len(reviews)
    counts = {reader: sum(r.reviewer == reader for r in reviews) for reader in DEMO_READERS}
    assert counts[DEMO_READERS[0]] == len(cases) > counts[DEMO_READERS[2]]
    assert all(T0 - timedelta(weeks=6) <= r.created_at <= T0 for r in reviews)
    with pytest.raises(DemoSeedError, match="already holds reviews"):
        seed_demo(url, folder / "cases")


def test_worklist_filters_on_the_seeded_set(seeded) -> None:
    _, cases, reviews, _, _ = seeded
    everything = worklist(cases, reviews)
    assert len(everything) == len(cases)
    assert [row.case.created_at for row in everything] == sorted((c.created_at for c in cases), reverse=True)
    for row in everything:
        assert all(r.case_hash == row.case.case_hash and r.task == row.case.task for r in row.reviews)

    me = DEMO_READERS[2]
    todo = worklist(cases, reviews, WorklistFilters(reviewer=me, not_reviewed_by_me=True))
    assert todo and all(me not in row.readers for row in todo)
    assert len(todo) == sum(me not in {r.reviewer for r in reviews if r.case_hash == c.case_hash and r.task == c.task}
                            for c in cases)

    versus_model = worklist(cases, reviews, WorklistFilters(model_disagreement=True))
    assert versus_model and all(any(r.verdict == "disagree" for r in row.reviews) for row in versus_model)
    assert {row.case.case_hash for row in versus_model} == {r.case_hash for r in reviews if r.verdict == "disagree"}

    between = worklist(cases, reviews, WorklistFilters(reader_disagreement=True))
    assert between and all(len({r.corrected_label for r in row.reviews}) > 1 for row in between)
    assert len(between) < len(everything)

    low = worklist(cases, reviews, WorklistFilters(max_confidence=0.7))
    assert low and all(row.case.confidence < 0.7 for row in low)
    assert len(low) == sum(c.confidence < 0.7 for c in cases)

    ct = worklist(cases, reviews, WorklistFilters(task="ct-slice"))
    assert {row.case.task for row in ct} == {"ct-slice"}
    versions = model_versions(cases)
    assert versions["manet-demo-scripted"] == ["1.0", "1.1"]
    one = worklist(cases, reviews, WorklistFilters(model_name="manet-demo-scripted", model_version="1.1"))
    assert one and all((r.case.model_name, r.case.model_version) == ("manet-demo-scripted", "1.1") for r in one)

    both = worklist(cases, reviews, WorklistFilters(reviewer=me, not_reviewed_by_me=True, model_disagreement=True,
                                                    task="cxr"))
    assert {r.case.case_hash for r in both} == ({r.case.case_hash for r in todo} & {r.case.case_hash for r in versus_model}
                                                & {r.case.case_hash for r in worklist(cases, reviews, WorklistFilters(task="cxr"))})
    with pytest.raises(ValueError, match="reviewer"):
        worklist(cases, reviews, WorklistFilters(not_reviewed_by_me=True))


def test_an_amended_review_counts_once_per_reader(seeded) -> None:
    _, cases, reviews, _, _ = seeded
    amended = [r for r in reviews if r.version > 1]
    assert len(amended) == 1
    row = next(row for row in worklist(cases, reviews) if row.case.case_hash == amended[0].case_hash)
    assert row.readers.count(amended[0].reviewer) == 1 and amended[0] in row.reviews


def test_purged_cases_leave_the_worklist_unless_asked(seeded, tmp_path: Path) -> None:
    _, cases, reviews, _, _ = seeded
    from dataclasses import replace

    gone = [replace(cases[0], purged_at=T0), *cases[1:]]
    assert len(worklist(gone, reviews)) == len(cases) - 1
    assert len(worklist(gone, reviews, WorklistFilters(include_purged=True))) == len(cases)
