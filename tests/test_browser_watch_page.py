"""The watch page of a job that did not finish is no dead end: no empty player, the
reason said once with its technical detail one click away, Retry (where the server
allows it), Delete and HandBrake's log; and what the inbox did with a file is said on
its card and its watch page."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env, start_with_jobs
from testkit.daemon import get_json, wait_for
from testkit.jobs import ended_job
from testkit.media import FFMPEG
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
        detail = get_json(f"{d.url}/api/jobs/{failed.id}")["error"].get("detail")
        if detail and detail != message:  # the technical words, one click away
            technical = error.locator(".error-detail pre")
            expect(technical).to_have_text(detail)
            assert technical.is_hidden()
            error.get_by_text("Technical detail").click()
            expect(technical).to_be_visible()
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


def browser_mp4(path: Path) -> Path:
    """A 2 s H.264 (yuv420p, what browsers play) / AAC MP4: a file vidd repackages."""
    args = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine"]
    args += ["-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True, timeout=60)
    return path


def test_what_the_inbox_did_is_on_the_card_and_the_watch_page(daemon_factory, tmp_path):
    out = tmp_path / "out"
    (out / "2026" / "summer").mkdir(parents=True)
    (out / "2026" / "summer" / "holiday.mp4").write_bytes(b"an older result")  # kept
    d = daemon_factory(
        env=daemon_env(),
        storage={"data_dir": "var", "min_free_bytes": 0, "output_dir": str(out)},
        watch={"recursive": True},
        encode={"default_profile": "web-full-rate"},  # copies an H.264/AAC source
    )
    (d.inbox / "2026" / "summer").mkdir(parents=True)
    staged = d.data / "staged.mp4"
    browser_mp4(staged)
    staged.rename(d.inbox / "2026" / "summer" / "holiday.mp4")
    (d.data / "staged.txt").write_text("not a video\n")
    (d.data / "staged.txt").rename(d.inbox / "notes.txt")

    def finished():
        jobs = get_json(d.url + "/api/jobs")["jobs"]
        ended = {j["name"]: j for j in jobs if j["status"] in ("done", "rejected", "failed")}
        done = ended.get("holiday.mp4")
        return ended if len(ended) == 2 and done and done["published_as"] else None

    jobs = wait_for(finished, timeout=60)
    published, rejected = jobs["holiday.mp4"], jobs["notes.txt"]
    assert published["status"] == "done" and published["repackaged"]
    assert published["folder"] == "2026/summer" and published["publish_note"]
    assert rejected["rejected_as"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(d.url + "/")
        card = page.locator(f'.card.job[data-id="{published["id"]}"] .inbox-line')
        expect(card).to_contain_text("From the inbox folder 2026/summer")
        expect(card).to_contain_text("Repackaged without re-encoding")
        expect(card).to_contain_text(f"Published as {published['published_as']}")
        expect(card).to_contain_text(published["publish_note"].rstrip("."))
        other = page.locator(f'.card.job[data-id="{rejected["id"]}"] .inbox-line')
        expect(other).to_have_text(f"Moved to rejected/{rejected['rejected_as']}.")

        page.goto(f"{d.url}/watch/{published['id']}")
        details = page.locator("#details")
        expect(details).to_contain_text(published["published_as"])
        expect(details).to_contain_text("Repackaged without re-encoding")
        expect(details).to_contain_text("Inbox folder")
        page.goto(f"{d.url}/watch/{rejected['id']}")
        expect(page.locator("#details")).to_contain_text(f"rejected/{rejected['rejected_as']}")
        browser.close()
