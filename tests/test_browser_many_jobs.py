"""The page with 1,000 jobs in its store: the first paint shows one page and the totals
of every state, scrolling to the end loads them all, a filter shows only its states, and
a search finds one job by its name; the page grows by one page of cards at a time; and
what the server pushes keeps to the filter."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, start_with_jobs
from testkit.daemon import get_json, wait_for
from testkit.jobs import ended_job, mixed_jobs
from vidd.job import Status

pytest.importorskip("playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

JOBS = 1000
PAGE = 50  # the page's PAGE_SIZE
NEEDLE = "grandmas-birthday-unique.mov"


def test_a_thousand_jobs(daemon_factory, tmp_path):
    jobs = mixed_jobs(JOBS)  # done, failed, rejected, cancelled in turn: 250 each
    jobs[500] = ended_job(500, Status.DONE, name=NEEDLE)
    d = start_with_jobs(daemon_factory, tmp_path, jobs, watch={"enabled": False})
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        cards = page.locator("#jobs .card.job")

        # First paint: one page, and the totals of the whole store.
        expect(page.locator("#list-status")).to_have_text(f"Showing {PAGE} of 1,000")
        assert cards.count() == PAGE
        chip = '.chip[data-filter="{}"] .chip-count'
        expect(page.locator(chip.format("all"))).to_have_text("1,000")
        expect(page.locator(chip.format("ready"))).to_have_text("250")
        expect(page.locator(chip.format("failed"))).to_have_text("500")  # failed + rejected
        expect(page.locator(chip.format("cancelled"))).to_have_text("250")
        summary = page.locator("#summary")
        for words in ("250 ready", "250 failed", "250 not videos", "250 cancelled"):
            expect(summary).to_contain_text(words)
        alert = page.locator("#failed-alert")  # failures in sight from the top bar
        expect(alert).to_have_text("500 failed")
        height_one_page = page.evaluate("document.documentElement.scrollHeight")

        # Scrolling to the end loads every page, newest first, each job once.
        for _ in range(JOBS // PAGE + 5):
            if page.locator("#list-status").text_content() == "Showing 1,000 of 1,000":
                break
            page.locator("#jobs-end").scroll_into_view_if_needed()
            page.wait_for_timeout(150)
        expect(page.locator("#list-status")).to_have_text("Showing 1,000 of 1,000")
        ids = cards.evaluate_all("cards => cards.map(c => c.dataset.id)")
        assert len(ids) == len(set(ids)) == JOBS
        names = cards.locator(".name").all_text_contents()
        assert names[0] == "bulk-0999-cancelled.avi" and names[-1] == "bulk-0000-done.avi"
        assert page.locator("#load-more").is_hidden()
        height_all = page.evaluate("document.documentElement.scrollHeight")
        # the page grows with what is loaded, a page of cards at a time
        per_card = (height_all - height_one_page) / (JOBS - PAGE)
        assert 0 < per_card < 250, per_card

        # A filter: failed or rejected only, paged again from the top.
        page.locator('.chip[data-filter="failed"]').click()
        expect(page.locator("#list-status")).to_have_text(f"Showing {PAGE} of 500")
        states = cards.evaluate_all("cards => cards.map(c => c.dataset.status)")
        assert set(states) == {"failed", "rejected"} and len(states) == PAGE
        assert page.locator('.chip[data-filter="failed"]').get_attribute("aria-pressed") == "true"

        # The top bar's alert leads to the same list from anywhere.
        page.locator('.chip[data-filter="all"]').click()
        expect(page.locator("#list-status")).to_have_text(f"Showing {PAGE} of 1,000")
        alert.click()
        expect(page.locator("#list-status")).to_have_text(f"Showing {PAGE} of 500")

        # A search, on the server: one job among 1,000, in every filter that holds it.
        page.locator('.chip[data-filter="all"]').click()
        page.locator("#search").fill("b")  # one letter: not a search yet, and it says so
        expect(page.locator("#search-hint")).to_be_visible()
        page.locator("#search").fill("BIRTHDAY-uniq")
        expect(page.locator("#search-hint")).to_be_hidden()
        expect(cards).to_have_count(1)
        expect(cards.locator(".name")).to_have_text(NEEDLE)
        expect(page.locator("#list-status")).to_have_text("Showing 1 of 1")
        page.locator('.chip[data-filter="cancelled"]').click()
        expect(cards).to_have_count(0)
        expect(page.locator("#empty")).to_have_text("No videos match.")
        page.locator('.chip[data-filter="ready"]').click()
        expect(cards).to_have_count(1)
        page.locator("#search").fill("")
        expect(page.locator("#list-status")).to_have_text(f"Showing {PAGE} of 250")
        browser.close()
    assert problems == []


# Remembers every state a card in the list had while the test ran.
WATCH_STATES = """() => {
  const list = document.getElementById('jobs');
  window.statesSeen = new Set();
  new MutationObserver(() => {
    for (const c of list.querySelectorAll('.card.job')) window.statesSeen.add(c.dataset.status);
  }).observe(list, { childList: true, subtree: true, attributes: true });
}"""


def post(url: str) -> int:
    req = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def delete(url: str) -> int:
    req = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def test_live_updates_keep_the_filter(daemon_factory, tmp_path):
    jobs = mixed_jobs(240)  # 60 of each state: the failed filter has two pages
    d = start_with_jobs(daemon_factory, tmp_path, jobs, watch={"enabled": False})
    newest_failed = jobs[-3]  # 237 % 4 == 1: failed
    newest_rejected = jobs[-2]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        page.locator('.chip[data-filter="failed"]').click()
        status = page.locator("#list-status")
        expect(status).to_have_text(f"Showing {PAGE} of 120")
        page.evaluate(WATCH_STATES)

        # Retried elsewhere: it leaves the filter while it waits, and comes back when it
        # fails again (the seeded job has no source file), in its place.
        assert post(f"{d.url}/api/jobs/{newest_failed.id}/retry") == 200
        wait_for(
            lambda: get_json(f"{d.url}/api/jobs/{newest_failed.id}")["status"] == "failed",
            timeout=10,
        )
        card = page.locator(f'.card.job[data-id="{newest_failed.id}"]')
        expect(card).to_have_attribute("data-status", "failed")
        assert page.evaluate("[...window.statesSeen]") and set(
            page.evaluate("[...window.statesSeen]")
        ) <= {"failed", "rejected"}
        ids = page.locator(".card.job").evaluate_all("cards => cards.map(c => c.dataset.id)")
        assert len(ids) == len(set(ids)) == PAGE
        assert ids[1] == newest_failed.id  # after the newest rejected one, as before

        # Deleted elsewhere: its card goes, the count follows.
        assert delete(f"{d.url}/api/jobs/{newest_rejected.id}") == 200
        expect(page.locator(f'.card.job[data-id="{newest_rejected.id}"]')).to_have_count(0)
        expect(status).to_have_text(f"Showing {PAGE - 1} of 119")
        expect(page.locator("#failed-alert")).to_have_text("119 failed")
        browser.close()
