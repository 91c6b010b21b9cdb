"""Browsers get an HTML page for an error (a fixed template: nothing from the request in
it, a way back to /); the API and clients that did not ask for HTML keep the JSON error
shape. Against the real app, and once in Debian's Chromium against a real vidd."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env
from testkit.jobs import add_rejected
from vidd.job import new_id
from vidd.web.app import create_app
from vidd.web.error_page import WORDS

# What Chromium sends when it navigates to a page.
BROWSER = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
MARKER = "zq7Marker"  # in every path asked for: it must never come back in a page
# 256 bits, as `openssl rand -hex 32` makes
TOKEN = "9a1c3e5b7d9f0a2c4e6b8d1f3a5c7e9b0d2f4a6c8e1b3d5f7a9c0e2b4d6f8a1c"


@pytest.fixture
async def client(aiohttp_client, make_config):
    return await aiohttp_client(create_app(make_config(watch={"enabled": False})))


def not_found_paths() -> list[str]:
    return [
        f"/{MARKER}",
        f"/watch/{MARKER}Lj6gR1tY",  # a well-formed id of no job (fixed: xdist collects twice)
        f"/watch/{MARKER}%3Cscript%3E",  # not an id at all
        f"/static/{MARKER}/x",
        f"/{MARKER}/%3Cb%3Ebold%3C%2Fb%3E?q=%3Ci%3E{MARKER}",
    ]


def assert_page(body: str, status: int, code: str) -> None:
    title, message = WORDS[status]
    assert f"Error {status} ({code})" in body  # vidd's own code, for whoever reports it
    assert body.startswith("<!doctype html>")
    assert f"<h1>{html.escape(title)}</h1>" in body and html.escape(message) in body
    assert 'href="/"' in body
    assert MARKER.lower() not in body.lower()
    assert "$" not in body  # every placeholder filled
    assert "<script" not in body and "<b>" not in body and "<i>" not in body


@pytest.mark.parametrize("path", not_found_paths())
async def test_a_browser_gets_a_page_for_a_404(client, path):
    resp = await client.get(path, headers={"Accept": BROWSER})
    assert resp.status == 404
    assert resp.content_type == "text/html" and resp.charset == "utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" in resp.headers  # the usual headers, all of them
    assert_page(await resp.text(), 404, "not_found")


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "text/plain"])
@pytest.mark.parametrize("path", not_found_paths()[:3])
async def test_other_clients_keep_json(client, path, accept):
    resp = await client.get(path, headers={"Accept": accept} if accept else {})
    assert resp.status == 404 and resp.content_type == "application/json"
    assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "path",
    ["/api/jobs/xaNsylKDRnQi", "/api/jobs/S5JZCotGyKzf/log", f"/api/{MARKER}", "/api/jobs?limit=0"],
)
async def test_the_api_keeps_json_even_for_a_browser(client, path):
    resp = await client.get(path, headers={"Accept": BROWSER})
    assert resp.status in (400, 404) and resp.content_type == "application/json"
    assert set((await resp.json())["error"]) == {"code", "message"}


async def test_a_known_job_still_has_its_page(client):
    job = await add_rejected(client)
    resp = await client.get(f"/watch/{job.id}", headers={"Accept": BROWSER})
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "<h1" in await resp.text() and "Nothing here" not in await resp.text()


async def test_other_errors_get_their_own_words_and_headers(client):
    resp = await client.post(f"/watch/{new_id()}", headers={"Accept": BROWSER})
    assert resp.status == 405 and resp.content_type == "text/html"
    assert "GET" in resp.headers["Allow"]  # still says how to ask
    assert_page(await resp.text(), 405, "method_not_allowed")
    resp = await client.head(f"/{MARKER}", headers={"Accept": BROWSER})
    assert resp.status == 404 and await resp.read() == b""


async def test_without_the_token_a_browser_is_told_to_sign_in(aiohttp_client, make_config):
    app = create_app(make_config(watch={"enabled": False}, web={"token": TOKEN}))
    client = await aiohttp_client(app)
    resp = await client.get(f"/{MARKER}", headers={"Accept": BROWSER})
    assert resp.status == 401 and resp.content_type == "text/html"
    assert_page(await resp.text(), 401, "unauthorized")
    resp = await client.get(f"/{MARKER}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 404 and resp.content_type == "application/json"


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_chromium_shows_the_page_and_the_way_back(daemon_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    d = daemon_factory(env=daemon_env(), watch={"enabled": False})
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for scheme in ("light", "dark"):  # axe-core: no serious or critical violation
            page = browser.new_page(color_scheme=scheme)
            page.goto(f"{d.url}/{MARKER}")
            response = axe.Axe().run(page).response
            assert "color-contrast" in {r["id"] for r in response["passes"]}, scheme
            bad = [
                v["id"] for v in response["violations"] if v["impact"] in ("serious", "critical")
            ]
            assert bad == [], (scheme, bad)
            page.close()
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        # A 404 logs "Failed to load resource" by itself; anything else (CSP) is a problem.
        page.on(
            "console",
            lambda m: m.type == "error" and "404" not in m.text and problems.append(m.text),
        )
        answer = page.goto(f"{d.url}/watch/{new_id()}")
        assert answer is not None and answer.status == 404
        heading = page.get_by_role("heading", level=1)
        assert heading.text_content() == WORDS[404][0]
        assert page.title().startswith(WORDS[404][0])
        page.get_by_role("link", name="Back to all videos").click()
        page.wait_for_url(f"{d.url}/")
        browser.close()
    assert problems == []
