"""Remote encodes seen from the page, in Debian's Chromium: an upload converts on a worker
host (a real Celery worker and HandBrakeCLI in a network namespace of its own) with live
progress on its card, and Cancel on the page stops that remote HandBrakeCLI within 2 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS
from testkit.daemon import wait_for
from testkit.media import make_clip
from testkit.noisy_clip import make_noisy_clip
from testkit.workers import Cluster, require_hosts, wait_until

pytest.importorskip("celery")
pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def cluster(tmp_path: Path):
    require_hosts()
    with Cluster(tmp_path, workers=1, lease_s=5.0) as c:
        c.wait_workers_ready()
        yield c


def signed_in(browser, cluster: Cluster):
    page = browser.new_page(viewport={"width": 1200, "height": 860})
    page.goto(cluster.url + "/")
    page.wait_for_url("**/login")
    page.fill("#token", cluster.token)
    page.click("button[type=submit]")
    page.wait_for_url(cluster.url + "/")
    page.wait_for_selector('#live[data-state="live"]')
    return page


def card_state(page, job_id: str):
    """The card's status, its conversion bar's value (None when hidden) and its text."""
    return page.evaluate(
        """id => { const c = document.querySelector(`.card.job[data-id="${id}"]`);
            if (!c) return null;
            const b = c.querySelector('progress');
            return [c.dataset.status, b && !b.hidden ? b.value : null, c.textContent]; }""",
        job_id,
    )


def test_a_job_converts_on_a_worker_with_live_progress_in_the_page(cluster, tmp_path):
    clip = make_noisy_clip(tmp_path / "live.avi", seconds=4)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = signed_in(browser, cluster)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.set_input_files("#file-input", str(clip))
        card = page.locator(".card.job").first
        card.wait_for()
        job_id = card.get_attribute("data-id")
        seen: list[tuple] = []

        def done() -> bool:
            state = card_state(page, job_id)
            if state:
                seen.append(tuple(state))
            return bool(state) and state[0] == "done"

        wait_for(done, timeout=90, interval=0.02)
        values = [v for status, v, _ in seen if status == "running" and v is not None]
        assert any(0 < v < 1 for v in values), seen[-5:]  # the bar moved, pushed live
        assert len(set(values)) >= 2, values
        assert any("w1" in text for status, _, text in seen if status in ("running", "done"))
        job = cluster.job(job_id)
        assert job["worker"] == "w1" and job["output"] is not None
        browser.close()
    assert problems == []


def test_cancel_on_the_page_stops_the_remote_handbrake_within_2_s(cluster, tmp_path):
    clip = make_noisy_clip(tmp_path / "long.avi", seconds=10)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = signed_in(browser, cluster)
        page.set_input_files("#file-input", str(clip))
        card = page.locator(".card.job").first
        card.wait_for()
        job_id = card.get_attribute("data-id")
        worker = cluster.workers["w1"]
        wait_for(
            lambda: (
                (card_state(page, job_id) or [None, None])[1] not in (None, 0)
                and worker.handbrake_pids()
            ),
            timeout=60,
            interval=0.05,
        )
        assert card_state(page, job_id)[0] == "running"
        clicked = time.monotonic()
        card.get_by_role("button", name=f"Cancel {clip.name}").click()
        gone = wait_until(lambda: not worker.handbrake_pids(), 5, "HandBrakeCLI gone")
        assert time.monotonic() - clicked <= 2.0, gone
        wait_for(lambda: (card_state(page, job_id) or [""])[0] == "cancelled", timeout=10)
        browser.close()
    job = cluster.job(job_id)
    assert job["status"] == "cancelled"
    attempts = cluster.attempts(job_id)
    assert [a["state"] for a in attempts] == ["cancelled"], attempts
    # Told through its heartbeat (410), and the Celery task revoked as well.
    stopped = f"attempt {attempts[0]['id']}: stopped: the front said stop (410"
    wait_until(lambda: stopped in worker.log(), 5, "the worker's reason")
    wait_until(lambda: f"revoked: {attempts[0]['id']}" in worker.log(), 10, "the revoke")
    assert not (cluster.front.data / "videos" / f"{job_id}.mp4").exists()
    # The worker lives on, ready for the next job.
    assert worker.proc.poll() is None
    cluster.wait_workers_ready(timeout=30)
    small = make_clip(tmp_path / "after.avi", seconds=2)
    after = cluster.upload(small)
    assert cluster.wait_job(after["id"], "done", timeout=60)["worker"] == "w1"
