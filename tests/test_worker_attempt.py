"""worker.run_attempt in this process (no Celery): the ways an attempt ends that the
process tests in test_worker.py do not need a broker for: an encode that fails is
reported with its code and log tail, a profile argument vidd sets itself is refused,
the output is sent again after a 5xx, a 422 ends the attempt, and the heartbeat's
cadence without news."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from testkit.fake_front import Attempt, FakeFront
from testkit.media import make_clip
from vidd.celery_app import Dispatch
from vidd.config import DEFAULT_PROFILES
from vidd.worker import FrontAway, Heartbeat, Settings, private_config, run_attempt

WEB = DEFAULT_PROFILES["web"].handbrake_args()  # the front's default profile, as it sends it
HANDBRAKE = shutil.which("HandBrakeCLI") or "/usr/bin/HandBrakeCLI"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("attempt-clips") / "clip.avi", seconds=1)


@pytest.fixture
async def front():
    f = await FakeFront().start()
    yield f
    await f.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(name="in-process", work_dir=tmp_path / "work", handbrake=HANDBRAKE)


async def run(front: FakeFront, attempt: Attempt, settings: Settings) -> str:
    return await run_attempt(Dispatch.from_kwargs(attempt.kwargs(front.url)), settings)


async def test_a_failed_encode_is_reported_with_its_code_and_log(front, settings, tmp_path):
    not_a_video = tmp_path / "notes.avi"
    not_a_video.write_bytes(b"these are notes, not a video\n" * 100)
    attempt = front.add("jobf", not_a_video, WEB, duration=10.0)
    outcome = await run(front, attempt, settings)
    assert outcome.startswith("failed: ")
    (failure,) = attempt.failures
    assert failure["code"] in ("exit_code", "no_workdone", "workdone_error", "no_output")
    assert failure["message"] and "HandBrake" in failure["log_tail"]
    assert attempt.output is None and attempt.logs == []
    assert list(settings.work_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["-o", "/etc/passwd"], "-o"),
        (["-o/tmp/x.mp4"], "-o/tmp/x.mp4"),
        (["--outp", "x"], "--outp"),
    ],
)
async def test_a_profile_argument_vidd_sets_itself_fails_the_attempt(
    front, settings, clip, extra, named
):
    # The message's arguments come from the broker: every form getopt reads is refused.
    attempt = front.add("jobr", clip, [*WEB, *extra])
    outcome = await run(front, attempt, settings)
    assert outcome == f"failed: bad_profile: {named} is set by vidd itself"
    assert attempt.failures[0]["code"] == "bad_profile"
    assert attempt.source_requests == []  # refused before anything was fetched


async def test_the_output_is_sent_again_after_a_5xx(front, settings, clip):
    attempt = front.add("job503", clip, WEB, output_answers=[503, 502])
    outcome = await run(front, attempt, settings)
    assert outcome.startswith("done: job job503"), outcome
    assert attempt.output_puts == 3 and attempt.output is not None


async def test_an_output_that_drops_after_longer_than_the_lease_is_sent_again(
    front, settings, clip
):
    # The patience for a failing call counts from its failure, not from when the call
    # began: a transfer longer than lease_s that drops once is not given up at once.
    attempt = front.add("jobdrop", clip, WEB, lease_s=1.0)
    attempt.output_answers, attempt.output_answer_after_s = [503], 1.5
    outcome = await run(front, attempt, settings)
    assert outcome.startswith("done: job jobdrop"), outcome
    assert attempt.output_puts == 2 and attempt.output is not None


async def test_an_output_refused_with_422_ends_the_attempt(front, settings, clip):
    attempt = front.add("job422", clip, WEB, output_answers=[422])
    outcome = await run(front, attempt, settings)
    assert outcome == "output refused by the front (bad_output: bad_output)"
    assert attempt.output_puts == 1 and attempt.failures == []


async def test_a_claim_409_or_a_wrong_token_drops_the_attempt(front, settings, clip):
    superseded = front.add("job409", clip, WEB, claim_status=409)
    assert await run(front, superseded, settings) == (
        "dropped: the front refused the claim (409 superseded)"
    )
    stranger = front.add("job401", clip, WEB)
    stranger.token = "not-" + stranger.token  # the message's token no longer matches
    kwargs = Dispatch(stranger.id, "wrong", front.url, tuple(WEB)).to_kwargs()
    outcome = await run_attempt(Dispatch.from_kwargs(kwargs), settings)
    assert outcome == "dropped: the front refused the claim (401 unauthorized)"


async def test_a_message_whose_attempt_id_is_a_path_is_dropped_unsent(front, settings):
    dispatch = Dispatch("../../jobs", "t1", front.url, tuple(WEB))
    outcome = await run_attempt(dispatch, settings)
    assert outcome == "dropped: no claim (the message's attempt id or token is not URL-safe)"
    assert list(settings.work_dir.iterdir()) == []


async def test_an_output_over_the_fronts_limit_is_reported_not_sent(front, settings, clip):
    attempt = front.add("jobbig", clip, WEB, max_output_bytes=1000)
    outcome = await run(front, attempt, settings)
    assert outcome.startswith("failed: output_too_large")
    assert attempt.output_puts == 0


async def test_no_front_at_all_hands_the_message_back_after_the_claims_patience(settings):
    # Dropped (acked), the message would leave the front waiting for a claim forever.
    dispatch = Dispatch("a1", "t1", "http://127.0.0.1:9", tuple(WEB))
    quick = Settings(settings.name, settings.work_dir, settings.handbrake, claim_patience_s=1.0)
    started = time.monotonic()
    with pytest.raises(FrontAway, match="no claim"):
        await run_attempt(dispatch, quick)
    assert 0.5 < time.monotonic() - started < 5.0
    assert list(settings.work_dir.iterdir()) == []


def test_the_task_requeues_its_message_when_the_front_does_not_answer_the_claim(settings):
    from celery.exceptions import Reject

    from vidd.celery_app import make_app
    from vidd.worker_process import register

    quick = Settings(settings.name, settings.work_dir, settings.handbrake, claim_patience_s=0.5)
    task = register(make_app("memory://", max_encode_s=60), quick)
    kwargs = Dispatch("a1", "t1", "http://127.0.0.1:9", tuple(WEB)).to_kwargs()
    with pytest.raises(Reject) as e:
        task(**kwargs)  # the task's function itself, in this process
    assert e.value.requeue


async def test_the_heartbeat_posts_without_news_at_least_every_quarter_lease(front, clip):
    from aiohttp import ClientSession

    from vidd.front_client import FrontClient

    attempt = front.add("jobhb", clip, WEB)
    async with ClientSession() as session:
        client = FrontClient(session, Dispatch.from_kwargs(attempt.kwargs(front.url)))
        beat = Heartbeat(client, lease_s=2.0, interval_s=0.25)
        task = asyncio.create_task(beat.run())
        await asyncio.sleep(1.8)
        for i in range(12):  # news 20 times a second: still at most 4 posts a second
            beat.update(i / 12, 10.0, 1.0)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        task.cancel()
    times = [t for t, _ in attempt.progress]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert 4 <= len(times) <= 8, gaps
    assert max(gaps[:3]) <= 0.5 + 0.3  # without news: every lease_s / 4
    assert min(gaps) >= 0.2  # with news: at most 4 a second
    assert attempt.progress[-1][1]["progress"] == pytest.approx(11 / 12)


def test_the_private_config_is_the_work_folder_and_the_messages_args(tmp_path):
    settings = Settings(name="w", work_dir=tmp_path, handbrake=HANDBRAKE)
    cfg = private_config(settings, tmp_path / "attempt-x", ("-e", "x264"))
    assert cfg.storage.data_dir == tmp_path / "attempt-x"
    assert cfg.encode.profiles[cfg.encode.default_profile].handbrake_args() == ["-e", "x264"]
    assert cfg.encode.ffmpeg == "" and cfg.encode.kill_grace_s <= 1.0


async def test_an_encode_longer_than_max_encode_s_is_stopped_and_reported(front, tmp_path):
    slow = make_clip(tmp_path / "slow.avi", seconds=10)
    args = ["-e", "x264", "--encoder-preset", "placebo", "-q", "22"]
    attempt = front.add("jobslow", slow, args)
    quick = Settings("w", tmp_path / "work", HANDBRAKE, max_encode_s=1.0)
    started = time.monotonic()
    outcome = await run(front, attempt, quick)
    assert outcome == "failed: too_long: the encode took longer than 1 s"
    assert time.monotonic() - started < 6.0
    assert attempt.failures[0]["code"] == "too_long" and attempt.output is None
    assert list((tmp_path / "work").iterdir()) == []


def test_the_task_gives_the_pool_process_its_signal_handlers_back(settings):
    import signal

    from vidd.celery_app import make_app
    from vidd.worker_process import register

    def billiards(signum, frame):  # stands for billiard's clean-exit handler
        raise AssertionError("not called here")

    before = {s: signal.getsignal(s) for s in (signal.SIGQUIT, signal.SIGTERM)}
    signal.signal(signal.SIGQUIT, billiards)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        task = register(make_app("memory://", max_encode_s=60), settings)
        task(**Dispatch("../x", "t1", "http://127.0.0.1:9", tuple(WEB)).to_kwargs())
        assert signal.getsignal(signal.SIGQUIT) is billiards
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
