"""Profiles a person can choose between: each one's description in the picker, the
job's profile and description on its card and watch page, and Retry with another one."""

from __future__ import annotations

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


def test_profiles_in_picker_card_and_retry(daemon_factory, tmp_path):
    job = ended_job(1, Status.FAILED, name="holiday.mov", profile="web")
    d = start_with_jobs(daemon_factory, tmp_path, [job], watch={"enabled": False})
    described = {p["name"]: p["description"] for p in get_json(d.url + "/api/profiles")["profiles"]}
    assert {"web", "web-full-rate"} <= set(described)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')

        # The picker says what each profile does.
        picker = page.locator("#profile")
        expect(picker).to_be_visible()
        options = picker.locator("option").all_text_contents()
        for name, description in described.items():
            assert f"{name} — {description}" in options
        picker.select_option("web-full-rate")
        expect(page.locator("#profile-description")).to_have_text(described["web-full-rate"])

        # The card says which profile the job used.
        card = page.locator(f'.card.job[data-id="{job.id}"]')
        expect(card.locator(".profile-line")).to_have_text(f"Profile: web — {described['web']}")

        # Retry with the other one.
        card.get_by_label("Profile to retry holiday.mov with").select_option("web-full-rate")
        card.get_by_role("button", name="Retry holiday.mov").click()
        wait_for(
            lambda: get_json(f"{d.url}/api/jobs/{job.id}")["profile"] == "web-full-rate",
            timeout=10,
        )
        expect(card.locator(".profile-line")).to_contain_text("web-full-rate")
        assert card.locator(".action-error").is_hidden()

        # The watch page names it too.
        page.goto(f"{d.url}/watch/{job.id}")
        expect(page.locator("#details")).to_contain_text(
            f"web-full-rate — {described['web-full-rate']}"
        )
        browser.close()
    assert problems == []
