"""Logins through Streamlit's AppTest: the gate on every page, signing in and out, expiry, roles, first start."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.auth import UserStore, start_session
from core.reviews import ReviewInput, ReviewStore
from pages.common import SESSION_KEY
from tests.sign_in import FAST_HASHER, TEST_PASSWORD, ensure_user, sign_in

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
# Forms are submitted on a page run alone: AppTest resets Streamlit's pages/ mode before every run of
# app.py (a pages/ folder sits beside it), so each later run of app.py starts in the page file, whose
# require_app_frame() reruns through app.py and drops the click. A real server does that once per process.
HOME = str(REPO / "pages" / "home.py")


def app_page_files() -> list[str]:
    """Every ``st.Page("pages/...")`` that app.py declares."""
    calls = [node for node in ast.walk(ast.parse((REPO / "app.py").read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Page"]
    return [call.args[0].value for call in calls]


@pytest.fixture
def db(monkeypatch, tmp_path) -> str:
    import streamlit as st

    monkeypatch.setenv("CHEST_REVIEW_DB", str(tmp_path / "reviews.sqlite"))
    st.cache_resource.clear()
    yield f"sqlite:///{tmp_path / 'reviews.sqlite'}"
    st.cache_resource.clear()


def texts(app) -> str:
    return " ".join(str(e.value) for kind in ("title", "markdown", "info", "error", "caption", "success")
                    for e in getattr(app, kind))


def assert_only_the_sign_in_form(app) -> None:
    assert not app.exception
    assert [t.value for t in app.title] == ["Sign in"]
    assert [t.label for t in app.text_input] == ["Username", "Password"]
    assert [b.label for b in app.button] == ["Sign in"]
    assert not app.dataframe and not app.selectbox and not app.radio and not app.get("file_uploader")


def sign_in_with_form(app, username: str, password: str):
    app.text_input(key="sign_in_username").input(username)
    app.text_input(key="sign_in_password").input(password)
    return app.button[0].click().run()


def test_app_py_declares_the_users_page() -> None:
    assert "pages/users.py" in app_page_files() and "pages/review_log.py" in app_page_files()


@pytest.mark.parametrize("page", app_page_files())
def test_a_visitor_sees_only_the_sign_in_form_on_every_page(db, signed_out, page) -> None:
    through_app = AppTest.from_file(APP, default_timeout=60).run()
    through_app.switch_page(page).run()  # the page's URL, through app.py's navigation
    assert_only_the_sign_in_form(through_app)
    alone = AppTest.from_file(str(REPO / page), default_timeout=60).run()  # the page run without app.py
    assert_only_the_sign_in_form(alone)


def test_signing_in_through_the_form_opens_the_page_asked_for(db, signed_out) -> None:
    ensure_user(db, "dr.ann", role="reviewer")
    app = AppTest.from_file(str(REPO / "pages" / "review_log.py"), default_timeout=60).run()
    assert_only_the_sign_in_form(app)
    sign_in_with_form(app, "Dr.Ann", TEST_PASSWORD)  # usernames are not case sensitive
    assert not app.exception
    assert [t.value for t in app.title] == ["Review log"]
    assert UserStore(db).user("dr.ann").last_login_at is not None


def test_app_py_shows_who_is_signed_in_beside_the_sign_out_button(db, signed_out) -> None:
    app = AppTest.from_file(APP, default_timeout=60)
    sign_in(app, "dr.ann", role="reviewer")
    app.run()
    assert any("Signed in as **dr.ann** (reviewer)" in m.value for m in app.sidebar.markdown)
    assert [b.label for b in app.sidebar.button] == ["Sign out"]


@pytest.mark.parametrize("username, password", [("dr.ann", "not the password"), ("nobody", TEST_PASSWORD)])
def test_a_wrong_password_and_an_unknown_name_get_the_same_message(db, signed_out, username, password) -> None:
    ensure_user(db, "dr.ann", role="reviewer")
    app = sign_in_with_form(AppTest.from_file(HOME, default_timeout=60).run(), username, password)
    assert [e.value for e in app.error] == ["Wrong username or password."]
    assert_only_the_sign_in_form(app)


def test_five_failures_lock_the_name_with_a_message(db, signed_out) -> None:
    ensure_user(db, "dr.ann", role="reviewer")
    app = AppTest.from_file(HOME, default_timeout=60).run()
    for _ in range(5):
        sign_in_with_form(app, "dr.ann", "not the password")
    sign_in_with_form(app, "dr.ann", TEST_PASSWORD)  # the right password, but locked
    assert "Too many failed sign-ins" in app.error[0].value
    assert_only_the_sign_in_form(app)


def test_an_idle_or_old_session_ends_on_the_next_click(db, signed_out, monkeypatch) -> None:
    user = ensure_user(db, "dr.ann", role="reviewer")
    monkeypatch.setenv("CHEST_SESSION_IDLE_MINUTES", "30")
    app = AppTest.from_file(APP, default_timeout=60)
    past = datetime.now(timezone.utc) - timedelta(minutes=31)
    app.session_state[SESSION_KEY] = start_session(user, past)
    app.run()
    assert_only_the_sign_in_form(app)
    assert "30 minutes without activity" in texts(app)

    app = AppTest.from_file(APP, default_timeout=60)
    session = start_session(user, datetime.now(timezone.utc) - timedelta(hours=13))
    app.session_state[SESSION_KEY] = replace(session, last_seen_at=datetime.now(timezone.utc))
    app.run()
    assert "session ended after 12 hours" in texts(app)


def test_a_disabled_account_is_signed_out_at_its_next_click(db, signed_out) -> None:
    ensure_user(db, "boss", role="admin")
    app = AppTest.from_file(APP, default_timeout=60)
    sign_in(app, "dr.ann", role="reviewer")
    app.run()
    assert [t.value for t in app.title] == ["Chest imaging review"]
    with UserStore(db, hasher=FAST_HASHER) as store:
        store.disable_user("dr.ann")
    app.run()
    assert_only_the_sign_in_form(app)
    assert "disabled" in texts(app)


def test_the_users_page_is_for_admins_only(db, signed_out) -> None:
    reviewer = AppTest.from_file(APP, default_timeout=60)
    sign_in(reviewer, "dr.ann", role="reviewer")
    reviewer.run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        reviewer.switch_page("pages/users.py")  # not in a reviewer's navigation
    alone = AppTest.from_file(str(REPO / "pages" / "users.py"), default_timeout=60)
    sign_in(alone, "dr.ann", role="reviewer")
    alone.run()
    assert [e.value for e in alone.error] == ["Only administrators can manage users."] and not alone.dataframe

    through_app = AppTest.from_file(APP, default_timeout=60)
    sign_in(through_app, "boss", role="admin")
    through_app.run()
    through_app.switch_page("pages/users.py").run()
    assert [t.value for t in through_app.title] == ["Users"]

    admin = AppTest.from_file(str(REPO / "pages" / "users.py"), default_timeout=60)
    sign_in(admin, "boss", role="admin")
    admin.run()
    assert set(admin.dataframe[0].value["Username"]) == {"dr.ann", "boss"}
    admin.text_input(key="users_new_name").input("Dr.Bob")
    admin.selectbox(key="users_new_role").set_value("reviewer")
    admin.text_input(key="users_new_password").input("temporary pass 1")
    admin.button(key="FormSubmitter:users_add-Add user").click().run()
    assert not admin.exception and any("dr.bob" in s.value for s in admin.success)
    bob = UserStore(db).user("dr.bob")
    assert bob.role == "reviewer" and bob.must_change_password

    admin.selectbox(key="users_manage").set_value("dr.ann").run()
    admin.button(key="users_disable").click().run()
    assert UserStore(db).user("dr.ann").active is False
    admin.selectbox(key="users_manage").set_value("boss").run()
    admin.selectbox(key="users_role").set_value("reviewer").run()
    admin.button(key="users_set_role").click().run()
    assert "only active administrator" in admin.error[0].value and UserStore(db).user("boss").role == "admin"


def test_a_password_set_by_someone_else_must_be_changed_first(db, signed_out) -> None:
    with UserStore(db, hasher=FAST_HASHER) as store:
        store.create_user("dr.bob", "temporary pass 1", "reviewer", must_change_password=True)
    app = sign_in_with_form(AppTest.from_file(HOME, default_timeout=60).run(), "dr.bob", "temporary pass 1")
    assert [t.value for t in app.title] == ["Choose a new password"] and not app.exception
    app.text_input(key="change_current").input("temporary pass 1")
    app.text_input(key="change_new").input("my own passphrase")
    app.text_input(key="change_again").input("my own passphrase")
    app.button(key="FormSubmitter:change_password-Set password").click().run()
    assert [t.value for t in app.title] == ["Chest imaging review"]
    assert UserStore(db).authenticate("dr.bob", "my own passphrase").must_change_password is False


def test_first_start_prints_the_admin_password_to_the_log_never_to_the_page(db, signed_out, capsys) -> None:
    app = AppTest.from_file(APP, default_timeout=60).run()
    printed = capsys.readouterr().out
    password = re.search(r"One-time password: (\S+)", printed).group(1)
    assert len(password) >= 16 and password not in texts(app)
    AppTest.from_file(APP, default_timeout=60).run()
    assert "One-time password" not in capsys.readouterr().out  # once
    app = sign_in_with_form(AppTest.from_file(HOME, default_timeout=60).run(), "admin", password)
    assert [t.value for t in app.title] == ["Choose a new password"]


def test_a_reviewer_exports_their_own_reviews_and_an_admin_everyone_s(db, signed_out, monkeypatch) -> None:
    import hashlib

    def review(reviewer: str) -> ReviewInput:
        return ReviewInput(reviewer=reviewer, case_hash=hashlib.sha256(reviewer.encode()).hexdigest(),
                           model_name="manet", model_version="1.0", weights_sha256="a" * 64,
                           predicted_probabilities={"normal": 0.4, "covid": 0.6}, predicted_label="covid",
                           verdict="agree", confidence=3)

    with ReviewStore(db) as store:
        store.add_review(review("dr.ann"))
        store.add_review(review("dr.bob"))
    exported = []
    original = ReviewStore.export_csv
    monkeypatch.setattr(ReviewStore, "export_csv", lambda self, filters=None, include_history=False: exported.append(
        original(self, filters, include_history=include_history)) or exported[-1])
    page = str(REPO / "pages" / "review_log.py")

    reviewer = AppTest.from_file(page, default_timeout=60)
    sign_in(reviewer, "dr.ann", role="reviewer")
    reviewer.run()
    assert len(reviewer.dataframe[0].value) == 2  # reads everyone's
    assert "dr.bob" not in exported[-1] and "dr.ann" in exported[-1]
    reviewer.selectbox(key="rl_reviewer").select("dr.bob").run()
    assert not reviewer.get("download_button")

    admin = AppTest.from_file(page, default_timeout=60)
    sign_in(admin, "boss", role="admin")
    admin.run()
    assert "dr.bob" in exported[-1] and "dr.ann" in exported[-1]
