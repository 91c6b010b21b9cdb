"""The worker routes of a real front (in process, real SQLite, real sockets) in celery
mode, with a dispatcher that records the Celery messages instead of sending them: the
test plays the worker, as contracts.md says a worker talks."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testkit.fake_dispatch import FakeDispatcher
from testkit.jobs import make_job
from testkit.media import make_clip
from vidd import remote
from vidd.celery_app import Dispatch
from vidd.web.app import create_app
from vidd.web.keys import SERVICES

BROKER = "redis://:secret-password@127.0.0.1:1/0"


def worker_config(**workers: Any) -> dict[str, Any]:
    return {
        "watch": {"enabled": False},
        "daemon": {"shutdown_timeout_s": 1.0},
        "workers": {
            "mode": "celery",
            "broker_url": BROKER,
            "public_url": "http://127.0.0.1:9",
            "lease_s": 30.0,
            **workers,
        },
    }


class Front:
    """A front under test and the worker's side of the conversation."""

    def __init__(self, client: Any, dispatcher: FakeDispatcher) -> None:
        self.client = client
        self.dispatcher = dispatcher

    @property
    def svc(self) -> Any:
        return self.client.app[SERVICES]

    async def upload(self, path: Path) -> str:
        data = aiohttp.FormData()
        data.add_field("file", path.read_bytes(), filename=path.name)
        resp = await self.client.post("/api/jobs", data=data)
        assert resp.status == 201, await resp.text()
        return (await resp.json())["id"]

    async def job(self, job_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/jobs/{job_id}")
        assert resp.status == 200
        return await resp.json()

    async def wait_job(self, job_id: str, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if pred(job):
                return job
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)

    def call(
        self, msg: Dispatch, method: str, what: str, *, token: str | None = None, **kw: Any
    ) -> Any:
        headers = {"Authorization": f"Bearer {token or msg.token}", **kw.pop("headers", {})}
        url = f"/api/workers/attempts/{msg.attempt}/{what}"
        return self.client.request(method, url, headers=headers, **kw)

    async def claim(self, msg: Dispatch, worker: str = "w1") -> dict[str, Any]:
        resp = await self.call(msg, "POST", "claim", json={"worker": worker})
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def progress(self, msg: Dispatch, progress: float = 0.5) -> int:
        resp = await self.call(
            msg, "POST", "progress", json={"progress": progress, "fps": 30.0, "eta_s": 3.0}
        )
        return resp.status


@pytest.fixture
def start_front(aiohttp_client, make_config):
    async def start(dispatcher: FakeDispatcher | None = None, **workers: Any) -> Front:
        dispatcher = dispatcher or FakeDispatcher()
        cfg = make_config(**worker_config(**workers))
        client = await aiohttp_client(create_app(cfg, dispatcher=dispatcher))
        return Front(client, dispatcher)

    return start


@pytest.fixture
async def front(start_front) -> Front:
    return await start_front()


@pytest.fixture(scope="module")
def good_output(tmp_path_factory) -> Path:
    """An MP4 as a worker would send for the 2 s clip: H.264/AAC, the same duration."""
    folder = tmp_path_factory.mktemp("outputs")
    return make_clip(folder / "good.mp4", seconds=2, vcodec="libx264", acodec="aac")


def assert_error(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"} and body["error"]["code"] == code, body


async def test_claim_once_then_409(front, clip):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    assert msg.front == "http://127.0.0.1:9"
    assert list(msg.args) == list(front.svc.config.encode.profiles["web"].handbrake_args())
    claim = await front.claim(msg)
    assert claim["job"] == job_id
    assert claim["args"] == list(msg.args)
    assert claim["source"]["ext"] == ".avi" and claim["source"]["duration"] == pytest.approx(
        2, abs=0.2
    )
    assert claim["source"]["size"] == clip.stat().st_size  # what the worker downloads
    assert claim["progress_interval_s"] == 0.25 and claim["lease_s"] == 30.0
    assert claim["max_output_bytes"] == front.svc.config.web.max_upload_bytes

    again = await front.call(msg, "POST", "claim", json={"worker": "w2"})
    assert again.status == 409
    assert_error(await again.json(), "claimed")
    job = await front.job(job_id)
    assert job["status"] == "running" and job["worker"] == "w1"


async def test_a_job_queued_without_its_source_facts_is_probed_before_dispatch(front, clip):
    job = make_job(source_ext=".avi")  # queued with no source facts (no probe at intake)
    shutil.copyfile(clip, front.svc.layout.source(job))
    await front.svc.store.add(job)
    msg = await front.dispatcher.next_message(1)
    claim = await front.claim(msg)
    assert claim["job"] == job.id
    assert claim["source"]["duration"] == pytest.approx(2, abs=0.2)
    assert claim["source"]["video_codec"] and claim["source"]["size"] == clip.stat().st_size


async def test_wrong_token_and_unknown_attempt_get_the_same_401(front, clip):
    await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    wrong = await front.call(msg, "POST", "claim", token="x" * 43, json={"worker": "w"})
    unknown = await front.client.post(
        "/api/workers/attempts/nosuchattempt/claim",
        headers={"Authorization": f"Bearer {msg.token}"},
        json={"worker": "w"},
    )
    missing = await front.client.post(
        f"/api/workers/attempts/{msg.attempt}/claim", json={"worker": "w"}
    )
    bodies = [await r.json() for r in (wrong, unknown, missing)]
    assert [r.status for r in (wrong, unknown, missing)] == [401, 401, 401]
    assert bodies[0] == bodies[1] == bodies[2]
    assert_error(bodies[0], "unauthorized")
    # Nothing was claimed by any of them.
    assert (await front.claim(msg))["job"]


async def test_a_browser_is_refused(front, clip):
    await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    own = str(front.client.make_url("/")).rstrip("/")  # passes the usual Origin check
    for headers in ({"Origin": own}, {"Sec-Fetch-Site": "same-origin"}):
        resp = await front.call(msg, "POST", "claim", json={"worker": "w"}, headers=headers)
        assert resp.status == 403
        assert_error(await resp.json(), "forbidden")


async def test_bodies_that_are_not_the_contracts_are_400(front, clip):
    await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    for body in ({"worker": ""}, {"worker": "a\nb"}, {"worker": "x" * 101}, {"name": "w"}, [1]):
        resp = await front.call(msg, "POST", "claim", json=body)
        assert resp.status == 400, body
        assert_error(await resp.json(), "bad_request")
    not_json = await front.call(msg, "POST", "claim", data=b"worker=w")
    assert not_json.status == 400
    await front.claim(msg)
    for body in ({"progress": 1.5}, {"progress": True}, {"progress": 0.5, "fps": -1}, {}):
        resp = await front.call(msg, "POST", "progress", json=body)
        assert resp.status == 400, body
    for body in ({"code": "two words", "message": "m"}, {"code": "x" * 41}, {"code": ""}):
        resp = await front.call(msg, "POST", "fail", json=body)
        assert resp.status == 400, body
    assert await front.progress(msg) == 204  # none of them ended the attempt


async def test_size_limits(front, clip, good_output):
    await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    big = await front.call(msg, "POST", "claim", data=b"{" + b" " * (65 * 1024) + b"}")
    assert big.status == 413
    assert_error(await big.json(), "too_large")
    await front.claim(msg)

    async def chunked():
        yield good_output.read_bytes()

    no_length = await front.call(msg, "PUT", "output", data=chunked())
    assert no_length.status == 411
    assert_error(await no_length.json(), "length_required")
    limit = front.svc.config.web.max_upload_bytes
    over = await front.call(
        msg, "PUT", "output", data=b"", headers={"Content-Length": str(limit + 1)}
    )
    assert over.status == 413
    assert_error(await over.json(), "too_large")


async def test_progress_reaches_the_api_and_the_websocket(front, clip):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await front.claim(msg)
    ws = await front.client.ws_connect("/ws")
    assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    assert await front.progress(msg, 0.42) == 204
    while True:
        event = await ws.receive_json(timeout=5)
        if event["type"] == "job" and event["job"]["progress"] > 0:
            break
    assert event["job"]["id"] == job_id and event["job"]["progress"] == pytest.approx(0.42)
    assert event["job"]["worker"] == "w1"
    listed = (await (await front.client.get("/api/jobs")).json())["jobs"][0]
    assert listed["progress"] == pytest.approx(0.42) and listed["fps"] == 30.0
    await ws.close()


async def test_cancel_answers_the_next_progress_with_410_and_revokes(front, clip):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await front.claim(msg)
    assert await front.progress(msg) == 204
    resp = await front.client.post(f"/api/jobs/{job_id}/cancel")
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    stop = await front.call(msg, "POST", "progress", json={"progress": 0.6})
    assert stop.status == 410
    assert_error(await stop.json(), "stop")
    for _ in range(50):
        if front.dispatcher.revoked:
            break
        await asyncio.sleep(0.02)
    assert front.dispatcher.revoked == [msg.attempt]


async def test_delete_of_a_running_remote_job_stops_its_worker(front, clip, good_output):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await front.claim(msg)
    resp = await front.client.delete(f"/api/jobs/{job_id}")
    assert resp.status == 200
    assert await front.progress(msg) == 410
    late = await front.call(msg, "PUT", "output", data=good_output.read_bytes())
    assert late.status == 409
    assert not front.svc.layout.video(job_id).exists()
    attempt = await front.svc.encoder.attempts.get(msg.attempt)
    assert attempt.state == "cancelled"


async def test_a_lapsed_lease_dispatches_a_fresh_attempt_and_refuses_the_stale_output(
    start_front, clip, good_output
):
    front = await start_front(lease_s=1.0, max_attempts=2)
    job_id = await front.upload(clip)
    first = await front.dispatcher.next_message(1)
    await front.claim(first, "lost-worker")
    # No heartbeat: after lease_s the attempt is lost and a fresh one goes out.
    second = await front.dispatcher.next_message(2, timeout=5)
    assert second.attempt != first.attempt and second.token != first.token
    assert (await front.job(job_id))["status"] == "running"  # kept its place and slot
    assert await front.progress(first) == 410
    stale = await front.call(first, "PUT", "output", data=good_output.read_bytes())
    assert stale.status == 409
    assert_error(await stale.json(), "superseded")
    assert not front.svc.layout.video(job_id).exists()
    assert first.attempt in front.dispatcher.revoked

    # The second worker is lost too: max_attempts = 2, so the job fails.
    await front.claim(second, "lost-again")
    job = await front.wait_job(job_id, lambda j: j["status"] == "failed")
    assert job["error"]["code"] == "workers_lost"


async def test_a_stopping_worker_hands_its_attempt_back_and_it_goes_out_again_at_once(
    start_front, clip
):
    """lease_s is 30 s: the fresh attempt within 5 s can only come from the release."""
    front = await start_front(lease_s=30.0)
    job_id = await front.upload(clip)
    first = await front.dispatcher.next_message(1)
    before = await front.call(first, "POST", "release")
    assert before.status == 409  # not claimed yet: nothing to hand back
    await front.claim(first, "stopping-worker")
    resp = await front.call(first, "POST", "release")
    assert resp.status == 204, await resp.text()
    second = await front.dispatcher.next_message(2, timeout=5)
    assert second.attempt != first.attempt
    assert (await front.job(job_id))["status"] == "running"
    assert await front.progress(first) == 410  # the old attempt is over
    again = await front.call(first, "POST", "release")
    assert again.status == 409
    wrong = await front.call(first, "POST", "release", token="x" * 43)
    assert wrong.status == 401
    await front.claim(second, "other-worker")
    assert await front.progress(second) == 204


async def test_a_good_output_is_verified_recorded_done_and_gets_its_poster(
    front, clip, good_output
):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await front.claim(msg)
    log = await front.call(msg, "POST", "log", json={"tail": "encoded on w1\nall good"})
    assert log.status == 204
    resp = await front.call(msg, "PUT", "output", data=good_output.read_bytes())
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "done"}
    job = await front.job(job_id)  # done before the answer came
    assert job["status"] == "done" and job["worker"] == "w1"
    assert job["output"]["duration"] == pytest.approx(2, abs=0.2)
    assert job["output"]["video_codec"]
    video = await front.client.get(job["output"]["url"])
    assert video.status == 200 and await video.read() == good_output.read_bytes()
    job = await front.wait_job(job_id, lambda j: j["output"]["poster_url"])
    poster = await front.client.get(job["output"]["poster_url"])
    assert poster.status == 200 and (await poster.read())[:2] == b"\xff\xd8"
    log_resp = await front.client.get(f"/api/jobs/{job_id}?log=1")
    assert log_resp.status == 200
    # A second PUT of the same attempt: it is done, not live.
    again = await front.call(msg, "PUT", "output", data=good_output.read_bytes())
    assert again.status == 409


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda folder: _write(folder / "junk.mp4", b"\x00" * 4096), "bad_output"),
        (
            lambda folder: make_clip(folder / "long.mp4", seconds=6, vcodec="libx264"),
            "duration_mismatch",
        ),
    ],
)
async def test_a_bad_output_fails_the_job_422(front, clip, tmp_path, make, code):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await front.claim(msg)
    bad = make(tmp_path)
    resp = await front.call(msg, "PUT", "output", data=bad.read_bytes())
    assert resp.status == 422
    assert_error(await resp.json(), code)
    job = await front.wait_job(job_id, lambda j: j["status"] == "failed")
    assert job["error"]["code"] == code
    assert not front.svc.layout.video(job_id).exists()
    assert not any(front.svc.layout.tmp.rglob("remote-*"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_fail_fails_the_job_with_the_workers_words(front, clip):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await front.claim(msg)
    resp = await front.call(
        msg,
        "POST",
        "fail",
        json={"code": "exit_code", "message": "HandBrake failed (exit code 3)", "log_tail": "boom"},
    )
    assert resp.status == 204
    job = await front.wait_job(job_id, lambda j: j["status"] == "failed")
    assert job["error"]["code"] == "exit_code"
    assert job["error"]["detail"] == "HandBrake failed (exit code 3)"
    again = await front.call(msg, "POST", "fail", json={"code": "x", "message": "y"})
    assert again.status == 409


async def test_the_source_downloads_and_resumes_with_range(front, clip):
    await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    early = await front.call(msg, "GET", "source")
    assert early.status == 409  # not claimed yet
    await front.claim(msg)
    whole = await front.call(msg, "GET", "source")
    assert whole.status == 200 and await whole.read() == clip.read_bytes()
    rest = await front.call(msg, "GET", "source", headers={"Range": "bytes=100-"})
    assert rest.status == 206 and await rest.read() == clip.read_bytes()[100:]


async def test_broker_down_keeps_jobs_queued_and_says_so(start_front, clip):
    dispatcher = FakeDispatcher()
    dispatcher.down = "the broker can't be reached: Connection refused"
    front = await start_front(dispatcher)
    job_id = await front.upload(clip)  # uploads go on
    await asyncio.sleep(0.5)
    assert (await front.job(job_id))["status"] == "queued"
    status = await (await front.client.get("/api/status")).json()
    assert status["paused"] == dispatcher.down
    workers = await (await front.client.get("/api/workers")).json()
    assert workers == {"mode": "celery", "broker": "down", "workers": []}
    assert dispatcher.sent == []

    dispatcher.down = None  # the broker is back: the job goes out
    msg = await dispatcher.next_message(1, timeout=10)
    await front.claim(msg)
    assert (await front.job(job_id))["status"] == "running"
    for _ in range(100):
        status = await (await front.client.get("/api/status")).json()
        if status["paused"] is None:
            break
        await asyncio.sleep(0.05)
    assert status["paused"] is None


async def test_the_broker_pause_does_not_flap(start_front, clip, caplog):
    caplog.set_level(logging.INFO, logger="vidd.pool")
    dispatcher = FakeDispatcher()
    dispatcher.down = "the broker can't be reached"
    front = await start_front(dispatcher)
    await front.upload(clip)
    await asyncio.sleep(2.5)  # past a recheck of the pool's gate
    said = [r.getMessage() for r in caplog.records if r.name == "vidd.pool"]
    assert said.count("pool: new encodes paused: the broker can't be reached") == 1, said
    assert not any("resume" in line for line in said), said


async def test_a_failed_send_requeues_the_job_and_pauses(start_front, clip):
    dispatcher = FakeDispatcher()
    front = await start_front(dispatcher)
    svc = front.svc
    await svc.encoder.unavailable()  # the first ping said "up"
    dispatcher.down = "the broker refused the task: Connection refused"
    job_id = await front.upload(clip)
    await front.wait_job(job_id, lambda j: j["status"] == "queued" and j["started_at"] is None)
    status = await (await front.client.get("/api/status")).json()
    assert status["jobs"]["failed"] == 0
    dispatcher.down = None
    msg = await dispatcher.next_message(1, timeout=10)
    assert (await front.claim(msg))["job"] == job_id


async def test_a_blocked_broker_never_blocks_the_loop(start_front, clip):
    dispatcher = FakeDispatcher(send_delay_s=5.0)
    front = await start_front(dispatcher)
    job_id = await front.upload(clip)
    await front.wait_job(job_id, lambda j: j["status"] == "running")  # the send is under way
    started = time.monotonic()
    resp = await front.client.get("/api/status")
    assert resp.status == 200
    assert time.monotonic() - started < 1.0  # a blocked loop would take the 5 s send
    assert dispatcher.sent == []


async def test_api_workers_lists_the_workers_seen(front, clip):
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await front.claim(msg, "encoder-7")
    assert await front.progress(msg) == 204
    body = await (await front.client.get("/api/workers")).json()
    assert body["mode"] == "celery" and body["broker"] == "up"
    assert [(w["name"], w["job"]) for w in body["workers"]] == [("encoder-7", job_id)]
    assert 0 <= body["workers"][0]["last_seen_s"] < 5


async def test_with_web_token_only_the_attempt_token_opens_the_worker_routes(
    aiohttp_client, make_config, clip
):
    token = "5" * 64
    dispatcher = FakeDispatcher()
    cfg = make_config(**worker_config(), web={"token": token})
    client = await aiohttp_client(create_app(cfg, dispatcher=dispatcher))
    front = Front(client, dispatcher)
    data = aiohttp.FormData()
    data.add_field("file", clip.read_bytes(), filename=clip.name)
    resp = await client.post("/api/jobs", data=data, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 201
    msg = await dispatcher.next_message(1)
    assert (await front.claim(msg))["job"]  # the attempt's token, not web.token
    assert (await client.get("/api/workers")).status == 401  # for people: web.token
    wrong = await front.call(msg, "POST", "progress", token=token, json={"progress": 0.1})
    assert wrong.status == 401  # web.token is no attempt's token
    ok = await client.get("/api/workers", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200


async def test_api_workers_in_local_mode(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config(watch={"enabled": False})))
    body = await (await client.get("/api/workers")).json()
    assert body == {"mode": "local", "broker": None, "workers": []}
    resp = await client.post(
        "/api/workers/attempts/abc/claim",
        headers={"Authorization": "Bearer abc"},
        json={"worker": "w"},
    )
    assert resp.status == 401


async def test_an_attempt_unclaimed_for_long_gets_one_warning(
    start_front, clip, caplog, monkeypatch
):
    monkeypatch.setattr(remote, "UNCLAIMED_WARN_S", 1.5)  # 300 s in earnest
    front = await start_front(lease_s=1.0)
    job_id = await front.upload(clip)
    msg = await front.dispatcher.next_message(1)
    await asyncio.sleep(3.0)  # nobody claims it: three rounds of the watch
    said = [r.getMessage() for r in caplog.records if r.name == "vidd.remote"]
    warned = [line for line in said if "not claimed" in line]
    assert len(warned) == 1, said
    assert job_id in warned[0] and msg.attempt in warned[0] and "127.0.0.1:9" in warned[0]
    assert (await front.job(job_id))["status"] == "running"  # waiting is no failure
