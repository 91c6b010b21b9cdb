"""Plain words: every error code vidd records has a sentence a person understands, the
real HandBrakeCLI's refusals read as such, and the job JSON and the 422 of an upload carry
the sentence as `message` with the technical text as `detail`."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from vidd import words
from vidd.job import JobError
from vidd.probe import NotAVideo, probe
from vidd.web.app import create_app

PACKAGE = Path(__file__).resolve().parent.parent / "vidd"
# Where a code's sentence depends on HandBrake's number in the message.
NUMBERED = {"exit_code", "workdone_error"}
JARGON = re.compile(r"exit code|workdone|\bscan\b|\btitle\b|_|\(|\d|ansi|errno", re.I)
PROFILES = """
[encode.profiles.web]
args = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]

[encode.profiles.cut]
args = ["-e", "x264", "-q", "22", "-B", "96", "-O", "--stop-at", "seconds:1"]
"""
NOTES = "".join(f"line {i}: my notes, certainly not a video\n" for i in range(60))


def recorded_codes() -> set[str]:
    """Every error code vidd's code records for a job: EncodeFailed("code", ...) and
    JobError("code", ...) wherever they are written."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(r'(?:EncodeFailed|JobError)\(\s*"([a-z_]+)"', text))
    return found


def assert_plain(sentence: str) -> None:
    assert sentence[0].isupper() or sentence.startswith("vidd"), sentence
    assert sentence.endswith("."), sentence
    assert not JARGON.search(sentence), sentence


def test_every_recorded_code_has_its_own_sentence():
    codes = recorded_codes()
    assert {"not_video", "stalled", "disk_full", "crashed", "exit_code"} <= codes
    for code in codes - NUMBERED:
        assert code in words.BY_CODE, f"{code} has no sentence in vidd/words.py"
        assert_plain(words.BY_CODE[code])


@pytest.mark.parametrize(
    ("code", "detail", "sentence"),
    [
        ("exit_code", "HandBrake could not read the source (exit code 5)", words.DAMAGED),
        ("workdone_error", "HandBrake could not read the source (error 5)", words.DAMAGED),
        (
            "exit_code",
            "HandBrake found no title to encode (exit code 2)",
            words.BY_HANDBRAKE_CODE[2],
        ),
        ("exit_code", "HandBrake failed (exit code 99)", words.FAILED),
        ("exit_code", "no number at all", words.FAILED),
        ("disk_full", "the disk filled up during the conversion", words.DISK_FULL),
        ("crashed", "HandBrake failed: No space left on device", words.DISK_FULL),
        ("not_video", "the file is empty", "The file is empty."),
        ("not_video", "not a video: it is a still picture or has no duration", None),
        ("a_code_from_elsewhere", "something technical (0x1f)", words.FAILED),
        ("cancelled", "cancelled by a user", "Cancelled."),
    ],
)
def test_sentences_follow_handbrakes_words(code, detail, sentence):
    said = words.plain(code, detail)
    assert_plain(said)
    if sentence is not None:
        assert said == sentence


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.txt", "hello notes\n"),  # HandBrake: "scan: unrecognized file type"
        ("long.txt", NOTES),  # HandBrake reads this as an `ansi` video
        ("empty.avi", ""),
    ],
)
async def test_real_handbrake_refusals_read_plainly(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(NotAVideo) as refused:
        await probe("HandBrakeCLI", path)
    said = words.plain("not_video", str(refused.value))
    assert_plain(said)
    assert said in (words.NOT_VIDEO, "The file is empty.")


async def test_a_damaged_video_reads_plainly(tmp_path, clip):
    path = tmp_path / "cut.avi"
    path.write_bytes(clip.read_bytes()[:3000])  # the header, then nothing
    with pytest.raises(NotAVideo) as refused:
        await probe("HandBrakeCLI", path)
    assert_plain(words.plain("not_video", str(refused.value)))


def test_job_json_keeps_the_technical_text_as_detail():
    error = JobError("exit_code", "HandBrake could not read the source (exit code 5)")
    assert error.to_json() == {
        "code": "exit_code",
        "message": words.DAMAGED,
        "detail": "HandBrake could not read the source (exit code 5)",
    }


async def test_upload_422_and_job_speak_plainly(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config(watch={"enabled": False})))
    form = aiohttp.FormData()
    form.add_field("file", NOTES.encode(), filename="notes.txt")
    resp = await client.post("/api/jobs", data=form)
    body = await resp.json()
    assert resp.status == 422
    assert body["error"] == {"code": "not_video", "message": words.NOT_VIDEO}
    [job] = (await (await client.get("/api/jobs?status=rejected")).json())["jobs"]
    assert job["error"]["message"] == words.NOT_VIDEO
    assert "ansi" in job["error"]["detail"]  # what HandBrake made of it, for who wants it


async def test_a_failed_encode_speaks_plainly(aiohttp_client, make_config, clip_h264):
    """A real encode that stops after 1 s of a 3 s clip: too short, so it fails."""
    client = await aiohttp_client(create_app(make_config(PROFILES, watch={"enabled": False})))
    form = aiohttp.FormData()
    form.add_field("profile", "cut")
    form.add_field("file", clip_h264.read_bytes(), filename="clip.mp4")
    job = await (await client.post("/api/jobs", data=form)).json()
    async with asyncio.timeout(60):
        while job["status"] not in ("failed", "done"):
            await asyncio.sleep(0.1)
            job = await (await client.get(f"/api/jobs/{job['id']}")).json()
    assert job["error"]["code"] == "duration_mismatch"
    assert job["error"]["message"] == words.BY_CODE["duration_mismatch"]
    assert "lasts" in job["error"]["detail"]
