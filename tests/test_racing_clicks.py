"""Clicks that race: storms of concurrent cancels, retries and deletes aimed at a running
job and at a queued one, round after round. Every answer is 200, 404 or 409 (never a
500); after each round the pool's busy count equals the jobs the store says are running,
its slots add up, and a waiting job is never left behind a free slot; at the end a new
upload still converts.

The encodes come from the fake HandBrakeCLI in `stall` mode, so a job stays running until
it is stopped. The randomness is seeded: VIDD_RACE_SEED=<n> replays a run's choices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import stat
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from vidd.web.app import create_app

ROUNDS = 10
FAKE = Path(__file__).parent / "fake_handbrake.py"
ACTIONS = ["cancel"] * 5 + ["retry"] * 5 + ["delete"] * 2
ANSWERS = {200, 404, 409}
DELAYS = {"cancel": (0.0, 0.15), "retry": (0.0, 0.25), "delete": (0.1, 0.35)}  # seconds


def fake_handbrake(folder: Path) -> str:
    path = folder / "fake_handbrake.py"
    shutil.copy(FAKE, path)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


class Clicker:
    def __init__(self, client: Any, clip: Path, seed: int) -> None:
        self.client = client
        self.clip = clip.read_bytes()
        self.rng = random.Random(seed)
        self.ctx = f"[VIDD_RACE_SEED={seed}]"
        self.answers: Counter[tuple[str, int]] = Counter()
        self.uploaded = 0

    async def jobs(self) -> list[dict[str, Any]]:
        resp = await self.client.get("/api/jobs", params={"limit": "500"})
        assert resp.status == 200, self.ctx
        return list((await resp.json())["jobs"])

    async def status(self) -> dict[str, Any]:
        resp = await self.client.get("/api/status")
        assert resp.status == 200, self.ctx
        return dict(await resp.json())

    async def upload(self, name: str) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("file", self.clip, filename=name)
        resp = await self.client.post("/api/jobs", data=form)
        body = await resp.json()
        assert resp.status == 201, f"{self.ctx} {body}"
        self.uploaded += 1
        return dict(body)

    async def wait(self, what: str, check: Any, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await check()
            if value:
                return value
            assert time.monotonic() < deadline, f"{self.ctx} timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def one_running_one_queued(self, round_no: int) -> tuple[str, str]:
        """A running job and a queued one behind it, made by uploads when missing."""
        jobs = await self.jobs()
        if not any(j["status"] in ("running", "queued") for j in jobs):
            await self.upload(f"round-{round_no}-a.avi")
        running = await self.wait("a running job", lambda: self._with_status("running"))
        queued = [j for j in await self.jobs() if j["status"] == "queued"]
        if not queued:
            queued = [await self.upload(f"round-{round_no}-b.avi")]
        return running["id"], queued[0]["id"]

    async def _with_status(self, status: str) -> dict[str, Any] | None:
        return next((j for j in await self.jobs() if j["status"] == status), None)

    async def click(self, action: str, job_id: str, delay: float) -> int:
        await asyncio.sleep(delay)
        if action == "delete":
            resp = await self.client.delete(f"/api/jobs/{job_id}")
        else:
            resp = await self.client.post(f"/api/jobs/{job_id}/{action}")
        body = await resp.text()
        self.answers[(action, resp.status)] += 1
        assert resp.status in ANSWERS, f"{self.ctx} {action} {job_id}: {resp.status} {body}"
        return resp.status

    async def storm(self, *job_ids: str) -> None:
        """All clicks at once, each after its own short delay: cancels and retries mostly
        first (a cancelled job is retried, claimed and cancelled again), deletes later."""
        clicks = [(action, job_id) for job_id in job_ids for action in ACTIONS]
        self.rng.shuffle(clicks)
        # Drawn here, in order, so that a seed replays the same storm.
        delays = [self.rng.uniform(*DELAYS[action]) for action, _ in clicks]
        await asyncio.gather(
            *(self.click(a, j, t) for (a, j), t in zip(clicks, delays, strict=True))
        )

    async def consistent(self, max_parallel: int) -> None:
        """Once the storm has passed: busy == running jobs, the slots add up, and a free
        slot never sits next to a waiting job. Transitions in flight get a moment."""
        last: list[Any] = []

        async def agrees() -> bool:
            st = await self.status()
            running = [j["id"] for j in await self.jobs() if j["status"] == "running"]
            busy, counts = st["workers"]["busy"], st["jobs"]
            stuck = counts["queued"] > 0 and busy < max_parallel
            last[:] = [busy, running, counts, st["health"]]
            return (
                busy == len(running) == counts["running"]
                and not stuck
                and st["health"]["ok"]
                and counts["admitting"] == 0
            )

        try:
            await self.wait("busy == running", agrees, timeout=10)
            await asyncio.sleep(0.3)  # and it stays so
            assert await agrees(), f"{self.ctx} busy, running, counts, health: {last}"
        except AssertionError as e:
            raise AssertionError(f"{e}: busy, running, counts, health: {last}") from None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("max_parallel", [1, 2])
async def test_cancel_retry_delete_storms_leave_the_pool_consistent(
    aiohttp_client: Any,
    make_config: Any,
    tmp_path: Path,
    clip: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    max_parallel: int,
) -> None:
    caplog.set_level(logging.INFO)
    seed = int(os.environ.get("VIDD_RACE_SEED") or time.time_ns() % 1_000_000_007)
    print(f"\nrace: VIDD_RACE_SEED={seed} max_parallel={max_parallel}")
    cfg = make_config(
        watch={"enabled": False},
        encode={
            "handbrake": fake_handbrake(tmp_path),
            "max_parallel": max_parallel,
            "stall_timeout_s": 120.0,
            "kill_grace_s": 1.0,
            "child_env": ["FAKE_HB_MODE"],  # the fake reads its mode from it
        },
    )
    client = await aiohttp_client(create_app(cfg))
    monkeypatch.setenv("FAKE_HB_MODE", "stall")  # after start-up: `--version` must answer
    c = Clicker(client, clip, seed)
    began = time.monotonic()

    for round_no in range(ROUNDS):
        targets = await c.one_running_one_queued(round_no)
        await c.storm(*targets)
        await c.consistent(max_parallel)

    # The stalling encodes end; the pool still converts a new upload for real.
    monkeypatch.setenv("FAKE_HB_MODE", "ok")
    for job in await c.jobs():
        if job["status"] in ("running", "queued"):
            resp = await client.delete(f"/api/jobs/{job['id']}")
            assert resp.status in (200, 404), c.ctx
    job = await c.upload("after-the-storms.avi")

    async def done() -> dict[str, Any] | None:
        resp = await client.get(f"/api/jobs/{job['id']}")
        body = dict(await resp.json())
        assert body["status"] in ("queued", "running", "done"), f"{c.ctx} {body}"
        return body if body["status"] == "done" else None

    finished = await c.wait("the new job to convert", done, timeout=60)
    assert finished["output"]["size"] > 0, c.ctx
    await c.consistent(max_parallel)
    assert (await c.status())["workers"]["busy"] == 0, c.ctx
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, f"{c.ctx} {errors}"

    # The poster is made a moment after done, in tmp/<id>.work: give it time to finish
    # (on a loaded machine it can take seconds), then nothing may be left.
    async def tmp_empty() -> bool:
        return not any(cfg.storage.tmp_dir.iterdir())

    try:
        await c.wait("tmp/ to empty after the last poster", tmp_empty, timeout=15)
    except AssertionError:
        pass  # the assertion below names what is left
    leftovers = [p.name for p in cfg.storage.tmp_dir.iterdir()]
    assert leftovers == [], f"{c.ctx} tmp/: {leftovers}"
    print(
        f"race: seed {seed}, max_parallel {max_parallel}: {ROUNDS} rounds, "
        f"{sum(c.answers.values())} clicks {dict(sorted(c.answers.items()))}, "
        f"{c.uploaded} uploads, {time.monotonic() - began:.1f} s"
    )
