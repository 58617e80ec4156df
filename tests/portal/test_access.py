"""The portal session: signed-in pages, idle expiry, sign-out."""

from __future__ import annotations

import time

import pytest
from django.test import Client, override_settings

from portal.access import SESSION_SEEN
from tests.portal.conftest import portal_session

pytestmark = pytest.mark.django_db


def test_a_signed_in_session_shows_the_client_its_address() -> None:
    browser, _ = portal_session("Ann@Example.com")
    page = browser.get("/portal/")
    assert page.status_code == 200
    assert b"ann@example.com" in page.content
    assert b"Sign out" in page.content


def test_a_visitor_sees_no_client() -> None:
    page = Client().get("/portal/")
    assert page.status_code == 200
    assert b"Sign out" not in page.content


@override_settings(PORTAL_SESSION_IDLE_SECONDS=3600)
def test_a_session_idle_longer_than_the_setting_is_signed_out() -> None:
    browser, _ = portal_session("ann@example.com")
    session = browser.session
    session[SESSION_SEEN] = int(time.time()) - 3601
    session.save()
    page = browser.get("/portal/")
    assert b"ann@example.com" not in page.content
    assert b"signed out after a while" in page.content
    # and it stays signed out
    assert b"ann@example.com" not in browser.get("/portal/").content


def test_sign_out_ends_the_portal_session() -> None:
    browser, _ = portal_session("ann@example.com")
    assert browser.post("/portal/sign-out/").status_code == 302
    assert b"ann@example.com" not in browser.get("/portal/").content
    assert browser.get("/portal/sign-out/").status_code == 405


def test_a_page_behind_the_sign_in_sends_a_visitor_to_it_and_back() -> None:
    answer = Client().post("/portal/keys/bind/?x=1", {"key": "tg-anything"})
    assert answer.status_code == 302
    assert answer["Location"] == "/portal/?next=%2Fportal%2Fkeys%2Fbind%2F%3Fx%3D1"
    form = Client().get("/portal/?next=%2Fportal%2Fkeys%2F7%2F%3Fwindow%3D7d")
    assert b'name="next" value="/portal/keys/7/?window=7d"' in form.content
