"""Feedback where the click was: an action's error shows next to its button and stays
until dismissed; actions are disabled while the daemon is away and come back with it;
on a phone a long name is readable in full and the page says "Choose videos"."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, start_with_jobs
from testkit.jobs import ended_job
from vidd.job import Status

pytest.importorskip("playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

LONG_NAME = "bulk-004-holiday-in-the-mountains-with-grandma-and-the-dog-2026-summer.mov"


def delete(url: str) -> int:
    req = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def hold_back_deletions(route):
    """A slow network for one kind of message: this page hears of no deletion, so its
    card is still there when the person clicks Delete."""
    server = route.connect_to_server()
    route.on_message(lambda message: server.send(message))

    def forward(message):
        if json.loads(message).get("type") != "deleted":
            route.send(message)

    server.on_message(forward)


def test_an_error_stays_next_to_its_button(daemon_factory, tmp_path):
    job = ended_job(1, Status.FAILED, name="holiday.mov")
    d = start_with_jobs(daemon_factory, tmp_path, [job], watch={"enabled": False})
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda dialog: dialog.accept())
        page.route_web_socket("**/ws", hold_back_deletions)
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        card = page.locator(f'.card.job[data-id="{job.id}"]')
        expect(card).to_be_visible()

        assert delete(f"{d.url}/api/jobs/{job.id}") == 200  # another client was quicker
        card.get_by_role("button", name="Delete holiday.mov").click()
        problem = card.locator(".action-error")
        expect(problem).to_be_visible()
        expect(problem).to_contain_text("Delete didn't work")
        # right under the card's buttons, not in a corner of the page
        buttons = card.locator(".actions").bounding_box()
        box = problem.bounding_box()
        assert 0 <= box["y"] - (buttons["y"] + buttons["height"]) < 40
        page.wait_for_timeout(5000)  # the old note went away after 4 s; this one stays
        expect(problem).to_be_visible()
        problem.get_by_role("button", name="Dismiss").click()
        expect(problem).to_be_hidden()
        browser.close()
    assert problems == []


def test_actions_wait_while_the_daemon_is_away(daemon_factory, tmp_path):
    jobs = [ended_job(1, Status.FAILED), ended_job(2, Status.CANCELLED)]
    d = start_with_jobs(daemon_factory, tmp_path, jobs, watch={"enabled": False})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        actions = page.locator(".card.job .server-action")
        expect(actions.first).to_be_visible()
        count = actions.count()
        assert count >= 4  # Retry and Delete on each card
        assert all(actions.nth(i).is_enabled() for i in range(count))

        d.stop()
        page.wait_for_selector('#live[data-state="offline"]')
        for i in range(count):
            expect(actions.nth(i)).to_be_disabled()

        d.start()
        page.wait_for_selector('#live[data-state="live"]', timeout=30_000)
        actions = page.locator(".card.job .server-action")
        expect(actions).to_have_count(count)
        for i in range(count):
            expect(actions.nth(i)).to_be_enabled()
        browser.close()


def test_a_phone_shows_whole_names_and_touch_words(daemon_factory, tmp_path):
    job = ended_job(1, Status.CANCELLED, name=LONG_NAME)
    d = start_with_jobs(daemon_factory, tmp_path, [job], watch={"enabled": False})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        phone = browser.new_context(
            viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True
        )
        page = phone.new_page()
        page.goto(d.url + "/")
        assert page.evaluate("matchMedia('(pointer: coarse)').matches")
        expect(page.locator("#drop-title")).to_have_text("Choose videos")
        name = page.locator(f'.card.job[data-id="{job.id}"] .name')
        expect(name).to_have_text(LONG_NAME)
        # all of it on the screen: wrapped, not cut with an ellipsis
        cut = name.evaluate("n => n.scrollWidth > n.clientWidth + 1")
        assert not cut
        assert name.bounding_box()["height"] > 30  # on more than one line
        phone.close()

        desktop = browser.new_page()
        desktop.goto(d.url + "/")
        expect(desktop.locator("#drop-title")).to_have_text("Drop videos here")
        browser.close()
