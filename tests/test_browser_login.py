"""Signing in to a vidd that has a token, in Debian's Chromium: the form works with the
headers a real browser sends (Origin, Sec-Fetch-*), a wrong token is said in words on
the page, Sign out ends the session, and a form on another site still can't log in."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env
from testkit.daemon import free_port

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

TOKEN = "9d4b2f6a8c0e1d3f5a7b9c2e4f6a8b0d1c3e5f7a9b2d4f6a8c0e2b4d6f8a0c1e"


def test_sign_in_wrong_then_right_then_sign_out(daemon_factory):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False}, web={"token": TOKEN})
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(d.url + "/")
        page.wait_for_url("**/login")  # the page sends a stranger to the form

        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        page.wait_for_url("**/login?failed=1")
        failed = page.locator("#failed")
        assert failed.is_visible()
        assert failed.text_content() == "That token is not right. Try again."
        assert "error" not in page.content().split("<body", 1)[1][:40]  # a page, not JSON

        time.sleep(1.0)  # one wrong try: the next is allowed after half a second
        page.fill("#token", TOKEN)
        with page.expect_response(lambda r: r.url.endswith("/login")) as answer:
            page.click("button[type=submit]")
        assert answer.value.status == 303  # not the 403 of a foreign origin
        page.wait_for_url(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')  # the WebSocket took the cookie
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "vidd_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]

        sign_out = page.locator("#logout button")
        sign_out.wait_for()
        sign_out.click()
        page.wait_for_url("**/login")
        page.goto(d.url + "/")
        page.wait_for_url("**/login")  # the session is over
        browser.close()
    assert problems == []
    assert "a failed login from 127.0.0.1" in d.log()


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site on another port, whose page posts the right token to vidd."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = (
            f'<form id="f" method="post" action="{self.target}/login">'
            f'<input name="token" value="{TOKEN}"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_form_on_another_site_cannot_sign_in(daemon_factory):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False}, web={"token": TOKEN})
    _Attacker.target = d.url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            with page.expect_response(lambda r: r.url.endswith("/login")) as answer:
                page.goto(f"http://127.0.0.1:{server.server_port}/")
            assert answer.value.status == 403
            # A browser's navigation: the refusal comes as vidd's HTML error page.
            assert "Error 403 (foreign_origin)" in answer.value.text()
            assert not [c for c in page.context.cookies() if c["name"] == "vidd_session"]
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
