"""A person's path through a real vidd in Debian's Chromium: upload a clip through the
page, watch it convert, open the watch page, play it and seek."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, daemon_env
from testkit.daemon import wait_for
from testkit.media import duration

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def test_upload_convert_and_watch(daemon_factory, clip):
    d = daemon_factory(env=daemon_env(), watch={"enabled": False})
    source_duration = duration(clip)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')

        # Slow the upload down so that its bar can be seen moving.
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": 150 * 1024,
            },
        )
        page.set_input_files("#file-input", str(clip))
        bar = page.locator(".card.upload progress")
        bar.wait_for()
        uploaded = []
        while page.locator(".card.upload").count():
            value = page.evaluate(
                "() => { const b = document.querySelector('.card.upload progress');"
                " return b ? [b.value, b.max] : null; }"
            )
            if value:
                uploaded.append(value)
            time.sleep(0.03)
        assert any(0 < v < m for v, m in uploaded), uploaded  # a bar part-way through
        # all sent: the body is the file plus the multipart framing around it
        assert uploaded[-1][0] == uploaded[-1][1] >= clip.stat().st_size
        cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )

        # The conversion bar, driven by the WebSocket, up to 100 %.
        card = page.locator(".card.job").first
        job_id = card.get_attribute("data-id")
        seen: list[tuple[str, float | None]] = []

        def conversion_state():
            state = page.evaluate(
                """id => { const c = document.querySelector(`[data-id="${id}"]`);
                    const b = c.querySelector('progress');
                    return [c.dataset.status, b.hidden ? null : b.value]; }""",
                job_id,
            )
            seen.append(tuple(state))
            return state[0] == "done" and state[1] == 1

        wait_for(conversion_state, timeout=60, interval=0.02)
        assert ("done", 1) in seen
        poster = card.locator(".thumb img")
        poster.wait_for()
        wait_for(
            lambda: page.evaluate(
                "img => img.complete && img.naturalWidth > 0", poster.element_handle()
            ),
            timeout=30,
            interval=0.05,
        )
        assert card.locator(".name").text_content() == clip.name
        page.wait_for_timeout(2200)  # the finished bar fades
        page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)

        # The watch page: the player plays, from the start and after a seek.
        card.locator("a.button", has_text="Watch").click()
        page.wait_for_url(f"**/watch/{job_id}")
        page.wait_for_function(
            "name => document.getElementById('title').textContent === name", arg=clip.name
        )
        video = page.locator("#player")
        assert video.get_attribute("preload") == "metadata"
        assert video.get_attribute("controls") is not None
        page.wait_for_function("() => document.getElementById('player').readyState >= 2")
        info = page.evaluate(
            "() => { const v = document.getElementById('player');"
            " return {duration: v.duration, poster: v.poster, error: v.error && v.error.code}; }"
        )
        assert info["error"] is None
        assert abs(info["duration"] - source_duration) <= 0.5, (info, source_duration)
        assert info["poster"].endswith(f"/videos/{job_id}.jpg")
        download = page.locator("#download")
        assert download.get_attribute("href") == f"/videos/{job_id}.mp4?download=1"

        page.evaluate(
            "() => { const v = document.getElementById('player'); v.muted = true;"
            " return v.play(); }"
        )
        page.wait_for_function("() => document.getElementById('player').currentTime > 0.3")
        page.evaluate("() => document.getElementById('player').pause()")

        middle = info["duration"] / 2
        page.evaluate(
            """m => new Promise(ok => { const v = document.getElementById('player');
                v.addEventListener('seeked', ok, {once: true}); v.currentTime = m; })""",
            middle,
        )
        start = page.evaluate("() => document.getElementById('player').currentTime")
        assert abs(start - middle) < 0.3
        page.evaluate("() => document.getElementById('player').play()")
        page.wait_for_function(
            "t => document.getElementById('player').currentTime > t", arg=start + 0.25
        )
        assert page.evaluate("() => document.getElementById('player').error") is None
        page.evaluate("() => document.getElementById('player').pause()")
        page.screenshot(path=str(ARTIFACTS / "watch.png"), full_page=True)
        browser.close()
    assert problems == []
