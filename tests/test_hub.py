"""The hub on its own, driven with job events, with sockets that record what they get
or that never finish a send."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

from testkit.jobs import make_job
from vidd import hub as hub_mod
from vidd.hub import GOING_AWAY, TRY_AGAIN_LATER, Hub
from vidd.job import Status, new_id


class FakeSocket:
    """Records each message and when it arrived; `stuck` ones never finish a send."""

    def __init__(self, stuck: bool = False, clock=time.monotonic) -> None:
        self.clock = clock
        self.messages: list[dict] = []
        self.times: list[float] = []
        self.gate = asyncio.Event()
        if not stuck:
            self.gate.set()
        self.closed = False
        self.close_code: int | None = None

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await self.gate.wait()
        self.messages.append(json.loads(data))
        self.times.append(self.clock())

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed = True
        self.close_code = code
        return True


def job(job_id: str, status: Status = Status.RUNNING, progress: float = 0.0, name="a.avi"):
    return make_job(id=job_id, name=name, status=status, progress=progress)


def connect(hub: Hub, sock: FakeSocket):
    client = hub.connect(sock)
    client.start()
    return client


async def settle(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class FakeClock:
    """Time that moves only when the test says: the throttle's clock and its timers."""

    class Timer:
        def __init__(self, due: float, callback) -> None:
            self.due, self.callback, self.cancelled = due, callback, False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeClock.Timer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback) -> FakeClock.Timer:
        timer = FakeClock.Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    async def advance(self, seconds: float) -> None:
        """Let what is due now go out, then move time on timer by timer, firing each
        at its own moment, so that every send is seen at the time it happened."""
        await self._drain()
        target = self.now + seconds
        while due := [t for t in self.timers if t.due <= target]:
            timer = min(due, key=lambda t: t.due)
            self.timers.remove(timer)
            self.now = max(self.now, timer.due)
            if not timer.cancelled:
                timer.callback()
            await self._drain()
        self.now = target

    @staticmethod
    async def _drain() -> None:
        for _ in range(5):
            await asyncio.sleep(0)


async def test_progress_is_throttled_to_4_per_second_per_job():
    clock = FakeClock()
    hub = Hub(10, clock=clock, schedule=clock.call_later)
    sock = FakeSocket(clock=clock)
    connect(hub, sock)
    ids = [new_id(), new_id()]
    for i in range(100):  # 50 a second for 2 s, for each of two jobs
        for job_id in ids:
            hub.job_changed(job(job_id, progress=(i + 1) / 100), progress_only=True)
        await clock.advance(0.02)
    await clock.advance(0.3)  # the trailing update
    per_job = Counter(m["job"]["id"] for m in sock.messages)
    for job_id in ids:
        # 2.3 s at 4 a second: the first at once, then one every quarter second.
        assert 8 <= per_job[job_id] <= 10, per_job
        pairs = zip(sock.times, sock.messages, strict=True)
        times = [t for t, m in pairs if m["job"]["id"] == job_id]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 0.25 - 1e-9, gaps  # never two within a quarter second
        last = [m for m in sock.messages if m["job"]["id"] == job_id][-1]
        assert last["job"]["progress"] == 1.0  # the newest one always goes out in the end
    await hub.close()


async def test_state_changes_are_never_throttled_and_drop_stale_progress():
    hub = Hub(10)
    sock = FakeSocket()
    connect(hub, sock)
    job_id = new_id()
    hub.job_changed(job(job_id, progress=0.5), progress_only=True)
    hub.job_changed(job(job_id, progress=0.6), progress_only=True)  # held back by the throttle
    hub.job_changed(job(job_id, Status.DONE, progress=1.0), progress_only=False)
    hub.job_changed(job(job_id, Status.DONE, progress=1.0), progress_only=False)
    await asyncio.sleep(0.4)
    statuses = [(m["job"]["status"], m["job"]["progress"]) for m in sock.messages]
    # the queued 0.5 and the held-back 0.6 are older than "done": neither arrives after it
    first_done = statuses.index(("done", 1.0))
    assert statuses[first_done:] == [("done", 1.0), ("done", 1.0)]
    assert statuses[:first_done] in ([], [("running", 0.5)])
    await asyncio.sleep(0.3)
    assert len(sock.messages) == len(statuses)
    await hub.close()


async def test_progress_coalesces_in_a_slow_clients_queue():
    hub = Hub(10, progress_hz=1000)
    sock = FakeSocket(stuck=True)
    connect(hub, sock)
    job_id = new_id()
    for i in range(50):
        hub.job_changed(job(job_id, progress=i / 100), progress_only=True)
        await asyncio.sleep(0.002)
    sock.gate.set()
    await asyncio.sleep(0.1)
    # one was in flight when the socket stalled; the rest collapsed into the newest
    assert len(sock.messages) <= 2
    assert sock.messages[-1]["job"]["progress"] == 0.49
    await hub.close()


async def test_a_stuck_client_is_closed_and_never_delays_the_others():
    hub = Hub(10, queue_size=8)
    stuck, fine = FakeSocket(stuck=True), FakeSocket()
    connect(hub, stuck)
    connect(hub, fine)
    ids = [new_id() for _ in range(50)]
    sent_at = []
    for job_id in ids:
        sent_at.append(time.monotonic())
        hub.job_changed(job(job_id, Status.QUEUED), progress_only=False)
        await asyncio.sleep(0.001)
    await settle(lambda: len(fine.messages) == 50)
    assert [m["job"]["id"] for m in fine.messages] == ids  # every change, in order
    assert max(t - s for s, t in zip(sent_at, fine.times, strict=True)) < 0.5
    await settle(lambda: stuck.closed)
    assert stuck.close_code == TRY_AGAIN_LATER
    assert hub.evicted == 1 and len(hub.clients) == 1
    await hub.close()


async def test_a_send_that_never_completes_closes_the_client(monkeypatch):
    monkeypatch.setattr(hub_mod, "SEND_TIMEOUT_S", 0.2)
    hub = Hub(10)
    stuck = FakeSocket(stuck=True)
    connect(hub, stuck)
    hub.job_changed(job(new_id(), Status.QUEUED), progress_only=False)
    await settle(lambda: stuck.closed, timeout=2)
    assert hub.clients == set()
    await hub.close()


async def test_progress_is_dropped_before_state_changes_when_a_queue_is_full():
    hub = Hub(10, queue_size=4, progress_hz=1000)
    sock = FakeSocket(stuck=True)
    connect(hub, sock)
    await asyncio.sleep(0)
    running = [new_id() for _ in range(3)]
    for job_id in running:
        hub.job_changed(job(job_id, progress=0.1), progress_only=True)
    states = [new_id() for _ in range(3)]
    for job_id in states:
        hub.job_changed(job(job_id, Status.QUEUED), progress_only=False)
    assert sock.closed is False and len(hub.clients) == 1
    sock.gate.set()
    await settle(lambda: len([m for m in sock.messages if m["job"]["status"] == "queued"]) == 3)
    assert [m["job"]["id"] for m in sock.messages if m["job"]["status"] == "queued"] == states
    await hub.close()


async def test_deleted_events_and_close_with_1001():
    hub = Hub(10)
    a, b = FakeSocket(), FakeSocket()
    connect(hub, a)
    connect(hub, b)
    hub.job_deleted("abc")
    await settle(lambda: a.messages and b.messages)
    assert a.messages == [{"type": "deleted", "id": "abc"}] == b.messages
    await hub.close()
    assert a.close_code == GOING_AWAY and b.close_code == GOING_AWAY
    assert hub.clients == set()


async def test_events_before_start_wait_for_the_snapshot():
    hub = Hub(10)
    sock = FakeSocket()
    client = hub.connect(sock)
    hub.job_changed(job("j1", Status.QUEUED), progress_only=False)
    await asyncio.sleep(0.05)
    assert sock.messages == []  # the snapshot goes first
    await sock.send_str(hub_mod.snapshot_message([]))
    client.start()
    await settle(lambda: len(sock.messages) == 2)
    assert [m["type"] for m in sock.messages] == ["snapshot", "job"]
    await hub.close()


@pytest.mark.parametrize("max_clients", [1, 3])
async def test_full(max_clients):
    hub = Hub(max_clients)
    for _ in range(max_clients):
        assert hub.has_room()
        connect(hub, FakeSocket())
    assert not hub.has_room()
    await hub.close()


async def test_one_address_cannot_take_every_slot():
    """Before: five sockets from a stranger filled max_ws_clients=5 and the page got 503."""
    hub = Hub(5, max_per_address=2)
    stranger = [hub.connect(FakeSocket(), "203.0.113.7") for _ in range(2)]
    assert not hub.has_room("203.0.113.7")
    assert hub.has_room("127.0.0.1")  # the owner's page still gets in
    owner = hub.connect(FakeSocket(), "127.0.0.1")
    await hub.disconnect(stranger[0])
    assert hub.has_room("203.0.113.7")  # a slot freed is the address's again
    hub.evict(stranger[1], "test")
    assert hub._per_address == {"127.0.0.1": 1}
    await hub.disconnect(owner)
    await hub.close()
