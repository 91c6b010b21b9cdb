"""axe-core on the page and the watch page, light and dark, with jobs in every state:
no serious or critical violation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, start_with_jobs
from testkit.daemon import get_json, wait_for
from testkit.jobs import ended_job, make_job
from vidd.job import Status

pytest.importorskip("playwright")
pytest.importorskip("axe_playwright_python")
from axe_playwright_python.sync_playwright import Axe  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

FAKE = Path(__file__).parent / "fake_handbrake.py"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def serious(page) -> list[str]:
    """Each serious or critical violation, with the markup it was found in."""
    # label-content-name-mismatch is off by default in axe: a visible word the accessible
    # name does not contain ("Show log" named "Show the log of ...") is what it finds.
    options = {"rules": {"label-content-name-mismatch": {"enabled": True}}}
    response = Axe().run(page, options=options).response
    checked = {rule["id"] for rule in response["passes"] + response["incomplete"]}
    assert {
        "color-contrast",
        "page-has-heading-one",
        "label-content-name-mismatch",
    } <= checked  # axe did run
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['html'] for n in v['nodes']][:3]}"
        for v in response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_no_serious_violations_light_and_dark(daemon_factory, tmp_path, clip):
    handbrake = tmp_path / "fake_handbrake.py"
    shutil.copy(FAKE, handbrake)
    handbrake.chmod(0o755)
    ended = [
        ended_job(i, s)
        for i, s in enumerate(Status)
        if s in (Status.DONE, Status.FAILED, Status.REJECTED, Status.CANCELLED)
    ]
    waiting = [make_job(name=f"waiting-{i}.avi", status=Status.QUEUED) for i in range(3)]
    d = start_with_jobs(
        daemon_factory,
        tmp_path,
        ended + waiting,
        source=clip,
        env={"FAKE_HB_MODE": "stall"},  # the first waiting job runs until stopped
        watch={"enabled": False},
        encode={
            "handbrake": str(handbrake),
            "max_parallel": 1,
            "stall_timeout_s": 120.0,
            "child_env": ["FAKE_HB_MODE"],
        },
        daemon={"shutdown_timeout_s": 1.0},
    )
    wait_for(lambda: get_json(d.url + "/api/status")["jobs"].get("running"), timeout=20)
    failed = next(j for j in ended if j.status is Status.FAILED)
    done = next(j for j in ended if j.status is Status.DONE)
    found: dict[str, list[str]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for scheme in ("light", "dark"):
            page = browser.new_page(color_scheme=scheme)
            page.goto(d.url + "/")
            page.wait_for_selector('#live[data-state="live"]')
            # the first page of the list is in
            page.wait_for_selector('#jobs[aria-busy="false"]', state="attached")
            statuses = page.locator(".card.job").evaluate_all(
                "cards => cards.map(c => c.dataset.status)"
            )
            assert {"done", "failed", "rejected", "cancelled", "queued", "running"} <= set(statuses)
            page.locator(f'.card.job[data-id="{failed.id}"] button', has_text="Show log").click()
            expect(page.locator(f'.card.job[data-id="{failed.id}"] .log-box')).to_be_visible()
            found[f"page, {scheme}"] = serious(page)
            # One tab stop per target: a finished card reaches its watch page once.
            stops = page.locator(
                f'.card.job[data-id="{done.id}"] a[href="/watch/{done.id}"]:not([tabindex="-1"])'
            )
            assert stops.count() == 1
            for job in (failed, done):
                page.goto(f"{d.url}/watch/{job.id}")
                page.wait_for_selector('#live[data-state="live"]')
                expect(page.locator("#title")).to_have_text(job.name)
                found[f"watch page of a {job.status} job, {scheme}"] = serious(page)
            page.close()
        browser.close()
    assert found == {key: [] for key in found}
