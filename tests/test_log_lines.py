"""The lines of HandBrake's log that matter, read from the real HandBrakeCLI's logs (a text
file it refuses, a tiny clip it converts, one whose result vidd refuses), and served at
GET /api/jobs/{id}/log."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest

from testkit.jobs import add_rejected
from vidd.log_lines import view
from vidd.web.app import create_app

# What no highlight may be: the disc-library probing and start-up chatter of every run.
NOISE = re.compile(r"libdvd|udfread|disc\.c|bluray|not a bd|not a dvd|hb_init|started \(", re.I)
PROFILES = """
[encode.profiles.web]
args = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]

[encode.profiles.cut]
args = ["-e", "x264", "-q", "22", "-B", "96", "-O", "--stop-at", "seconds:1"]
"""


def handbrake(source: Path, out: Path) -> str:
    """What HandBrakeCLI prints converting `source`, both streams as they come."""
    run = subprocess.run(
        ["HandBrakeCLI", "-i", str(source), "-o", str(out), "-e", "x264", "-q", "22"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return run.stdout


def assert_no_noise(highlights: list[str]) -> None:
    assert not [h for h in highlights if NOISE.search(h)], highlights


def test_a_text_file_says_why_it_is_not_a_video(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, these are notes\n")
    log = handbrake(notes, tmp_path / "out.mp4")
    assert "libdvdnav" in log  # the noise is there to drop
    got = view(log)
    assert "scan: unrecognized file type" in got.highlights
    assert "No title found." in got.highlights
    assert_no_noise(got.highlights)
    assert any("libdvdnav" in line for line in got.lines)  # the whole log keeps it


def test_a_good_encode_shows_how_it_went(tmp_path, clip):
    log = handbrake(clip, tmp_path / "out.mp4")
    got = view(log)
    assert "libhb: work result = 0" in got.highlights
    assert any(h.startswith("work: average encoding speed") for h in got.highlights)
    assert_no_noise(got.highlights)
    assert not any(h.startswith(('"', "{", "}")) for h in got.highlights)  # the job's JSON
    assert not [h for h in got.highlights if re.search(r"\berror", h, re.I)], got.highlights


def test_trouble_comes_first_once_and_without_timestamps():
    log = "\n".join(
        [
            "[07:00:01] libdvdnav: vm: failed to read VIDEO_TS.IFO",
            "[07:00:02] mux: track 0, 31 frames, 15832 bytes",
            "[07:00:02] mpeg4-decoder done: 50 frames, 0 decoder errors",
            "[07:00:02] h264-decoder done: 50 frames, 7 decoder errors",
            "[07:00:03] h264-decoder done: 50 frames, 7 decoder errors",
            "[07:00:04] libhb: work result = 5",
        ]
    )
    got = view(log, verdict="HandBrake could not read the source (exit code 5)")
    assert got.highlights == [
        "h264-decoder done: 50 frames, 7 decoder errors",
        "libhb: work result = 5",
        "mux: track 0, 31 frames, 15832 bytes",
        "vidd: HandBrake could not read the source (exit code 5)",
    ]
    assert len(got.lines) == 6


async def wait_ended(client, job_id: str) -> dict:
    async with asyncio.timeout(60):
        while True:
            job = await (await client.get(f"/api/jobs/{job_id}")).json()
            if job["status"] in ("done", "failed"):
                return job
            await asyncio.sleep(0.1)


async def test_the_log_route(aiohttp_client, make_config, clip, clip_h264):
    client = await aiohttp_client(create_app(make_config(PROFILES, watch={"enabled": False})))

    async def upload(path: Path, profile: str) -> str:
        form = aiohttp.FormData()
        form.add_field("profile", profile)
        form.add_field("file", path.read_bytes(), filename=path.name)
        resp = await client.post("/api/jobs", data=form)
        assert resp.status == 201
        return str((await resp.json())["id"])

    good, cut = await upload(clip, "web"), await upload(clip_h264, "cut")
    done, failed = await wait_ended(client, good), await wait_ended(client, cut)
    assert done["status"] == "done" and failed["status"] == "failed"

    log = await (await client.get(f"/api/jobs/{good}/log")).json()
    assert set(log) == {"highlights", "lines"}
    assert "libhb: work result = 0" in log["highlights"]
    assert_no_noise(log["highlights"])
    assert log["lines"] == [line for line in done["log_tail"].splitlines() if line.strip()]

    # HandBrake saw nothing wrong here; vidd's check of the result did, and says so last.
    log = await (await client.get(f"/api/jobs/{cut}/log")).json()
    assert log["highlights"][-1] == f"vidd: {failed['error']['detail']}"
    assert "lasts" in log["highlights"][-1]
    assert_no_noise(log["highlights"])

    rejected = await add_rejected(client)  # never encoded: no log, only the reason
    log = await (await client.get(f"/api/jobs/{rejected.id}/log")).json()
    assert log == {"highlights": ["vidd: no video stream"], "lines": []}


@pytest.mark.parametrize("job_id", ["2MFSMB6sw0Yu", "bad id!", "x" * 100])  # no such job
async def test_no_log_for_no_job(aiohttp_client, make_config, job_id):
    client = await aiohttp_client(create_app(make_config(watch={"enabled": False})))
    resp = await client.get(f"/api/jobs/{job_id}/log")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
