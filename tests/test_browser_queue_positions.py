"""A person watching the page sees each waiting file's place in the queue move up as the
files ahead of it start or are cancelled, without reloading."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env
from testkit.daemon import get_json, wait_for

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

FAKE = Path(__file__).parent / "fake_handbrake.py"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def post(url: str) -> int:
    req = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def test_queue_places_move_up_live(daemon_factory, clip, tmp_path):
    handbrake = tmp_path / "fake_handbrake.py"
    shutil.copy(FAKE, handbrake)
    handbrake.chmod(0o755)
    d = daemon_factory(
        env={**daemon_env(), "FAKE_HB_MODE": "stall"},  # encodes that run until cancelled
        encode={
            "handbrake": str(handbrake),
            "max_parallel": 1,
            "stall_timeout_s": 120.0,
            "child_env": ["FAKE_HB_MODE"],  # the fake reads its mode from it
        },
        daemon={"shutdown_timeout_s": 1.0},
    )
    for i in range(3):  # a running job and two waiting behind it
        staged = d.data / f"staged-{i}.avi"
        shutil.copyfile(clip, staged)
        staged.rename(d.inbox / f"clip-{i}.avi")
        wait_for(lambda n=i + 1: len(get_json(d.url + "/api/jobs")["jobs"]) == n, timeout=30)
    jobs = get_json(d.url + "/api/jobs")["jobs"]
    by_name = {j["name"]: j for j in jobs}
    assert by_name["clip-0.avi"]["status"] == "running"
    last = by_name["clip-2.avi"]["id"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        meta = page.locator(f'.card.job[data-id="{last}"]')
        meta.get_by_text("1 ahead in the queue").wait_for()

        assert post(f"{d.url}/api/jobs/{by_name['clip-0.avi']['id']}/cancel") == 200
        meta.get_by_text("Next in line").wait_for(timeout=10_000)
        browser.close()
    # the page agrees with the server
    assert get_json(f"{d.url}/api/jobs/{last}")["queue_position"] == 0
