"""The X-ray page shows the Grad-CAM's deletion score and in-lung share next to it (AppTest, tiny registry)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[2] / "pages"


def test_xray_page_shows_the_faithfulness_scores(registry_env, tiny_registry_dir):
    registry_env(tiny_registry_dir)
    app = AppTest.from_file(str(PAGES / "chest_xray.py"), default_timeout=120).run()
    app.radio(key="cxr_source").set_value("Synthetic demo case").run()
    assert not app.exception
    captions = " ".join(c.value for c in app.caption)
    # random tiny weights: a Grad-CAM with a highlighted region is scored, an all-zero one is said to be so
    assert ("Deletion score **" in captions and "in-lung share **" in captions
            and "Deletion score near 0" in captions) or "Grad-CAM is zero everywhere" in captions
    result = next(iter(app.session_state["cxr_results"].values()))
    assert result.faithfulness is not None
    if result.faithfulness["deletion_score"] is not None:
        assert f"{result.faithfulness['deletion_score']:+.3f}" in captions
