"""The page's uploads are resumable (tus-js-client in Debian's Chromium): the network
drops mid-upload and comes back, and the upload finishes by itself and converts; the
page is reloaded mid-upload and the same file picked again, and it goes on from where
the server is (the bytes vidd received stay under 1.5x the file's size)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env, throttle
from testkit.daemon import get_json, wait_for
from testkit.noisy_clip import make_noisy_clip

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
SLOW = 1 << 20  # bytes a second: a 6 MB file takes 6 s, time to act in the middle


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_noisy_clip(tmp_path_factory.mktemp("browser-tus") / "noisy.avi")


def received(url: str) -> int:
    """vidd's own count of upload bytes it received (/metrics)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(r"^vidd_upload_bytes_total (\S+)$", text, re.M)
    assert found, text
    return int(float(found.group(1)))


def open_page(p, url: str, problems: list[str]):
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    context = browser.new_context()
    page = context.new_page()
    # The cut connections are the point of these tests: Chromium logs each as an error.
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/")
    page.wait_for_selector('#live[data-state="live"]')
    return browser, context, page


def start_slow_upload(page, url: str, video: Path, past: int) -> None:
    """Pick `video` on a slow link; back once vidd has received more than `past` bytes."""
    throttle(page, SLOW)
    page.set_input_files("#file-input", str(video))
    wait_for(lambda: received(url) > past, timeout=30, interval=0.05)


def test_offline_mid_upload_then_back_online(daemon_factory, video):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False})
    size = video.stat().st_size
    problems: list[str] = []
    with sync_playwright() as p:
        browser, context, page = open_page(p, d.url, problems)
        start_slow_upload(page, d.url, video, past=size // 4)
        # The throttled request in flight fails at once (a plain set_offline could first
        # lift the throttle and let it finish); set_offline then fires the page's event.
        throttle(page, SLOW, offline=True)
        context.set_offline(True)
        pill = page.locator(".card.upload .pill")
        pill.filter(has_text="Paused").wait_for(timeout=15_000)
        before = received(d.url)
        assert before < size
        context.set_offline(False)  # the "online" event resumes it at once
        job = page.locator(".card.job").first
        job.wait_for(timeout=60_000)
        job_id = job.get_attribute("data-id")
        done = wait_for(
            lambda: (j := get_json(f"{d.url}/api/jobs/{job_id}"))["status"] == "done" and j,
            timeout=120,
        )
        assert done["name"] == "noisy.avi" and done["source"]["size"] == size
        assert page.locator(".card.upload").count() == 0
        # It went on from the server's offset, not from the start.
        assert received(d.url) < 1.5 * size
        browser.close()
    assert problems == []


def test_reload_mid_upload_and_pick_the_same_file_resumes(daemon_factory, video):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False})
    size = video.stat().st_size
    problems: list[str] = []
    with sync_playwright() as p:
        browser, context, page = open_page(p, d.url, problems)
        start_slow_upload(page, d.url, video, past=size // 3)
        page.reload()
        page.wait_for_selector('#live[data-state="live"]')
        # the list is loaded, not just empty yet
        page.wait_for_selector('#jobs[aria-busy="false"]', state="attached")
        assert page.locator(".card.job").count() == 0
        page.set_input_files("#file-input", str(video))
        job = page.locator(".card.job").first
        job.wait_for(timeout=60_000)
        job_id = job.get_attribute("data-id")
        source = wait_for(lambda: get_json(f"{d.url}/api/jobs/{job_id}")["source"], timeout=30)
        assert source["size"] == size
        total = received(d.url)
        assert size <= total < 1.5 * size, (total, size)
        browser.close()
    assert d.log().count("uploads: ") and d.log().count(" created (") == 1  # one upload, resumed
    assert problems == []
