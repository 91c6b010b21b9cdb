"""One card per upload from its first byte to its job: bytes sent and speed while it
goes, the same card becoming the job (also when the file is turned down: never "Not
uploaded" for a file that was uploaded), and the size limit checked before sending."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env, throttle

pytest.importorskip("playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

# Remembers the first card the list got and every card count and pill text it showed.
WATCH_CARDS = """() => {
  const list = document.getElementById('jobs');
  window.seen = { first: null, most: 0, pills: new Set() };
  new MutationObserver(() => {
    const cards = list.querySelectorAll('.card');
    if (!window.seen.first && cards.length) window.seen.first = cards[0];
    window.seen.most = Math.max(window.seen.most, cards.length);
    for (const p of list.querySelectorAll('.pill')) window.seen.pills.add(p.textContent);
  }).observe(list, { childList: true, subtree: true, characterData: true });
}"""


def open_watched_page(p, url: str):
    """The page, live, with WATCH_CARDS recording its list."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector('#live[data-state="live"]')
    page.evaluate(WATCH_CARDS)
    return browser, page


def test_one_card_for_an_upload_turned_down(daemon_factory):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False})
    with sync_playwright() as p:
        browser, page = open_watched_page(p, d.url)
        page.set_input_files(
            "#file-input",
            files=[
                {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a video\n" * 50}
            ],
        )
        card = page.locator(".card.job.status-rejected")
        expect(card).to_have_count(1)
        expect(card.locator(".name")).to_have_text("notes.txt")
        expect(card.locator(".error-text")).to_be_visible()
        seen = page.evaluate(
            "() => ({ most: window.seen.most, pills: [...window.seen.pills],"
            " same: window.seen.first === document.querySelector('.card.job') })"
        )
        assert seen["most"] == 1, seen  # never a second card
        assert seen["same"], seen  # the upload's card became the job's
        assert "Not uploaded" not in seen["pills"], seen
        assert "Uploading" in seen["pills"], seen
        browser.close()


def test_bytes_speed_and_pause_then_the_job_in_the_same_card(daemon_factory, clip):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False})
    with sync_playwright() as p:
        browser, page = open_watched_page(p, d.url)
        throttle(page, 60 * 1024)
        page.set_input_files("#file-input", str(clip))
        meta = page.locator(".card.upload .meta")
        expect(meta).to_contain_text(" of ")  # "120 KB of 400 KB · 30% · 61 KB/s"
        expect(meta).to_have_text(re.compile(r"\d+(\.\d)? [KM]B of .* · \d+% · \d+(\.\d)? [KM]B/s"))
        # The network goes: the card says it waits, and goes on when it is back.
        page.context.set_offline(True)
        expect(page.locator(".card.upload .pill")).to_have_text("Paused — resuming")
        page.context.set_offline(False)
        throttle(page, -1)
        job = page.locator(".card.job")
        expect(job).to_have_count(1, timeout=30_000)
        assert page.evaluate("() => window.seen.first === document.querySelector('.card.job')")
        assert page.evaluate("() => window.seen.most") == 1
        browser.close()


def test_a_file_over_the_limit_is_never_sent(daemon_factory):
    d = daemon_factory(
        env=daemon_env(), watch={"enabled": False}, web={"max_upload_bytes": 1_000_000}
    )
    sent: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("request", lambda r: r.method != "GET" and sent.append(r.url))
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        page.wait_for_function("() => document.querySelector('.chip-count').textContent !== ''")
        page.set_input_files(
            "#file-input",
            files=[{"name": "big.avi", "mimeType": "video/x-msvideo", "buffer": b"\0" * 2_500_000}],
        )
        card = page.locator(".card.upload")
        expect(card.locator(".error-text")).to_have_text(
            "This file is 2.5 MB; vidd takes files up to 1 MB."
        )
        page.wait_for_timeout(300)
        assert sent == []
        card.get_by_role("button", name="Dismiss big.avi").click()
        expect(card).to_have_count(0)
        browser.close()
