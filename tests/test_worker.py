"""`vidd worker` (worker.py, worker_process.py, front_client.py) as a real Celery worker
process, fed by a real redis-server through the front's own message, against a small
front speaking contracts.md's worker routes (testkit/fake_front.py), encoding with the
real HandBrakeCLI on clips ffmpeg makes here."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from testkit.celery_worker import WorkerProcess, handbrake_pids, send
from testkit.fake_front import Attempt, FakeFront
from testkit.media import make_clip
from testkit.redis import RedisServer
from vidd import mp4
from vidd.config import DEFAULT_PROFILES

WEB = DEFAULT_PROFILES["web"].handbrake_args()  # the front's default profile, as it sends it
# x264 at its slowest: a 20 s clip takes several seconds, time enough to stop it midway.
SLOW = ["-e", "x264", "--encoder-preset", "placebo", "-q", "22", "-B", "96"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("worker-clips")
    return {
        "short": make_clip(folder / "short.avi", seconds=2),
        "medium": make_clip(folder / "medium.avi", seconds=6),  # a few seconds with SLOW
        "long": make_clip(folder / "long.avi", seconds=20),
    }


@pytest.fixture
def broker(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture
async def front():
    f = await FakeFront().start()
    yield f
    await f.stop()


@pytest.fixture
def worker(broker: RedisServer, tmp_path: Path):
    w = WorkerProcess(broker.url, tmp_path / "worker").start()
    yield w
    w.stop()


def queue_state(broker: RedisServer) -> tuple[int, int]:
    """(messages waiting in the queue `vidd`, messages delivered but not acked)."""
    r = redis.Redis.from_url(broker.url)
    try:
        return int(r.llen("vidd")), int(r.hlen("unacked"))
    finally:
        r.close()


async def acked(broker: RedisServer) -> None:
    """Until the queue is empty and nothing is left unacked (the ack follows the task's end)."""
    await until(lambda: queue_state(broker) == (0, 0), 20, "the message to be acked")


async def dispatch(broker: RedisServer, front: FakeFront, attempt: Attempt) -> None:
    await asyncio.to_thread(send, broker.url, attempt.kwargs(front.url), attempt.id)


async def until(predicate, timeout: float, what: str, every: float = 0.05) -> float:
    """Wait until predicate() is true; returns when it became so (monotonic)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)
    return time.monotonic()


async def encoding(worker: WorkerProcess, attempt: Attempt) -> None:
    """Wait until HandBrake runs for this attempt and has reported progress."""
    await until(
        lambda: (
            handbrake_pids(worker.work_dir)
            and any(body["progress"] > 0 for _, body in attempt.progress)
        ),
        60,
        "HandBrake to encode",
    )


async def test_an_attempt_is_claimed_downloaded_after_a_cut_encoded_and_sent_back(
    broker, front, worker, clips, tmp_path
):
    # Long enough to be heard several times, however fast the machine (the short clip's
    # web encode took under a second on an idle one: two progress posts).
    source = clips["medium"]
    cut = source.stat().st_size // 2
    attempt = front.add("job1", source, SLOW, lease_s=4.0, cut_source_at=cut)
    await dispatch(broker, front, attempt)
    await until(lambda: attempt.output is not None, 90, "the output")
    await worker.wait_log(f"attempt {attempt.id}: done")

    assert attempt.claims == 1
    # The first GET dropped mid-body; the second asked only for the rest.
    first, second, *more = attempt.source_requests
    assert first is None and not more
    assert second is not None and second.startswith("bytes=")
    assert 0 < int(second.removeprefix("bytes=").rstrip("-")) <= cut

    out = tmp_path / "out.mp4"
    out.write_bytes(attempt.output)
    info = mp4.inspect(out).media
    assert info.video_codec and abs(info.duration - attempt.duration) < 1.0
    assert attempt.output_puts == 1 and attempt.failures == []
    assert attempt.logs and "vidd: repackaged" not in attempt.logs[0]

    # Progress: at most 4 a second, and a heartbeat at least every lease_s / 4 (1 s).
    times = [t for t, _ in attempt.progress]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 3
    assert min(gaps) >= 0.2, gaps
    assert max(gaps) <= 1.0 + 0.75, gaps
    values = [body["progress"] for _, body in attempt.progress]
    assert values == sorted(values) and values[-1] > 0.5

    await acked(broker)
    assert worker.attempt_folders() == []  # the work folder is gone
    assert broker.password not in worker.log() and attempt.token not in worker.log()


async def test_a_claim_refused_with_409_drops_the_task_and_acks_it(broker, front, worker, clips):
    attempt = front.add("job2", clips["short"], WEB, claim_status=409)
    await dispatch(broker, front, attempt)
    await worker.wait_log(f"attempt {attempt.id}: dropped: the front refused the claim (409")
    await asyncio.sleep(1.0)
    assert attempt.claims == 1  # not redelivered
    assert attempt.source_requests == [] and attempt.progress == []
    await acked(broker)
    assert worker.attempt_folders() == []


async def test_a_message_that_is_not_a_vidd_attempt_is_dropped(broker, front, worker):
    await asyncio.to_thread(send, broker.url, {"v": 1, "attempt": ""}, "not-an-attempt")
    await worker.wait_log("dropped a message that is not a vidd attempt: bad 'attempt'")
    await acked(broker)


async def test_410_on_progress_stops_handbrake_within_2_s(broker, front, worker, clips):
    attempt = front.add("job3", clips["long"], SLOW)
    await dispatch(broker, front, attempt)
    await encoding(worker, attempt)
    posts = len(attempt.progress)
    attempt.stop = True
    await until(lambda: len(attempt.progress) > posts, 5, "the next progress post")
    said_stop = attempt.progress[posts][0]
    gone = await until(lambda: not handbrake_pids(worker.work_dir), 10, "HandBrake to go")
    assert gone - said_stop < 2.0
    await worker.wait_log(f"attempt {attempt.id}: stopped: the front said stop (410 stop)")
    assert attempt.output is None and attempt.failures == []
    await acked(broker)  # dropped: acked, not handed back
    assert worker.attempt_folders() == []


async def test_a_front_gone_for_lease_s_stops_handbrake(broker, front, worker, clips):
    lease_s = 3.0
    attempt = front.add("job4", clips["long"], SLOW, lease_s=lease_s)
    await dispatch(broker, front, attempt)
    await encoding(worker, attempt)
    last_heard = attempt.progress[-1][0]
    await front.stop()
    gone = await until(lambda: not handbrake_pids(worker.work_dir), 15, "HandBrake to go")
    # Not before the lease has lapsed, and soon after.
    assert lease_s - 0.5 <= gone - last_heard <= lease_s + 3.0
    await worker.wait_log(f"no heartbeat reached the front for {lease_s:g} s")
    assert attempt.output is None and attempt.failures == []
    assert worker.attempt_folders() == []


async def test_a_front_restart_shorter_than_lease_s_does_not_stop_the_encode(
    broker, front, worker, clips
):
    attempt = front.add("job5", clips["medium"], SLOW, lease_s=4.0)
    await dispatch(broker, front, attempt)
    await encoding(worker, attempt)
    await front.stop()
    await asyncio.sleep(1.5)
    await front.start()  # the same port
    await until(lambda: attempt.output is not None, 90, "the output")
    assert attempt.failures == [] and attempt.claims == 1
    await worker.wait_log(f"attempt {attempt.id}: done")


async def test_sigterm_mid_encode_stops_handbrake_and_hands_the_message_back(
    broker, front, worker, clips
):
    attempt = front.add("job6", clips["long"], SLOW)
    await dispatch(broker, front, attempt)
    await encoding(worker, attempt)
    worker.signal(15)
    sent = time.monotonic()
    gone = await until(lambda: not handbrake_pids(worker.work_dir), 10, "HandBrake to go")
    assert gone - sent < 5.0
    await until(lambda: worker.proc.poll() is not None, 20, "the worker to exit")
    assert worker.proc.returncode == 0  # a stop asked for: systemd sees a clean exit
    assert queue_state(broker) == (1, 0)  # back in the queue for another worker
    assert attempt.output is None and attempt.failures == []
    assert attempt.released == 1  # the front was told at once, not left to the lease
    assert worker.attempt_folders() == []


async def test_the_broker_going_away_mid_encode_does_not_stop_it(broker, front, worker, clips):
    attempt = front.add("job7", clips["medium"], SLOW)
    await dispatch(broker, front, attempt)
    await encoding(worker, attempt)
    await asyncio.to_thread(broker.stop)  # SIGTERM: Redis writes its append-only file
    await worker.wait_log("Connection to broker lost")
    await asyncio.sleep(0.3)
    assert handbrake_pids(worker.work_dir)  # still encoding
    await asyncio.to_thread(broker.start)  # the same port and data
    await until(lambda: attempt.output is not None, 90, "the output")
    await worker.wait_log(f"attempt {attempt.id}: done")
    await acked(broker)  # after the broker's return
    await asyncio.sleep(1.0)
    assert attempt.claims == 1  # not delivered again
    assert "CPendingDeprecationWarning" not in worker.log()  # the choice is made, not defaulted


async def test_concurrency_2_runs_two_attempts_at_once(broker, front, clips, tmp_path):
    w = WorkerProcess(broker.url, tmp_path / "worker2", name="two-slots").start(
        "--concurrency", "2"
    )
    try:
        attempts = [front.add(f"jobc{i}", clips["medium"], SLOW) for i in range(2)]
        for a in attempts:
            await dispatch(broker, front, a)
        await until(lambda: len(handbrake_pids(w.work_dir)) == 2, 60, "two HandBrakes at once")
        assert all(a.claims == 1 for a in attempts)
        for a in attempts:
            a.stop = True  # no need to see them through
        await until(lambda: not handbrake_pids(w.work_dir), 10, "both HandBrakes to go")
        await acked(broker)
    finally:
        w.stop()
