"""Attempts: each dispatch of a job to a remote worker, its token and its lease, as rows
of the `attempts` table (store migration 9). Every attempt statement lives here.

An attempt is *live* while it is `dispatched` (in the broker's queue) or `claimed` (a
worker runs it). Only a live attempt's worker may talk to the front; any other state
is an end. A token is 256 random bits; only its sha256 is kept, and a presented one is
compared in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosqlite

from .job import now
from .store import Store, parse_time, time_text


class State(enum.StrEnum):
    DISPATCHED = "dispatched"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"  # claimed, then no heartbeat for lease_s
    CANCELLED = "cancelled"  # its job was cancelled or deleted
    SUPERSEDED = "superseded"  # its job went back to the queue or got a newer attempt


LIVE = (State.DISPATCHED, State.CLAIMED)
COLUMNS = (
    "id, job_id, number, token_hash, state, worker, dispatched_at, claimed_at, "
    "heartbeat_at, ended_at"
)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    id: str
    job_id: str
    number: int
    token_hash: str
    state: State
    worker: str | None
    dispatched_at: datetime
    claimed_at: datetime | None = None
    heartbeat_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(token_hash(token), self.token_hash)

    def last_seen(self) -> datetime:
        """The last sign of life of its worker (or its dispatch)."""
        return self.heartbeat_at or self.claimed_at or self.dispatched_at


class Attempts:
    """The attempt rows, over the store's connections."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"<Attempts {self.store.path}>"

    async def new(self, job_id: str) -> tuple[Attempt, str]:
        """A fresh attempt at a job (dispatched), and its token; any attempt of the job
        still live is superseded in the same statement's wake."""
        await self.supersede(job_id)
        attempt_id, token = secrets.token_urlsafe(16), new_token()
        async with self.store.writer.execute(
            f"""INSERT INTO attempts (id, job_id, number, token_hash, state, dispatched_at)
                VALUES (?, ?, (SELECT COALESCE(MAX(number), 0) + 1 FROM attempts
                               WHERE job_id = ?), ?, 'dispatched', ?)
                RETURNING {COLUMNS}""",
            (attempt_id, job_id, job_id, token_hash(token), time_text(now())),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return _attempt(row), token

    async def get(self, attempt_id: str) -> Attempt | None:
        async with self.store.writer.execute(
            f"SELECT {COLUMNS} FROM attempts WHERE id = ?", (attempt_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _attempt(row)

    async def live_of(self, job_id: str) -> Attempt | None:
        """The job's live attempt, if it has one."""
        async with self.store.writer.execute(
            f"""SELECT {COLUMNS} FROM attempts WHERE job_id = ? AND state IN (?, ?)
                ORDER BY number DESC LIMIT 1""",
            (job_id, *LIVE),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _attempt(row)

    async def claim(self, attempt_id: str, worker: str) -> Attempt | None:
        """dispatched -> claimed, once. None when it was not dispatched any more."""
        t = time_text(now())
        async with self.store.writer.execute(
            f"""UPDATE attempts SET state = 'claimed', worker = ?, claimed_at = ?,
                    heartbeat_at = ?
                WHERE id = ? AND state = 'dispatched' RETURNING {COLUMNS}""",
            (worker, t, t, attempt_id),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _attempt(row)

    async def heartbeat(self, attempt_id: str, at: datetime | None = None) -> bool:
        """Record a claimed attempt's sign of life (now, or `at`); False when it is not
        claimed."""
        async with self.store.writer.execute(
            "UPDATE attempts SET heartbeat_at = ? WHERE id = ? AND state = 'claimed' RETURNING 1",
            (time_text(at or now()), attempt_id),
        ) as cur:
            return await cur.fetchone() is not None

    async def end(self, attempt_id: str, state: State, *, was: tuple[State, ...] = LIVE) -> bool:
        """Move a live attempt (or one in `was`) to an end state; False if it was not."""
        marks = ", ".join("?" for _ in was)
        async with self.store.writer.execute(
            f"UPDATE attempts SET state = ?, ended_at = ? WHERE id = ? AND state IN ({marks}) "
            "RETURNING 1",
            (str(state), time_text(now()), attempt_id, *was),
        ) as cur:
            return await cur.fetchone() is not None

    async def supersede(self, job_id: str) -> int:
        """Every live attempt of a job ends superseded (it went back to the queue, or a
        fresh attempt replaces them)."""
        async with self.store.writer.execute(
            "UPDATE attempts SET state = 'superseded', ended_at = ? "
            "WHERE job_id = ? AND state IN (?, ?) RETURNING 1",
            (time_text(now()), job_id, *LIVE),
        ) as cur:
            return len(list(await cur.fetchall()))

    async def supersede_all_except(self, keep: set[str]) -> int:
        """At start-up: live attempts of every job not adopted (`keep`) end: a claimed
        one as lost (its worker was not heard from in time), a dispatched one superseded."""
        async with self.store.writer.execute(
            f"SELECT {COLUMNS} FROM attempts WHERE state IN (?, ?)", LIVE
        ) as cur:
            rows = [_attempt(r) for r in await cur.fetchall()]
        ended = 0
        for a in rows:
            state = State.LOST if a.state is State.CLAIMED else State.SUPERSEDED
            if a.job_id not in keep and await self.end(a.id, state):
                ended += 1
        return ended

    async def adoptable(self, lease_s: float) -> dict[str, Attempt]:
        """Running jobs whose live attempt is claimed and was heard from within lease_s:
        job id -> that attempt (their workers go on; the pool waits for them again)."""
        found: dict[str, Attempt] = {}
        oldest = now() - timedelta(seconds=lease_s)
        for job_id in await self.store.running_ids():
            attempt = await self.live_of(job_id)
            if (
                attempt is not None
                and attempt.state is State.CLAIMED
                and attempt.last_seen() > oldest
            ):
                found[job_id] = attempt
        return found

    async def workers_seen(self, since: datetime) -> list[tuple[str, str | None, datetime]]:
        """(worker, the job of its claimed attempt or None, last seen) for each worker
        heard from since `since`, most recently seen first."""
        async with self.store.writer.execute(
            # A claim sets heartbeat_at too: every claimed attempt has one (indexed).
            f"SELECT {COLUMNS} FROM attempts WHERE heartbeat_at >= ? AND worker IS NOT NULL",
            (time_text(since),),
        ) as cur:
            rows = [_attempt(r) for r in await cur.fetchall()]
        seen: dict[str, tuple[str | None, datetime]] = {}
        for a in rows:
            assert a.worker is not None
            job = a.job_id if a.state is State.CLAIMED else None
            at = a.last_seen()
            before = seen.get(a.worker)
            if before is None:
                seen[a.worker] = (job, at)
            else:
                seen[a.worker] = (before[0] or job, max(before[1], at))
        return sorted(
            ((name, job, at) for name, (job, at) in seen.items()), key=lambda x: x[2], reverse=True
        )


def _attempt(row: aiosqlite.Row) -> Attempt:
    dispatched = parse_time(row["dispatched_at"])
    assert dispatched is not None
    return Attempt(
        id=row["id"],
        job_id=row["job_id"],
        number=row["number"],
        token_hash=row["token_hash"],
        state=State(row["state"]),
        worker=row["worker"],
        dispatched_at=dispatched,
        claimed_at=parse_time(row["claimed_at"]),
        heartbeat_at=parse_time(row["heartbeat_at"]),
        ended_at=parse_time(row["ended_at"]),
    )
