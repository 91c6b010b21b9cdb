"""The front's side of remote workers across restarts and against a real broker: a
claimed attempt survives a front restart (adopted, not requeued), an unclaimed or lapsed
one does not; the Celery dispatcher talks to a real redis-server, and says so in time
(without the password) when there is none. A local vidd never imports Celery."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testkit.daemon import free_port
from testkit.fake_dispatch import FakeDispatcher
from testkit.media import make_clip
from vidd.broker import BrokerWatch
from vidd.celery_app import QUEUE, TASK_NAME, Dispatch
from vidd.dispatch import CeleryDispatcher, DispatchFailed, Threads
from vidd.web.app import create_app
from vidd.web.keys import SERVICES

ROOT = Path(__file__).resolve().parent.parent


def settings(lease_s: float) -> dict[str, Any]:
    return {
        "watch": {"enabled": False},
        "daemon": {"shutdown_timeout_s": 1.0},
        "workers": {
            "mode": "celery",
            "broker_url": "redis://:pw@127.0.0.1:1/0",
            "public_url": "http://127.0.0.1:9",
            "lease_s": lease_s,
        },
    }


@pytest.fixture
def open_front(aiohttp_client, make_config):
    """Start a front on the test's data folder (again and again: the same folder)."""

    async def open_(dispatcher: FakeDispatcher, lease_s: float = 10.0) -> Any:
        cfg = make_config(**settings(lease_s))
        return await aiohttp_client(create_app(cfg, dispatcher=dispatcher))

    return open_


def bearer(msg: Dispatch) -> dict[str, str]:
    return {"Authorization": f"Bearer {msg.token}"}


def url(msg: Dispatch, what: str) -> str:
    return f"/api/workers/attempts/{msg.attempt}/{what}"


async def upload(client: Any, path: Path) -> str:
    data = aiohttp.FormData()
    data.add_field("file", path.read_bytes(), filename=path.name)
    resp = await client.post("/api/jobs", data=data)
    assert resp.status == 201
    return (await resp.json())["id"]


async def job_of(client: Any, job_id: str) -> dict[str, Any]:
    return await (await client.get(f"/api/jobs/{job_id}")).json()


async def wait_job(client: Any, job_id: str, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not pred(job := await job_of(client, job_id)):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
    return job


@pytest.fixture(scope="module")
def good_output(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("out") / "good.mp4", seconds=2, vcodec="libx264")


async def test_a_restart_adopts_a_claimed_attempt(open_front, clip, good_output):
    first = FakeDispatcher()
    front = await open_front(first)
    job_id = await upload(front, clip)
    msg = await first.next_message(1)
    assert (
        await front.post(url(msg, "claim"), json={"worker": "w1"}, headers=bearer(msg))
    ).status == 200
    assert (
        await front.post(url(msg, "progress"), json={"progress": 0.3}, headers=bearer(msg))
    ).status == 204
    await front.close()  # vidd stops mid-encode; the worker goes on

    second = FakeDispatcher()
    front = await open_front(second)
    job = await job_of(front, job_id)
    assert job["status"] == "running" and job["worker"] == "w1"  # adopted, not requeued
    resp = await front.post(url(msg, "progress"), json={"progress": 0.8}, headers=bearer(msg))
    assert resp.status == 204
    resp = await front.put(url(msg, "output"), data=good_output.read_bytes(), headers=bearer(msg))
    assert resp.status == 200, await resp.text()
    assert (await job_of(front, job_id))["status"] == "done"
    assert second.sent == []  # no second attempt was needed
    assert front.app[SERVICES].pool.busy == 0


async def test_a_restart_requeues_an_unclaimed_attempt(open_front, clip):
    first = FakeDispatcher()
    front = await open_front(first)
    job_id = await upload(front, clip)
    old = await first.next_message(1)
    await front.close()

    second = FakeDispatcher()
    front = await open_front(second)
    new = await second.next_message(1)  # requeued at start, then dispatched afresh
    assert new.attempt != old.attempt
    resp = await front.post(url(old, "claim"), json={"worker": "late"}, headers=bearer(old))
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "superseded"
    resp = await front.post(url(new, "claim"), json={"worker": "w2"}, headers=bearer(new))
    assert resp.status == 200 and (await resp.json())["job"] == job_id


async def test_a_restart_after_the_lease_lapsed_requeues(open_front, clip):
    first = FakeDispatcher()
    front = await open_front(first, lease_s=1.0)
    await upload(front, clip)
    old = await first.next_message(1)
    assert (
        await front.post(url(old, "claim"), json={"worker": "w1"}, headers=bearer(old))
    ).status == 200
    await front.close()
    await asyncio.sleep(1.2)  # longer than lease_s without a heartbeat

    second = FakeDispatcher()
    front = await open_front(second, lease_s=1.0)
    new = await second.next_message(1)
    assert new.attempt != old.attempt
    resp = await front.post(url(old, "progress"), json={"progress": 0.5}, headers=bearer(old))
    assert resp.status == 410


# --- the Celery dispatcher against a real redis-server ---------------------------------------


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """Debian's redis-server on a free loopback port with a password (never 6379)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (make test installs it)")
    port, password = free_port(), secrets.token_hex(16)
    conf = tmp_path / "redis.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\nrequirepass "{password}"\ndir "{tmp_path}"\n'
        'save ""\nappendonly no\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen([server, str(conf)], stdout=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://:{password}@127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_celery_dispatcher_sends_to_a_real_broker(redis_url):
    import redis  # the workers extra

    dispatcher = CeleryDispatcher(redis_url, max_encode_s=60)
    try:
        assert await dispatcher.ping() is None
        message = Dispatch(
            attempt="att-1", token="tok", front="http://127.0.0.1:9", args=("-q", "22")
        )
        await dispatcher.send(message)
        await dispatcher.revoke("att-1")  # best effort; must not raise
    finally:
        await dispatcher.close()
    queued = redis.Redis.from_url(redis_url).lrange(QUEUE, 0, -1)
    assert len(queued) == 1
    envelope = json.loads(queued[0])
    assert envelope["headers"]["task"] == TASK_NAME and envelope["headers"]["id"] == "att-1"


async def test_the_celery_dispatcher_says_the_broker_is_down_in_time():
    password = "hunter2-" + secrets.token_hex(8)
    dispatcher = CeleryDispatcher(f"redis://:{password}@127.0.0.1:{free_port()}/0", max_encode_s=60)
    try:
        started = time.monotonic()
        reason = await dispatcher.ping()
        assert reason is not None and password not in reason
        message = Dispatch(attempt="a", token="t", front="http://127.0.0.1:9", args=())
        with pytest.raises(DispatchFailed) as failed:
            await dispatcher.send(message)
        assert password not in str(failed.value)
        assert time.monotonic() - started < 15  # the calls' own timeouts, never a hang
    finally:
        await dispatcher.close()


def test_a_local_vidd_never_imports_celery():
    code = (
        "import sys, vidd.web.app, vidd.services, vidd.pool, vidd.remote, vidd.dispatch; "
        "sys.exit(1 if 'celery' in sys.modules or 'kombu' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


async def test_blocked_broker_calls_never_pile_up_threads():
    threads = Threads(1, "test-broker-call")
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError):
            await threads.run(release.wait, 0.2)  # hangs: keeps its thread and its slot
        with pytest.raises(TimeoutError):
            await threads.run(lambda: 1, 0.2)  # waits for the slot, in time
        assert [t.name for t in threading.enumerate()].count("test-broker-call") == 1
        assert all(t.daemon for t in threading.enumerate() if t.name == "test-broker-call")
    finally:
        release.set()
    assert await threads.run(lambda: 7, 5.0) == 7
    with pytest.raises(ZeroDivisionError):
        await threads.run(lambda: 1 / 0, 5.0)


async def test_one_ping_at_a_time():
    dispatcher = CeleryDispatcher(f"redis://:pw@127.0.0.1:{free_port()}/0", max_encode_s=60)
    try:
        reasons = await asyncio.gather(*(dispatcher.ping() for _ in range(5)))
        assert len(set(reasons)) == 1 and reasons[0] is not None
        # One thread asked (it may still be importing Celery on a busy machine).
        assert [t.name for t in threading.enumerate()].count("broker-ping") <= 1
    finally:
        await dispatcher.close()


async def test_the_broker_watch_says_each_change_once(caplog):
    caplog.set_level(logging.INFO, logger="vidd.broker")
    dispatcher = FakeDispatcher()
    watch = BrokerWatch(dispatcher)
    assert watch.state is None  # never waits, never guesses
    assert await watch.unavailable() is None and watch.state == "up"
    for _ in range(3):
        watch.heard("the broker can't be reached: refused")
    assert watch.state == "down" and await watch.unavailable() == watch.reason
    watch.heard(None)
    watch.heard(None)
    await watch.close()
    said = [r.getMessage() for r in caplog.records if r.name == "vidd.broker"]
    assert said == [
        "workers: the broker is down: the broker can't be reached: refused; dispatching waits",
        "workers: the broker is back; dispatching resumes",
    ]
