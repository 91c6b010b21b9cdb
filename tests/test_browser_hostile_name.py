"""A real clip uploaded under the name `<img src=x onerror=alert(1)>.mp4` shows as text,
on the list and on the watch page, and runs no script."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)>.mp4"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def test_hostile_file_name_is_only_text(daemon_factory, clip_h264):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False})
    dialogs: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        page.set_input_files(
            "#file-input",
            files=[{"name": HOSTILE, "mimeType": "video/mp4", "buffer": clip_h264.read_bytes()}],
        )
        card = page.locator(".card.job").first
        card.locator(".name").wait_for()
        name = card.locator(".name")
        assert name.text_content() == HOSTILE
        assert name.is_visible()
        page.get_by_text(HOSTILE, exact=True).first.wait_for(state="visible")
        page.wait_for_selector(".card.job.status-done .thumb img", timeout=60_000)
        assert page.locator('img[src="x"]').count() == 0  # never became markup
        job_id = card.get_attribute("data-id")

        page.goto(f"{d.url}/watch/{job_id}")
        title = page.locator("#title")
        page.wait_for_function(
            "name => document.getElementById('title').textContent === name", arg=HOSTILE
        )
        assert title.is_visible()
        assert page.title() == f"{HOSTILE} · vidd"
        assert page.locator('img[src="x"]').count() == 0
        page.wait_for_timeout(300)  # give a stray handler the chance to fire
        browser.close()
    assert dialogs == []
    assert problems == []
