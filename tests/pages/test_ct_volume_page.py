"""The CT volume page in AppTest, on the real pipeline: a synthetic demo volume, the three views and their
sliders, windows and overlays, a review recorded with its slice and view; bad uploads get a specific message.

The bundled registry (``weights/``) serves the lung and infection models. The review needs paper 004's
3D classifiers: ``tests/ct_volume_registry.py`` adds toy ones beside the bundled CT models when the
bundled registry has none.
"""

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.pipelines.ct_volume import STAGE_TITLES
from core.registry import Registry
from core.reviews import ReviewStore
from tests.ct_volume_registry import ct_volume_registry, has_both_classifiers

CT_VOLUME = str(Path(__file__).resolve().parents[2] / "pages" / "ct_volume.py")
DEMO = "Synthetic demo volume"


def use_registry(monkeypatch, tmp_path, weights: Path) -> Path:
    import streamlit as st

    db = tmp_path / "reviews.sqlite"
    monkeypatch.setenv("CHEST_REVIEW_DB", str(db))
    monkeypatch.setenv("CHEST_WEIGHTS_DIR", str(weights))
    st.cache_resource.clear()  # the registry and pipelines are cached per process: start from this registry
    return db


@pytest.fixture
def bundled(monkeypatch, tmp_path, bundled_weights_dir):
    import streamlit as st

    yield use_registry(monkeypatch, tmp_path, bundled_weights_dir)
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def classifiers_dir(tmp_path_factory, bundled_weights_dir) -> Path:
    return ct_volume_registry(bundled_weights_dir, tmp_path_factory.mktemp("ct-volume-registry"))


@pytest.fixture
def with_classifiers(monkeypatch, tmp_path, classifiers_dir):
    import streamlit as st

    yield use_registry(monkeypatch, tmp_path, classifiers_dir)
    st.cache_resource.clear()


def open_demo() -> AppTest:
    app = AppTest.from_file(CT_VOLUME, default_timeout=300).run()
    assert not app.exception
    app.radio(key="cv_source").set_value(DEMO).run()
    assert not app.exception, app.exception
    return app


def image_captions(app: AppTest) -> list[str]:
    return [caption for image in app.image for caption in image.captions]


def test_the_page_opens_on_the_upload_form_with_instructions(bundled):
    app = AppTest.from_file(CT_VOLUME, default_timeout=60).run()
    assert not app.exception
    assert any("Upload a chest CT volume" in i.value for i in app.info)
    assert any("Research use only" in c.value for c in app.caption)


def test_a_demo_volume_on_the_bundled_models_views_sliders_windows_and_volumes(bundled, bundled_weights_dir):
    app = open_demo()
    (status,) = app.status
    assert status.label == "Analysis done"
    shown = [bar.proto.text for bar in app.get("progress")]  # one progress bar per stage
    assert shown[:3] == [f"{STAGE_TITLES[stage]}: 100%" for stage in ("lung_mask", "lungs_3d", "infection")]
    assert any("SYNTHETIC" in w.value for w in app.warning)
    metrics = {m.label: m.value for m in app.metric}
    right, left = (float(metrics[side].removesuffix(" ml")) for side in ("Right lung", "Left lung"))
    assert 300 < right < 4000 and 300 < left < 4000  # a synthetic adult chest
    assert float(metrics["Infection / lung"]) > 0
    assert any(t.value.startswith("Size group: **") for t in app.markdown)
    assert [c.split(" — ")[0] for c in image_captions(app)] == ["Axial 40", "Coronal 80", "Sagittal 80"]
    if has_both_classifiers(Registry.open(bundled_weights_dir)):
        assert any(h.value.startswith("P(COVID-19):") for h in app.subheader)
    else:  # segmentation only, said plainly, and nothing to review
        assert any("No 3D COVID-19 / CAP classifier is installed" in i.value for i in app.info)
        assert not any(h.value == "Your review" for h in app.subheader)

    before = app.image[0].value
    app.slider(key="cv_axial").set_value(25).run()
    assert not app.exception
    assert image_captions(app)[0].startswith("Axial 25 — top: anterior, left: patient's right")
    assert app.image[0].value != before
    app.slider(key="cv_coronal").set_value(60).run()
    app.slider(key="cv_sagittal").set_value(40).run()
    assert [c.split(" — ")[0] for c in image_captions(app)] == ["Axial 25", "Coronal 60", "Sagittal 40"]
    app.selectbox(key="cv_window").set_value("mediastinum").run()
    app.selectbox(key="cv_window").set_value("free").run()
    app.number_input(key="cv_level").set_value(40.0).run()
    app.toggle(key="cv_show_lungs").set_value(False).run()
    app.toggle(key="cv_show_infection").set_value(False).run()
    assert not app.exception
    assert not app.status  # the kept result: no analysis (and no progress) on these reruns


def test_a_review_records_the_slice_and_view_where_the_model_went_wrong(with_classifiers):
    app = open_demo()
    assert any(h.value.startswith("P(COVID-19):") and "dual sampling" in h.value for h in app.subheader)
    assert any("Fusion: P = w·P(uniform)" in c.value for c in app.caption)
    table = app.table[0].value
    assert list(table["Model"]) == ["Uniform sampling", "Size-balanced sampling", "Dual-sampling fusion"]
    app.selectbox(key="cv_attention").set_value("uniform").run()
    assert not app.exception

    app.slider(key="cv_sagittal").set_value(70).run()
    app.selectbox(key="review_slice_view").set_value("sagittal")
    app.radio[1].set_value("disagree")
    app.selectbox(key="corrected_label").set_value("uncertain")
    app.button[0].click().run()
    assert not app.exception
    assert any("Review saved" in s.value for s in app.success), [e.value for e in app.error]
    (review,) = ReviewStore(f"sqlite:///{with_classifiers}").current_reviews()
    assert (review.task, review.slice_view, review.slice_index) == ("ct-volume", "sagittal", 70)
    assert review.corrected_label == "uncertain" and set(review.predicted_probabilities) == {"cap", "covid"}
    assert "+" in review.model_name  # the fusion of the uniform and size-balanced models


def _page_with_uploads(page: str, files: list) -> None:
    """The CT volume page with ``st.file_uploader`` answering ``files`` (AppTest cannot upload)."""
    import runpy

    import streamlit as st

    class Upload:
        def __init__(self, number: int, name: str, data: bytes):
            self.file_id, self.name, self.size, self._data = f"upload-{number}", name, len(data), data

        def getvalue(self) -> bytes:
            return self._data

    original = st.file_uploader
    st.file_uploader = lambda *args, **kwargs: [Upload(n, name, data) for n, (name, data) in enumerate(files)]
    try:
        runpy.run_path(page)
    finally:
        st.file_uploader = original


def _nifti(slices: int) -> bytes:
    from core.io.nifti import nifti_bytes

    hu = np.full((slices, 64, 64), -1000, dtype=np.float32)
    hu[:, 16:48, 16:48] = 40
    return nifti_bytes(hu, (2.5, 1.0, 1.0))


@pytest.mark.parametrize("files, message", [
    ([("scan.nii.gz", b"\x1f\x8b" + b"not really gzip" * 20)], "not a NIfTI volume"),
    ([("scan.nii", _nifti(40)[:400])], "damaged or truncated"),
    ([("scan.nii", _nifti(4))], "only 4 axial slices"),
    ([("slice.png", b"\x89PNG\r\n\x1a\n" + bytes(64))], "CT slice page"),
    ([("notes.txt", b"hello, this is not a scan" * 10)], "not recognised as a CT volume"),
])
def test_a_bad_upload_shows_a_specific_message_and_no_trace(bundled, files, message):
    app = AppTest.from_function(_page_with_uploads, args=(CT_VOLUME, files), default_timeout=120).run()
    assert not app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and message in errors[0], errors
    assert not app.image and not app.metric  # nothing analysed


def test_the_dicom_files_of_one_series_in_any_order_are_one_volume(bundled):
    from core.ct_volume_phantoms import DEMO_SHAPE, DEMO_SPACING_MM, make_ct_volume
    from core.io.series import dicom_series_bytes

    phantom = make_ct_volume("cap", 2, shape=DEMO_SHAPE, spacing_mm=DEMO_SPACING_MM, infection_ratio=0.01)
    files = [(f"IM{n:04d}", data) for n, data in enumerate(dicom_series_bytes(phantom.hu, phantom.spacing_mm,
                                                                                shuffle_seed=5))]
    app = AppTest.from_function(_page_with_uploads, args=(CT_VOLUME, files), default_timeout=300).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert [c.split(" — ")[0] for c in image_captions(app)] == ["Axial 40", "Coronal 80", "Sagittal 80"]
    assert not any("SYNTHETIC DEMO" in w.value for w in app.warning)  # an upload: no demo banner
    metrics = {m.label: m.value for m in app.metric}
    assert float(metrics["Right lung"].removesuffix(" ml")) > 300 and float(metrics["Left lung"].removesuffix(" ml")) > 300
