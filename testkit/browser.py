"""Debian's Chromium as the browser tests drive it through Playwright, and the environment
that lets a daemon they start find this checkout."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from testkit.daemon import Daemon, write_config
from testkit.jobs import fill_store
from vidd import config as config_mod
from vidd.job import Job, Status
from vidd.layout import Layout

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def throttle(page: Any, upload: int, *, offline: bool = False) -> Any:
    """Chromium sends at most `upload` bytes a second from `page` (-1: no limit); with
    `offline`, nothing at all, the throttle kept (so that a request in flight fails
    rather than being let through at full speed). Returns the DevTools session."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": upload},
    )
    return cdp


def daemon_env() -> dict[str, str]:
    """`python -m vidd` runs from the test's folder: make sure it finds this checkout."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def start_with_jobs(
    daemon_factory: Callable[..., Daemon],
    folder: Path,
    jobs: Iterable[Job],
    env: dict[str, str] | None = None,
    source: Path | None = None,
    **sections: dict[str, Any],
) -> Daemon:
    """A daemon whose store already holds `jobs` when it starts (config in `folder`, with
    `sections` over the tests' defaults), for a page that shows them; each queued job
    gets a copy of `source` as its source file."""
    config = config_mod.load(write_config(folder, **sections))
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    jobs = list(jobs)
    layout = Layout(config.storage)
    for job in jobs:
        if source is not None and job.status is Status.QUEUED:
            layout.sources.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, layout.source(job))
    fill_store(config.storage.db_path, jobs)
    return daemon_factory(env={**daemon_env(), **(env or {})})
