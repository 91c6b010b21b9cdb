"""front_client.py: the worker's calls to the front's worker routes, against the fake
front (testkit/fake_front.py): answers mapped to Stop / Unreachable / Refused, the claim
answer checked before its job id and extension become file names, bodies kept under the
front's 64 KiB, and the source fetched again from where a drop left it."""

from __future__ import annotations

import json

import pytest
from aiohttp import ClientSession

from testkit.fake_front import FakeFront
from vidd.celery_app import Dispatch
from vidd.front_client import (
    MAX_ANSWER,
    MAX_JSON,
    Claim,
    FrontClient,
    Refused,
    Stop,
    Unreachable,
    fit_json,
)

GOOD = {
    "job": "abc_DEF-123",
    "source": {
        "size": 10,
        "duration": 2.0,
        "ext": ".AVI",
        "width": 320,
        "height": 240,
        "video_codec": "mpeg4",
        "audio_codecs": ["mp3"],
    },
    "args": ["-e", "x264"],
    "lease_s": 60.0,
    "progress_interval_s": 0.25,
    "max_output_bytes": 1 << 30,
}


def test_a_good_claim_answer_is_read():
    claim = Claim.from_json(GOOD)
    assert claim.job == "abc_DEF-123" and claim.source_ext == ".avi"
    assert claim.source.size == 10 and claim.source.duration == 2.0
    assert claim.lease_s == 60.0 and claim.max_output_bytes == 1 << 30


@pytest.mark.parametrize(
    "change",
    [
        {"job": "../../etc"},
        {"job": ""},
        {"source": {**GOOD["source"], "ext": "/x"}},
        {"source": {**GOOD["source"], "ext": ".a/b"}},
        {"source": {**GOOD["source"], "size": -1}},
        {"source": {**GOOD["source"], "duration": float("nan")}},
        {"lease_s": "60"},
        {"max_output_bytes": True},
        {"args": "-e x264"},
    ],
)
def test_a_claim_answer_that_vidd_would_not_send_is_refused(change):
    with pytest.raises(Refused):
        Claim.from_json({**GOOD, **change})


def test_fit_json_keeps_the_end_of_a_log_under_64_kib():
    tail = "é" * 50_000 + "\n" + "x" * 30_000 + "THE END"  # é is 6 bytes in JSON (\\u00e9)
    body = fit_json({"code": "c", "log_tail": tail}, "log_tail")
    assert len(json.dumps(body).encode()) <= MAX_JSON
    assert body["log_tail"].endswith("THE END") and body["code"] == "c"
    small = {"tail": "short"}
    assert fit_json(small, "tail") == small


@pytest.mark.parametrize(
    ("attempt", "token"),
    [("../../jobs", "t"), ("a/b", "t"), ("a?x=1", "t"), ("", "t"), ("a", "t\r\nX-Evil: 1")],
)
async def test_an_attempt_id_or_token_that_is_not_url_safe_is_refused_before_use(attempt, token):
    # The id becomes a URL path segment, the token a header: never a path of the sender's.
    async with ClientSession() as session:
        with pytest.raises(Refused):
            FrontClient(session, Dispatch(attempt, token, "http://127.0.0.1:9", ()))


@pytest.fixture
async def front():
    f = await FakeFront().start()
    yield f
    await f.stop()


async def test_answers_become_stop_unreachable_or_refused(front, tmp_path):
    source = tmp_path / "s.avi"
    source.write_bytes(b"x" * 1000)
    attempt = front.add("j1", source, [], duration=1.0)
    async with ClientSession() as session:
        ours = FrontClient(session, Dispatch.from_kwargs(attempt.kwargs(front.url)))
        claim = await ours.claim("w")
        assert claim.job == "j1" and claim.source.size == 1000
        with pytest.raises(Stop) as e:  # claimed once
            await ours.claim("w")
        assert (e.value.status, e.value.code) == (409, "claimed")
        attempt.stop = True
        with pytest.raises(Stop) as e:
            await ours.progress(0.5, None, None)
        assert e.value.status == 410
        stranger = FrontClient(session, Dispatch(attempt.id, "wrong", front.url, ()))
        with pytest.raises(Stop) as e:
            await stranger.progress(0.5, None, None)
        assert e.value.status == 401
        gone = FrontClient(session, Dispatch(attempt.id, attempt.token, "http://127.0.0.1:9", ()))
        with pytest.raises(Unreachable):
            await gone.progress(0.5, None, None)
    assert ("progress", 403) not in front.refused  # never sends a browser's headers


async def test_answers_that_arrive_in_pieces_are_read_whole(front, tmp_path):
    source = tmp_path / "s.avi"
    source.write_bytes(b"x" * 1000)
    attempt = front.add("j3", source, [], duration=1.0, answer_in_pieces=True)
    async with ClientSession() as session:
        client = FrontClient(session, Dispatch.from_kwargs(attempt.kwargs(front.url)))
        claim = await client.claim("w")
        assert claim.job == "j3" and claim.max_output_bytes == attempt.max_output_bytes
        with pytest.raises(Stop) as e:  # the error's code, not the status's reason
            await client.claim("w")
        assert (e.value.status, e.value.code) == (409, "claimed")


async def test_an_answer_over_its_limit_is_refused(front, tmp_path):
    source = tmp_path / "s.avi"
    source.write_bytes(b"x" * 1000)
    attempt = front.add("j4", source, [], duration=1.0, claim_padding=MAX_ANSWER)
    async with ClientSession() as session:
        client = FrontClient(session, Dispatch.from_kwargs(attempt.kwargs(front.url)))
        with pytest.raises(Refused, match="too large"):
            await client.claim("w")


async def test_the_source_resumes_after_a_drop_and_restarts_after_a_200(front, tmp_path):
    data = bytes(range(256)) * 400
    source = tmp_path / "s.avi"
    source.write_bytes(data)
    attempt = front.add("j2", source, [], duration=1.0, cut_source_at=40_000)
    dest = tmp_path / "got.avi"
    async with ClientSession() as session:
        client = FrontClient(session, Dispatch.from_kwargs(attempt.kwargs(front.url)))
        with pytest.raises(Unreachable):
            await client.download(dest, len(data))
        partial = dest.stat().st_size
        assert 0 < partial <= 40_000
        assert await client.download(dest, len(data)) == len(data)
        assert dest.read_bytes() == data
        assert attempt.source_requests == [None, f"bytes={partial}-"]
        # A file already whole is not fetched again; one longer than the source is.
        assert await client.download(dest, len(data)) == len(data)
        assert len(attempt.source_requests) == 2
        with pytest.raises(Refused):  # the front sends more than it said
            await client.download(tmp_path / "short.avi", len(data) - 1)
