"""The watch page of a job that did not finish is no dead end: no empty player, the
reason said once with its technical detail one click away, Retry (where the server
allows it), Delete and HandBrake's log."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, start_with_jobs
from testkit.daemon import get_json, wait_for
from testkit.jobs import ended_job
from vidd.job import Status

pytest.importorskip("playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def gone(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
    except urllib.error.HTTPError as e:
        return e.code == 404
    return False


def test_failed_rejected_and_cancelled_watch_pages(daemon_factory, tmp_path):
    failed = ended_job(1, Status.FAILED, name="holiday.mov")
    rejected = ended_job(2, Status.REJECTED, name="notes.txt")
    cancelled = ended_job(3, Status.CANCELLED, name="long-film.mkv")
    d = start_with_jobs(
        daemon_factory, tmp_path, [failed, rejected, cancelled], watch={"enabled": False}
    )
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda dialog: dialog.accept())

        # Failed: the reason once, its detail behind a click, Retry, Delete, the log.
        page.goto(f"{d.url}/watch/{failed.id}")
        page.wait_for_selector('#live[data-state="live"]')
        expect(page.locator("#title")).to_have_text("holiday.mov")
        assert page.locator("#player-frame").is_hidden()
        message = get_json(f"{d.url}/api/jobs/{failed.id}")["error"]["message"]
        error = page.locator("#error")
        expect(error).to_be_visible()
        body = page.locator("main").inner_text()
        first_line = message.split(".")[0]
        assert body.count(first_line) == 1, body  # said once, not twice
        expect(page.locator("#retry")).to_be_enabled()
        expect(page.locator("#delete")).to_be_enabled()
        log = page.locator("#log-section")
        expect(log).to_be_visible()
        expect(log).to_contain_text("Encode failed (error 3)")
        assert page.locator("#log details").count() == 1  # every line, behind a <details>

        # Rejected: no player, no Retry (the server won't convert it), Delete and the log.
        page.goto(f"{d.url}/watch/{rejected.id}")
        expect(page.locator("#title")).to_have_text("notes.txt")
        assert page.locator("#player-frame").is_hidden()
        expect(page.locator("#error")).to_be_visible()
        assert page.locator("#retry").is_hidden()
        expect(log).to_be_visible()
        page.wait_for_selector('#live[data-state="live"]')
        page.locator("#delete").click()
        page.wait_for_url(d.url + "/")
        assert gone(f"{d.url}/api/jobs/{rejected.id}")

        # Cancelled: Retry puts it back in the queue from here.
        page.goto(f"{d.url}/watch/{cancelled.id}")
        expect(page.locator("#title")).to_have_text("long-film.mkv")
        assert page.locator("#player-frame").is_hidden()
        expect(page.locator("#state")).to_have_text("The conversion was cancelled.")
        page.wait_for_selector('#live[data-state="live"]')
        page.locator("#retry").click()
        wait_for(
            lambda: get_json(f"{d.url}/api/jobs/{cancelled.id}")["status"] != "cancelled",
            timeout=10,
        )
        # the page follows it live (it fails at once: the seeded job has no source file)
        expect(page.locator("#state")).not_to_have_text("The conversion was cancelled.")
        assert page.locator("#problem").is_hidden()
        browser.close()
    assert problems == []
