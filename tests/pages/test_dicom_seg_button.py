"""The "Download DICOM SEG" button: beside the PDF report for a case uploaded as DICOM, absent otherwise."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.ct_phantoms import ct_phantom_dicom_bytes, make_ct_phantom

CT_SLICE = str(Path(__file__).resolve().parents[2] / "pages" / "ct_slice.py")


@pytest.fixture
def app(registry_env, tiny_ct_registry_dir):
    registry_env(tiny_ct_registry_dir)
    app = AppTest.from_file(CT_SLICE, default_timeout=180).run()
    assert not app.exception
    return app


def labels(app) -> list[str]:
    return [button.proto.label for button in app.get("download_button")]


def test_a_dicom_upload_gets_the_seg_button_beside_the_pdf(app):
    slice_file = ct_phantom_dicom_bytes(make_ct_phantom("covid", seed=4, size=256), PatientName="Doe^Jane")
    app.file_uploader[0].upload("Doe_Jane.dcm", slice_file, "application/dicom").run()
    assert not app.exception
    assert labels(app) == ["Download PDF report", "Download DICOM SEG"]
    assert not any("DICOM SEG" in caption.value for caption in app.caption)  # no refusal shown


def test_a_demo_case_has_no_seg_button(app):
    app.radio(key="ct_source").set_value("Synthetic demo case").run()
    assert not app.exception
    assert labels(app) == ["Download PDF report"]
