"""The jobs API, status, health and metrics, the error bodies, the security headers,
the Origin check and the token, against the real app from create_app."""

from __future__ import annotations

import asyncio
import shutil
import stat
from pathlib import Path

import aiohttp
import pytest

from testkit.jobs import add_rejected
from vidd.job import new_id
from vidd.web.app import create_app
from vidd.web.keys import GUARD, HUB, SERVICES
from vidd.web.security import CSP

ROOT = Path(__file__).resolve().parent.parent


def stalling_handbrake(folder: Path) -> str:
    """The fake HandBrakeCLI, executable, for jobs that stay running (FAKE_HB_MODE=stall)."""
    path = folder / "fake_handbrake.py"
    shutil.copy(ROOT / "tests" / "fake_handbrake.py", path)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
async def client(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False})
    return await aiohttp_client(create_app(cfg))


# 256 bits, as `openssl rand -hex 32` makes
TOKEN = "5f0c1a7e9b2d4c6e8a1f3b5d7c9e0a2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c"


async def upload(client, path: Path, name: str | None = None, **fields: str):
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", path.read_bytes(), filename=name or path.name)
    return await client.post("/api/jobs", data=form)


async def wait_status(client, job_id: str, *statuses: str, timeout: float = 30) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/api/jobs/{job_id}")
        body = await resp.json()
        if body["status"] in statuses:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


def assert_error(body: dict, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_list_pages_newest_first_and_filters(client):
    jobs = [await add_rejected(client, f"file{i}.txt") for i in range(5)]
    resp = await client.get("/api/jobs", params={"limit": "2"})
    assert resp.status == 200
    page = await resp.json()
    assert [j["id"] for j in page["jobs"]] == [jobs[4].id, jobs[3].id]
    assert page["next_before"] == jobs[3].id
    resp = await client.get("/api/jobs", params={"limit": "2", "before": page["next_before"]})
    assert [j["id"] for j in (await resp.json())["jobs"]] == [jobs[2].id, jobs[1].id]
    resp = await client.get("/api/jobs", params={"status": "rejected"})
    body = await resp.json()
    assert len(body["jobs"]) == 5 and body["next_before"] is None
    resp = await client.get("/api/jobs", params={"status": "done"})
    assert (await resp.json())["jobs"] == []
    for bad in ({"status": "bogus"}, {"limit": "0"}, {"limit": "x"}, {"before": "nope"}):
        resp = await client.get("/api/jobs", params=bad)
        assert resp.status == 400, bad
        assert_error(await resp.json(), "bad_request")


async def test_get_job_with_log_and_404(client):
    job = await add_rejected(client, "<b>x</b>.txt")
    resp = await client.get(f"/api/jobs/{job.id}")
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == job.id and body["name"] == "<b>x</b>.txt"
    assert body["status"] == "rejected" and "log_tail" in body
    assert body["error"] == {
        "code": "not_video",
        "message": "This file isn't a video vidd can read.",  # plain words (vidd/words.py)
        "detail": "no video stream",  # what was recorded
    }
    for missing in (new_id(), "bad id!", "x" * 100):
        resp = await client.get(f"/api/jobs/{missing}")
        assert resp.status == 404
        assert_error(await resp.json(), "not_found")


async def test_cancel_retry_conflicts_and_delete_of_a_rejected_job(client):
    job = await add_rejected(client)
    for action in ("cancel", "retry"):
        resp = await client.post(f"/api/jobs/{job.id}/{action}")
        assert resp.status == 409, action
        assert_error(await resp.json(), "conflict")
        resp = await client.post(f"/api/jobs/{new_id()}/{action}")
        assert resp.status == 404
    resp = await client.delete(f"/api/jobs/{job.id}")
    assert resp.status == 200 and (await resp.json()) == {"deleted": job.id}
    resp = await client.delete(f"/api/jobs/{job.id}")
    assert resp.status == 404
    assert_error(await resp.json(), "not_found")


async def test_cancel_retry_delete_through_the_states(
    aiohttp_client, make_config, clip, tmp_path, monkeypatch
):
    """A stalling encoder keeps one job running and the next one queued."""
    cfg = make_config(
        watch={"enabled": False},
        encode={
            "max_parallel": 1,
            "handbrake": stalling_handbrake(tmp_path),
            "child_env": ["FAKE_HB_MODE"],
        },
    )
    client = await aiohttp_client(create_app(cfg))
    # After start-up: `--version` must not stall; only the encodes do.
    monkeypatch.setenv("FAKE_HB_MODE", "stall")
    first = await (await upload(client, clip, "first.avi")).json()
    second = await (await upload(client, clip, "second.avi")).json()
    await wait_status(client, first["id"], "running")
    queued = await wait_status(client, second["id"], "queued")
    assert queued["queue_position"] == 0

    # retry of a queued or running job: 409
    for job_id in (first["id"], second["id"]):
        resp = await client.post(f"/api/jobs/{job_id}/retry")
        assert resp.status == 409
    # cancel a queued one, then again (409), then retry it
    resp = await client.post(f"/api/jobs/{second['id']}/cancel")
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    resp = await client.post(f"/api/jobs/{second['id']}/cancel")
    assert resp.status == 409
    resp = await client.post(f"/api/jobs/{second['id']}/retry")
    assert resp.status == 200 and (await resp.json())["status"] == "queued"
    # cancel the running one: the encoder is stopped and reaped
    resp = await client.post(f"/api/jobs/{first['id']}/cancel")
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    # the queued one now runs; delete it while it runs: its files go too
    await wait_status(client, second["id"], "running")
    source = cfg.storage.sources_dir / f"{second['id']}.avi"
    assert source.exists()
    resp = await client.delete(f"/api/jobs/{second['id']}")
    assert resp.status == 200
    assert not source.exists()
    assert (await client.get(f"/api/jobs/{second['id']}")).status == 404
    assert client.app[SERVICES].pool.busy == 0
    resp = await client.get("/api/jobs", params={"status": "cancelled"})
    assert [j["id"] for j in (await resp.json())["jobs"]] == [first["id"]]


async def test_status(client):
    await add_rejected(client)
    resp = await client.get("/api/status")
    assert resp.status == 200
    body = await resp.json()
    cfg = client.app[SERVICES].config
    assert body["version"]
    assert body["handbrake"]["path"] == cfg.encode.handbrake
    assert body["handbrake"]["version"].startswith("1.")
    assert body["uptime_s"] >= 0
    assert body["workers"] == {
        "max": cfg.encode.max_parallel,
        "busy": 0,
        "mode": "local",
        "broker": None,
    }
    assert body["jobs"]["rejected"] == 1 and body["jobs"]["queued"] == 0
    assert body["disk"]["free_bytes"] > 0
    assert body["disk"]["min_free_bytes"] == cfg.storage.min_free_bytes
    assert body["watching"] is False
    assert "web" in body["profiles"]


async def test_status_reports_the_watcher(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config(watch={"enabled": True})))
    body = await (await client.get("/api/status")).json()
    assert body["watching"] is True


async def test_healthz_follows_the_store(client):
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
    await client.app[SERVICES].store.close()
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert_error(await resp.json(), "unavailable")


async def test_metrics(client, clip):
    await add_rejected(client)
    resp = await upload(client, clip)
    assert resp.status == 201
    ws = await client.ws_connect("/ws")
    await ws.receive_json()
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['vidd_jobs{state="rejected"}'] == 1
    assert samples["vidd_upload_bytes_total"] == clip.stat().st_size
    assert samples["vidd_websocket_clients"] == 1
    assert samples["vidd_uploads_in_progress"] == 0  # the upload above has finished
    for name in (
        'vidd_encodes_total{result="failed"}',
        "vidd_encode_seconds_count",
        "vidd_queue_depth",
        "vidd_workers_busy",
        "vidd_workers_max",
    ):
        assert name in samples, name
    assert "# TYPE vidd_encodes_total counter" in text
    await ws.close()


async def test_unknown_route_and_method_are_json_errors(client):
    resp = await client.get("/api/nothing")
    assert resp.status == 404
    assert_error(await resp.json(), "not_found")
    resp = await client.put("/api/jobs")
    assert resp.status == 405
    assert_error(await resp.json(), "method_not_allowed")


async def test_security_headers_on_pages_api_and_errors(client):
    for path in ("/", "/api/status", "/api/jobs/nope", "/static/app.js"):
        resp = await client.get(path)
        assert resp.headers["Content-Security-Policy"] == CSP, path
        assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"  # not no-referrer: see security.py


async def test_foreign_origin_refused_for_post_and_delete(client):
    job = await add_rejected(client)
    evil = {"Origin": "http://evil.example"}
    resp = await client.delete(f"/api/jobs/{job.id}", headers=evil)
    assert resp.status == 403
    assert_error(await resp.json(), "foreign_origin")
    resp = await client.post(f"/api/jobs/{job.id}/retry", headers={"Origin": "null"})
    assert resp.status == 403
    # same origin (as a browser sends it) passes, and so does no Origin at all (a CLI)
    host = client.server.host
    port = client.server.port
    resp = await client.post(
        f"/api/jobs/{job.id}/retry", headers={"Origin": f"http://{host}:{port}"}
    )
    assert resp.status == 409
    resp = await client.delete(f"/api/jobs/{job.id}")
    assert resp.status == 200
    # a GET from anywhere is only a read
    resp = await client.get("/api/jobs", headers=evil)
    assert resp.status == 200


async def test_allowed_origins(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"allowed_origins": ["https://vidd.example"]})
    client = await aiohttp_client(create_app(cfg))
    job = await add_rejected(client)
    resp = await client.delete(f"/api/jobs/{job.id}", headers={"Origin": "https://vidd.example"})
    assert resp.status == 200
    resp = await client.post("/api/jobs", headers={"Origin": "https://other.example"})
    assert resp.status == 403


async def test_token_protects_api_ws_media_and_pages(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"token": TOKEN})
    client = await aiohttp_client(create_app(cfg))
    job = await add_rejected(client)
    for path in (
        "/api/jobs",
        f"/api/jobs/{job.id}",
        "/api/status",
        "/metrics",
        f"/videos/{job.id}.mp4",
    ):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert_error(await resp.json(), "unauthorized")
        resp = await client.get(path, headers={"Authorization": "Bearer wrong"})
        assert resp.status == 401, path
        # a second guess at once waits: wrong tokens back off per client address
        resp = await client.get(path, headers={"Authorization": "Bearer wrong again"})
        assert resp.status == 429, path
        assert_error(await resp.json(), "too_many_attempts")
        assert int(resp.headers["Retry-After"]) >= 1
        client.app[GUARD].backoff.succeeded("127.0.0.1")  # the next path starts afresh
    resp = await client.post("/api/jobs")
    assert resp.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect("/ws")
    assert e.value.status == 401
    # the page sends a person to the login form; health and the form itself are open
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/login")).status == 200

    good = {"Authorization": f"Bearer {TOKEN}"}
    resp = await client.get(f"/api/jobs/{job.id}", headers=good)
    assert resp.status == 200
    ws = await client.ws_connect("/ws", headers=good)
    assert (await ws.receive_json())["type"] == "snapshot"
    await ws.close()

    # the login form: a wrong token goes back to the form, the right one sets the cookie
    resp = await client.post("/login", data={"token": "nope"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?failed=1"
    resp = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert resp.headers["Location"].startswith("/login?wait=")  # a try too soon after it
    client.app[GUARD].backoff.succeeded("127.0.0.1")
    resp = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.cookies["vidd_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert TOKEN not in cookie.value
    resp = await client.get("/api/jobs")  # the client's jar now holds the cookie
    assert resp.status == 200
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 200
    resp = await client.post("/logout", allow_redirects=False)
    assert resp.status == 303
    assert (await client.get("/api/jobs")).status == 401
    # the old cookie is dead on the server too, not just dropped from the jar
    stale = {"Cookie": f"vidd_session={cookie.value}"}
    assert (await client.get("/api/jobs", headers=stale)).status == 401


async def test_without_token_everything_is_open(client):
    assert (await client.get("/api/jobs")).status == 200
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 200
    assert "text/html" in resp.headers["Content-Type"]


async def test_watch_page_is_static_and_404s_for_unknown_ids(client):
    job = await add_rejected(client, "<script>alert(1)</script>.txt")
    resp = await client.get(f"/watch/{job.id}")
    assert resp.status == 200
    html = await resp.text()
    assert "<script>alert" not in html  # the page never carries the name itself
    assert '<video id="player" controls preload="metadata"' in html
    assert (await client.get(f"/watch/{new_id()}")).status == 404
    assert (await client.get("/watch/..%2F..%2Fetc")).status == 404


async def test_hub_is_registered_and_removed(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False})
    app = create_app(cfg)
    client = await aiohttp_client(app)
    hub = app[HUB]
    ws = await client.ws_connect("/ws")
    assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    job = await add_rejected(client)  # a store change reaches the hub, and the socket
    message = await ws.receive_json(timeout=5)
    assert message["type"] == "job" and message["job"]["id"] == job.id
    await ws.close()
    await client.close()
    assert hub.clients == set()
