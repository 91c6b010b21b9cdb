"""The page says which remote worker ran a job ("on <worker>"), and a worker's name,
which a worker host chooses itself, shows as text and runs no script."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, daemon_env
from testkit.daemon import write_config
from testkit.jobs import ended_job, fill_store
from vidd import config as config_mod
from vidd.job import Status

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def test_a_done_card_names_its_worker_as_text(daemon_factory, tmp_path):
    config = config_mod.load(write_config(tmp_path, watch={"enabled": False}))
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    remote, local = ended_job(1, Status.DONE, name="remote.avi"), ended_job(2, Status.DONE)
    fill_store(config.storage.db_path, [remote, local])
    with sqlite3.connect(config.storage.db_path) as db:  # as a worker's claim leaves it
        db.execute("UPDATE jobs SET worker = ? WHERE id = ?", (HOSTILE, remote.id))
    d = daemon_factory(env=daemon_env())
    dialogs: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(d.url + "/")
        page.wait_for_selector('#live[data-state="live"]')
        card = page.locator(f'.card.job[data-id="{remote.id}"]')
        card.wait_for()
        meta = card.locator(".meta").text_content() or ""
        assert meta.endswith(f"on {HOSTILE}")
        other = page.locator(f'.card.job[data-id="{local.id}"] .meta').text_content() or ""
        assert " on " not in other  # a local encode names no worker
        assert page.locator('img[src="x"]').count() == 0
        page.wait_for_timeout(300)
        browser.close()
    assert dialogs == [] and problems == []
