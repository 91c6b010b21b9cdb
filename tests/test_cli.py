"""The `vidd` command: exit codes and output against a small aiohttp server that imitates
the API contract (DESIGN.md), then submit and status against a real running daemon."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from testkit.daemon import free_port, run_vidd, wait_for, write_config
from vidd import cli
from vidd.client import Client

TOKEN = "5f0c1a7e9b2d4c6e8a1f3b5d7c9e0a2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c"
LIMIT = 2 << 20


class Imitation:
    """The API's shapes and errors, with jobs that run when they are polled."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.uploads: list[dict[str, Any]] = []
        self.retries: list[Any] = []
        self.seq = 0
        self.sending = 0  # uploads being received right now
        self.most_sending = 0
        self.upload_pause_s = 0.0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth])
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/jobs", self.list)
        app.router.add_post("/api/jobs", self.upload)
        app.router.add_get("/api/jobs/{id}", self.get)
        app.router.add_post("/api/jobs/{id}/cancel", self.cancel)
        app.router.add_post("/api/jobs/{id}/retry", self.retry)
        app.router.add_delete("/api/jobs/{id}", self.delete)
        app.router.add_get("/api/jobs/{id}/log", self.log)
        app.router.add_get("/broken", self.broken)
        return app

    @staticmethod
    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.error(401, "unauthorized", "a valid token is required")
        return await handler(request)

    async def status(self, request: web.Request) -> web.Response:
        counts = {s: 0 for s in ("queued", "running", "done", "failed", "cancelled", "rejected")}
        for job in self.jobs.values():
            counts[job["status"]] += 1
        return web.json_response(
            {
                "version": "0.1.0",
                "handbrake": {"path": "/usr/bin/HandBrakeCLI", "version": "1.6.1"},
                "uptime_s": 3725.0,
                "workers": {"max": 2, "busy": 0},
                "jobs": counts,
                "disk": {"free_bytes": 5 << 30, "min_free_bytes": 1 << 30},
                "watching": True,
            }
        )

    async def list(self, request: web.Request) -> web.Response:
        jobs = sorted(self.jobs.values(), key=lambda j: j["seq"], reverse=True)
        if "status" in request.query:
            jobs = [j for j in jobs if j["status"] == request.query["status"]]
        if "before" in request.query:
            seq = self.jobs[request.query["before"]]["seq"]
            jobs = [j for j in jobs if j["seq"] < seq]
        total = len(jobs)
        limit = int(request.query.get("limit", "50"))
        if not 1 <= limit <= 500:  # the real API's cap
            return self.error(400, "bad_request", "limit must be between 1 and 500")
        page = jobs[:limit]
        more = page[-1]["id"] if len(page) == limit and total > limit else None
        return web.json_response({"jobs": page, "next_before": more, "total": total})

    async def upload(self, request: web.Request) -> web.Response:
        self.sending += 1
        self.most_sending = max(self.most_sending, self.sending)
        try:
            await asyncio.sleep(self.upload_pause_s)
            return await self._upload(request)
        finally:
            self.sending -= 1

    async def _upload(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        profile, name, digest, size, parts = None, None, hashlib.sha256(), 0, 0
        while (part := await reader.next()) is not None:
            if part.name == "profile":
                profile = (await part.read()).decode()
            elif part.name == "file":
                name = part.filename
                while chunk := await part.read_chunk(64 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    parts += 1
                    if size > LIMIT:
                        return self.error(413, "too_large", f"over the limit of {LIMIT} bytes")
        self.uploads.append({"name": name, "sha256": digest.hexdigest(), "size": size})
        if name is None:
            return self.error(400, "no_file", "field 'file' is missing")
        if profile not in (None, "web", "small"):
            return self.error(400, "unknown_profile", f"no profile {profile!r}")
        self.seq += 1
        job_id = f"job{self.seq:03d}"
        self.jobs[job_id] = {
            "id": job_id,
            "seq": self.seq,
            "name": name,
            "status": "rejected" if name.endswith(".txt") else "queued",
            "profile": profile or "web",
            "progress": 0.0,
            "fps": None,
            "eta_s": None,
            "queue_position": 1,
            "created_at": "2024-05-01T12:00:00.000Z",
            "output": None,
            "error": None,
            "log_tail": "scan: no title found",
        }
        headers = {"Vidd-Job-Id": job_id}
        if name.endswith(".txt"):
            response = self.error(422, "not_video", "no video stream (ansi)")
            response.headers.update(headers)
            return response
        return web.json_response(self.jobs[job_id], status=201, headers=headers)

    async def get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self.error(404, "not_found", "no such job")
        n = self.polls[job["id"]] = self.polls.get(job["id"], 0) + 1
        if job["status"] in ("queued", "running") and "hang" not in job["name"]:
            if n == 1:
                job.update(status="running", progress=0.5, fps=120.0, eta_s=3)
            elif "fail" in job["name"]:
                job.update(status="failed", error={"code": "encode", "message": "exit 3"})
            else:
                job.update(status="done", progress=1.0)
                job["output"] = {"url": f"/videos/{job['id']}.mp4", "watch_url": "/w"}
        return web.json_response(job)

    async def cancel(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self.error(404, "not_found", "no such job")
        if job["status"] not in ("queued", "running"):
            return self.error(409, "conflict", f"a {job['status']} job can't be cancelled")
        job["status"] = "cancelled"
        return web.json_response(job)

    async def retry(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self.error(404, "not_found", "no such job")
        if job["status"] not in ("failed", "cancelled"):
            return self.error(409, "conflict", f"a {job['status']} job can't be retried")
        if request.body_exists:
            self.retries.append(await request.json())
        job["status"] = "queued"
        return web.json_response(job)

    async def delete(self, request: web.Request) -> web.Response:
        if self.jobs.pop(request.match_info["id"], None) is None:
            return self.error(404, "not_found", "no such job")
        return web.json_response({"deleted": request.match_info["id"]})

    async def log(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.jobs:
            return self.error(404, "not_found", "no such job")
        return web.json_response(
            {"highlights": ["ERROR: \x1b[31mno title"], "lines": ["line 1", "line 2"]}
        )

    async def broken(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="<html>oops</html>")


@pytest.fixture
async def imitation(aiohttp_server):
    fake = Imitation()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def fast_poll(monkeypatch):
    monkeypatch.setattr(cli, "POLL_S", 0.01)


async def run(*argv: str, token: str | None = TOKEN, url: str | None = None) -> int:
    """cli.main in a thread, so the imitation server keeps serving on this loop."""
    args = list(argv)
    if url is not None:
        args += ["--url", url]
    if token is not None:
        args += ["--token", token]
    return await asyncio.to_thread(cli.main, args)


def video(tmp_path: Path, name: str = "clip.avi", size: int = 700_000) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


# -- against the imitation --------------------------------------------------------------------


async def test_submit_streams_the_file_and_waits_until_done(imitation, tmp_path, capsys, fast_poll):
    path = video(tmp_path, "my clip é.avi")
    code = await run("submit", str(path), "--profile", "small", url=imitation.url)
    out, err = capsys.readouterr()
    assert code == cli.OK, err
    assert imitation.uploads == [
        {
            "name": "my clip é.avi",
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "size": path.stat().st_size,
        }
    ]
    assert imitation.jobs["job001"]["profile"] == "small"
    assert out == f"job001\tdone\t{imitation.url}/w\n"
    # Not a terminal: milestones, not a redrawn bar.
    assert "uploaded as job001" in err and "running" in err and "\r" not in err


async def test_upload_reads_in_chunks(imitation, tmp_path):
    path = video(tmp_path, size=1_000_000)
    seen: list[tuple[int, int]] = []
    client = Client(imitation.url, TOKEN)
    job = await asyncio.to_thread(client.upload, path, None, lambda s, t: seen.append((s, t)))
    assert job["status"] == "queued"
    # 1 MB in 256 KiB chunks: a report before the first and after each of four.
    assert [s for s, _ in seen] == [0, 262144, 524288, 786432, 1_000_000]
    assert {t for _, t in seen} == {1_000_000}


async def test_submit_no_wait(imitation, tmp_path, capsys):
    code = await run("submit", "--no-wait", str(video(tmp_path)), url=imitation.url)
    assert code == cli.OK
    assert capsys.readouterr().out == "job001\tqueued\tclip.avi\n"
    assert imitation.polls == {}


async def test_submit_failed_job_exits_1(imitation, tmp_path, capsys, fast_poll):
    code = await run("submit", str(video(tmp_path, "will-fail.avi")), url=imitation.url)
    assert code == cli.JOB_FAILED
    assert capsys.readouterr().out == "job001\tfailed\texit 3\n"


async def test_submit_not_a_video_exits_1(imitation, tmp_path, capsys):
    code = await run("submit", str(video(tmp_path, "notes.txt")), url=imitation.url)
    assert code == cli.JOB_FAILED
    # the rejected file is a job: its id, not "-", so that `vidd logs ID` can say why
    assert capsys.readouterr().out == "job001\trejected\tnotes.txt: no video stream (ansi)\n"


async def test_submit_several_files_exits_with_the_highest_code(
    imitation, tmp_path, capsys, fast_poll
):
    files = [video(tmp_path, "a.avi"), video(tmp_path, "b.txt"), video(tmp_path, "c.avi")]
    code = await run("submit", *map(str, files), url=imitation.url)
    assert code == cli.JOB_FAILED
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["done", "rejected", "done"]


async def test_submit_too_large_exits_4(imitation, tmp_path, capsys):
    code = await run("submit", str(video(tmp_path, size=LIMIT + 300_000)), url=imitation.url)
    assert code == cli.REFUSED
    assert "HTTP 413 too_large" in capsys.readouterr().err


async def test_submit_missing_file_exits_2(imitation, tmp_path, capsys):
    code = await run("submit", str(tmp_path / "nope.avi"), url=imitation.url)
    assert code == cli.USAGE
    assert "not a readable file" in capsys.readouterr().err
    assert imitation.uploads == []


async def test_wrong_token_exits_4_with_a_hint(imitation, capsys):
    code = await run("status", token="wrong", url=imitation.url)
    assert code == cli.REFUSED
    err = capsys.readouterr().err
    assert "HTTP 401 unauthorized" in err and "VIDD_TOKEN" in err


async def test_token_from_environment(imitation, monkeypatch, capsys):
    monkeypatch.setenv("VIDD_TOKEN", TOKEN)
    monkeypatch.setenv("VIDD_URL", imitation.url)
    assert await run("status", "--json", token=None) == cli.OK
    assert json.loads(capsys.readouterr().out)["version"] == "0.1.0"


async def test_status_human_summary(imitation, capsys):
    assert await run("status", url=imitation.url) == cli.OK
    out = capsys.readouterr().out
    assert f"vidd at {imitation.url}" in out
    assert "handbrake.version" in out and "1.6.1" in out
    assert "1h02m05s" in out  # uptime_s
    assert "5.0 GiB" in out and "1.0 GiB" in out  # the disk, in bytes
    assert "watching" in out and "yes" in out


async def test_jobs_cancel_retry(imitation, tmp_path, capsys):
    await run("submit", "--no-wait", str(video(tmp_path, 'a\x1b[31m"red.avi')), url=imitation.url)
    capsys.readouterr()
    # Control characters and quotes travel percent-encoded, as browsers send them...
    assert imitation.jobs["job001"]["name"] == "a%1B[31m%22red.avi"
    # ...and a name the daemon reports is shown without its terminal escapes.
    imitation.jobs["job001"]["name"] = "a\x1b[31mred.avi"
    assert await run("jobs", "--status", "queued", url=imitation.url) == cli.OK
    out = capsys.readouterr().out
    assert "job001" in out and "queued" in out
    assert "\x1b" not in out and "a\\x1b[31mred.avi" in out  # no terminal escapes from names
    assert await run("cancel", "job001", url=imitation.url) == cli.OK
    assert capsys.readouterr().out == "job001\tcancelled\n"
    assert await run("cancel", "job001", url=imitation.url) == cli.REFUSED
    assert "HTTP 409 conflict" in capsys.readouterr().err
    assert await run("retry", "job001", url=imitation.url) == cli.OK
    assert await run("retry", "nosuchjob", url=imitation.url) == cli.REFUSED
    assert "HTTP 404" in capsys.readouterr().err
    assert await run("jobs", "--json", "--limit", "5", url=imitation.url) == cli.OK
    page = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in page["jobs"]] == ["job001"] and page["next_before"] is None


async def test_usage_errors_exit_2(imitation, capsys):
    assert await run("cancel", "../../etc", url=imitation.url) == cli.USAGE
    assert await run("jobs", "--limit", "0", url=imitation.url) == cli.USAGE
    assert await run("jobs", "--status", "bogus", url=imitation.url) == cli.USAGE
    assert await run("status", url="ftp://example.com") == cli.USAGE
    assert await run("frobnicate", token=None) == cli.USAGE
    assert "Traceback" not in capsys.readouterr().err


async def test_non_json_error_exits_4(imitation, capsys):
    client = Client(imitation.url, TOKEN)
    from vidd.client import Refused

    with pytest.raises(Refused) as e:
        await asyncio.to_thread(client.request, "GET", "/broken")
    assert e.value.status == 500 and e.value.code == "http_error"


def test_unreachable_exits_3(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["status", "--url", url]) == cli.UNREACHABLE
    assert cli.main(["submit", str(video(tmp_path)), "--url", url]) == cli.UNREACHABLE
    assert "cannot reach the daemon" in capsys.readouterr().err
    # several files: after the first 3, no more are tried; --json keeps stdout JSON
    files = [str(video(tmp_path, f"{n}.avi", 1000)) for n in "ab"]
    assert cli.main(["submit", "--json", "--parallel", "1", *files, "--url", url]) == 3
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["error"]["code"] == "unreachable"


def test_help_documents_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for line in ("0  ok", "1  a job failed", "2  usage", "3  the daemon cannot", "4  the daemon"):
        assert line in out


# -- against a real daemon -----------------------------------------------------------------


def vidd_cmd(*args: str, timeout: float = 90, cache: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("VIDD_URL", "VIDD_TOKEN")}
    if cache is not None:  # where submit remembers unfinished uploads
        env["XDG_CACHE_HOME"] = str(cache)
    return run_vidd(*args, timeout=timeout, env=env)


def test_submit_real_clip_to_running_daemon(daemon_factory, clip):
    d = daemon_factory(web={"port": free_port(), "host": "127.0.0.1", "token": TOKEN})
    r = vidd_cmd("submit", str(clip), "--url", d.url, "--token", TOKEN, cache=d.data)
    assert r.returncode == 0, r.stdout + r.stderr + d.log()
    job_id, status, where = r.stdout.strip().split("\t")
    assert status == "done" and where.startswith(d.url)
    assert (d.data / "videos" / f"{job_id}.mp4").stat().st_size > 0

    r = vidd_cmd("status", "--url", d.url, "--token", TOKEN)
    assert r.returncode == 0, r.stderr
    done = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == ["jobs.done"]]
    assert done == [["jobs.done", "1"]], r.stdout

    r = vidd_cmd("jobs", "--url", d.url, "--token", TOKEN)
    assert r.returncode == 0 and job_id in r.stdout and "clip.avi" in r.stdout
    r = vidd_cmd("cancel", job_id, "--url", d.url, "--token", TOKEN)
    assert r.returncode == 4 and "409" in r.stderr  # a done job can't be cancelled
    r = vidd_cmd("status", "--url", d.url)  # no token
    assert r.returncode == 4 and "401" in r.stderr


def test_submit_several_files_to_running_daemon(daemon_factory, clip, tmp_path):
    d = daemon_factory()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n" * 200)
    second = tmp_path / "second.avi"
    second.write_bytes(clip.read_bytes())
    r = vidd_cmd("submit", str(clip), str(notes), str(second), "--url", d.url, cache=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr  # the text file was rejected
    assert "PATCH /api/uploads/" in d.log()  # sent the resumable way (tus)
    assert list((tmp_path / "vidd" / "uploads").iterdir()) == []  # all finished: none to resume
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert [x[1] for x in lines] == ["done", "rejected", "done"]
    rejected_id = lines[1][0]
    assert lines[1][2].startswith("notes.txt: ")
    # the printed id is the rejected job's: its log and its record are there
    r = vidd_cmd("show", rejected_id, "--url", d.url, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "rejected"
    r = vidd_cmd("logs", rejected_id, "--url", d.url)
    assert r.returncode == 0, r.stderr
    assert "not a video" in r.stdout  # why, first
    r = vidd_cmd("wait", lines[0][0], lines[2][0], "--url", d.url)
    assert r.returncode == 0 and r.stdout.count("\tdone\t") == 2
    r = vidd_cmd("jobs", "--status", "failed,rejected", "--search", "notes", "--url", d.url)
    assert r.returncode == 0 and rejected_id in r.stdout and lines[0][0] not in r.stdout
    r = vidd_cmd("delete", rejected_id, "--url", d.url)
    assert r.returncode == 0 and r.stdout == f"{rejected_id}\tdeleted\n"
    r = vidd_cmd("jobs", "--url", d.url, "--limit", "1")
    assert r.returncode == 0 and "more with --before" in r.stderr


# -- several files at once, paging, the other commands ------------------------------------------


async def test_submit_sends_several_files_at_once(imitation, tmp_path, capsys, fast_poll):
    imitation.upload_pause_s = 0.3  # each upload takes a while: they overlap, or not
    files = [video(tmp_path, f"{n}.avi", size=50_000) for n in "abcd"]
    code = await run("submit", "--parallel", "3", *map(str, files), url=imitation.url)
    out, err = capsys.readouterr()
    assert code == cli.OK, err
    assert imitation.most_sending == 3  # bounded, and concurrent
    # one result line per file, in the order given, whatever order they ended in
    by_name = {j["name"]: j["id"] for j in imitation.jobs.values()}
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        by_name[f"{n}.avi"] for n in "abcd"
    ]
    for n in "abcd":  # a progress line for each (milestones, stderr is not a terminal)
        assert f"{n}.avi: uploaded as {by_name[f'{n}.avi']}" in err


async def test_submit_json_is_one_object_per_file(imitation, tmp_path, capsys, fast_poll):
    files = [video(tmp_path, "a.avi"), video(tmp_path, "b.txt")]
    code = await run("submit", "--json", *map(str, files), url=imitation.url)
    assert code == cli.JOB_FAILED
    a, b = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert a["status"] == "done" and a["name"] == "a.avi"
    assert b["status"] == "rejected" and b["id"] in ("job001", "job002")  # sent at once
    assert b["error"] == {"code": "not_video", "message": "no video stream (ansi)"}


def test_the_limit_agrees_with_the_api():
    from vidd.web import api

    assert cli.MAX_LIMIT == api.MAX_LIMIT


async def test_limit_and_the_hint_that_more_exist(imitation, tmp_path, capsys):
    for n in "abc":
        await run("submit", "--no-wait", str(video(tmp_path, f"{n}.avi", 1000)), url=imitation.url)
    capsys.readouterr()
    assert await run("jobs", "--limit", "501", url=imitation.url) == cli.USAGE
    assert "expected 1-500" in capsys.readouterr().err
    assert await run("jobs", "--limit", "500", url=imitation.url) == cli.OK
    out, err = capsys.readouterr()
    assert out.count("job00") == 3 and err == ""  # all of them: no hint

    assert await run("jobs", "--limit", "2", url=imitation.url) == cli.OK
    out, err = capsys.readouterr()
    assert "job003" in out and "job002" in out and "job001" not in out
    assert err == "vidd: showing 2 of 3; more with --before job002\n"
    assert await run("jobs", "--limit", "2", "--before", "job002", url=imitation.url) == cli.OK
    out, err = capsys.readouterr()
    assert "job001" in out and "job002" not in out and err == ""


async def test_show_logs_wait_delete(imitation, tmp_path, capsys, fast_poll):
    await run("submit", "--no-wait", str(video(tmp_path, "a.avi")), url=imitation.url)
    await run("submit", "--no-wait", str(video(tmp_path, "will-fail.avi")), url=imitation.url)
    capsys.readouterr()

    assert await run("wait", "job001", "job002", url=imitation.url) == cli.JOB_FAILED
    out = capsys.readouterr().out
    assert out == f"job001\tdone\t{imitation.url}/w\njob002\tfailed\texit 3\n"

    assert await run("show", "job002", url=imitation.url) == cli.OK
    out = capsys.readouterr().out
    assert "status" in out and "failed" in out and "error.message" in out
    assert await run("show", "job002", "--json", url=imitation.url) == cli.OK
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "encode"

    assert await run("logs", "job002", url=imitation.url) == cli.OK
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "ERROR: \\x1b[31mno title"  # highlights first, harmless
    assert out.splitlines()[-2:] == ["line 1", "line 2"]
    assert await run("logs", "job002", "--json", url=imitation.url) == cli.OK
    assert json.loads(capsys.readouterr().out)["lines"] == ["line 1", "line 2"]

    assert await run("retry", "job002", "--profile", "small", url=imitation.url) == cli.OK
    assert imitation.retries == [{"profile": "small"}]
    assert capsys.readouterr().out == "job002\tqueued\n"
    assert await run("cancel", "job002", "--json", url=imitation.url) == cli.OK
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"

    assert await run("delete", "job001", url=imitation.url) == cli.OK
    assert capsys.readouterr().out == "job001\tdeleted\n"
    assert await run("delete", "job001", "--json", url=imitation.url) == cli.REFUSED
    assert "HTTP 404" in capsys.readouterr().err
    assert await run("delete", "job002", "--json", url=imitation.url) == cli.OK
    assert json.loads(capsys.readouterr().out) == {"deleted": "job002"}
    assert await run("logs", "job002", url=imitation.url) == cli.REFUSED


async def test_address_and_token_come_from_the_config(imitation, tmp_path, monkeypatch, capsys):
    port = int(imitation.url.rsplit(":", 1)[1])
    path = write_config(tmp_path / "etc", web={"host": "127.0.0.1", "port": port, "token": TOKEN})
    monkeypatch.delenv("VIDD_URL", raising=False)
    monkeypatch.delenv("VIDD_TOKEN", raising=False)
    assert await run("status", "--config", str(path), token=None) == cli.OK
    monkeypatch.setenv("VIDD_CONFIG", str(path))
    capsys.readouterr()
    assert await run("status", "--json", token=None) == cli.OK
    assert json.loads(capsys.readouterr().out)["version"] == "0.1.0"
    # --token still wins over the config's
    assert await run("status", token="wrong") == cli.REFUSED
    # a config named explicitly that is broken is an error, not a silent default
    monkeypatch.setenv("VIDD_CONFIG", str(tmp_path / "nope.toml"))
    assert await run("status", token=None) == cli.USAGE
    assert "file not found" in capsys.readouterr().err
    assert await run("status", "--config", str(tmp_path), token=None) == cli.USAGE
    assert "cannot read it" in capsys.readouterr().err  # a folder: words, no traceback
    assert cli.main(["serve", "--config", str(tmp_path)]) == cli.USAGE
    assert "cannot read it" in capsys.readouterr().err


def test_config_is_found_in_order(tmp_path, monkeypatch):
    from vidd.config_location import NoConfig, find_config

    system, local = tmp_path / "etc.toml", tmp_path / "local.toml"
    env = {"VIDD_CONFIG": "/from/env.toml"}
    assert str(find_config("given.toml", env, system, local)) == "given.toml (from --config)"
    assert str(find_config(None, env, system, local)) == "/from/env.toml (from $VIDD_CONFIG)"
    with pytest.raises(NoConfig, match="VIDD_CONFIG"):
        find_config(None, {}, system, local)
    local.write_text("")
    assert find_config(None, {}, system, local).path == local
    system.write_text("")
    found = find_config(None, {}, system, local)
    assert found.path == system and not found.explicit


def test_serve_says_which_config_it_uses(tmp_path):
    path = write_config(tmp_path, daemon={"shutdown_timeout_s": 1.0})
    env = {**os.environ, "VIDD_CONFIG": str(path)}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidd", "serve"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_for(lambda: "listening on" in log.read_text(), timeout=20)
    finally:
        proc.terminate()
        proc.wait(20)
    assert f"config: {path} (from $VIDD_CONFIG)" in log.read_text()


# Runs a command as a terminal's foreground job does: SIGINT at its default. A suite
# started in the background by a non-interactive shell (`make test &`) has SIGINT ignored,
# and an ignored signal stays ignored across exec: `vidd submit` would never hear Ctrl-C.
IN_THE_FOREGROUND = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


async def test_ctrl_c_stops_following_at_once(imitation, tmp_path):
    files = [str(video(tmp_path, f"hang-{n}.avi", 1000)) for n in "ab"]  # never end
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IN_THE_FOREGROUND,
        "-m", "vidd", "submit", *files, "--url", imitation.url, "--token", TOKEN,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    for _ in range(200):  # both uploaded and being followed
        if len(imitation.polls) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(imitation.polls) == 2
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == cli.INTERRUPTED, err
    assert b"stopped following; the jobs already sent go on" in err
    assert b"Traceback" not in err and out == b""
