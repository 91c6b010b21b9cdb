"""The store: every SQL statement vidd runs, over one aiosqlite connection in WAL mode.

Each write is a single statement in autocommit mode, so no transaction ever spans an
await. State changes go through `transition`, which only moves a job along
`job.TRANSITIONS`. Listeners hear about every change, which is how the pool wakes up
and how the WebSocket hub learns what to push.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from .job import (
    IllegalTransition,
    Job,
    JobError,
    MediaInfo,
    Status,
    now,
    sources_of,
)

log = logging.getLogger(__name__)


# Each entry upgrades the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        profile TEXT NOT NULL,
        origin TEXT NOT NULL,
        source_ext TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        progress REAL NOT NULL DEFAULT 0,
        fps REAL,
        eta_s REAL,
        source TEXT,
        output TEXT,
        poster INTEGER NOT NULL DEFAULT 0,
        error_code TEXT,
        error_message TEXT,
        log_tail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX jobs_status_seq ON jobs (status, seq);
    -- Counts per state, kept by triggers so /api/status never scans the table.
    CREATE TABLE job_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL);
    CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_counts (status, n) VALUES (new.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET n = n - 1 WHERE status = old.status;
    END;
    CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs
        WHEN old.status <> new.status BEGIN
        UPDATE job_counts SET n = n - 1 WHERE status = old.status;
        INSERT INTO job_counts (status, n) VALUES (new.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
    """,
    # 2: the write-ahead record of an admission remembers where its file came from.
    """
    ALTER TABLE jobs ADD COLUMN intake_path TEXT;
    -- One row the health check rewrites: proof that the database takes writes.
    CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at TEXT NOT NULL);
    """,
    # 3: browser sessions, kept server-side. Only a hash of the cookie is stored, and
    # the fingerprint of the token they were opened with (a new token ends them all).
    """
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        token_fp TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        address TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    """,
    # 4 (inbox): where a job's file came from and where its result went. `publish_pending`
    # is set with `done` in one UPDATE, so a crash before publishing is finished at start.
    """
    ALTER TABLE jobs ADD COLUMN folder TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN rejected_as TEXT;
    ALTER TABLE jobs ADD COLUMN repackaged INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN publish_pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN published_as TEXT;
    ALTER TABLE jobs ADD COLUMN publish_note TEXT;
    CREATE INDEX jobs_publish_pending ON jobs (publish_pending) WHERE publish_pending = 1;
    """,
    # 5: name search. A trigram index of job names (any 3+ characters of a name find it,
    # in any case), its text kept in jobs (external content) and in step by triggers.
    """
    CREATE VIRTUAL TABLE job_names USING fts5(
        name, content = 'jobs', content_rowid = 'seq', tokenize = 'trigram'
    );
    INSERT INTO job_names (job_names) VALUES ('rebuild');
    CREATE TRIGGER jobs_name_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_names (rowid, name) VALUES (new.seq, new.name);
    END;
    CREATE TRIGGER jobs_name_delete AFTER DELETE ON jobs BEGIN
        INSERT INTO job_names (job_names, rowid, name) VALUES ('delete', old.seq, old.name);
    END;
    CREATE TRIGGER jobs_name_update AFTER UPDATE OF name ON jobs BEGIN
        INSERT INTO job_names (job_names, rowid, name) VALUES ('delete', old.seq, old.name);
        INSERT INTO job_names (rowid, name) VALUES (new.seq, new.name);
    END;
    """,
    # 6: resumable (tus) uploads: one row each, beside its partial file in uploads/.
    # Times are Unix seconds (the uploads' clock is injectable); `job_id` once it is a job.
    """
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        length INTEGER NOT NULL,
        received INTEGER NOT NULL DEFAULT 0,
        name TEXT NOT NULL,
        profile TEXT,
        owner TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        job_id TEXT
    ) WITHOUT ROWID;
    CREATE INDEX uploads_expires_at ON uploads (expires_at);
    """,
    # 7: the name index holds each job's state too, so that a search within some states
    # ("failed" jobs named "holiday") is counted by the index alone, which skips to the
    # jobs in those states instead of looking up every job with the name.
    """
    DROP TRIGGER jobs_name_insert;
    DROP TRIGGER jobs_name_delete;
    DROP TRIGGER jobs_name_update;
    DROP TABLE job_names;
    CREATE VIRTUAL TABLE job_names USING fts5(
        name, status, content = 'jobs', content_rowid = 'seq', tokenize = 'trigram'
    );
    INSERT INTO job_names (job_names) VALUES ('rebuild');
    CREATE TRIGGER jobs_name_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_names (rowid, name, status) VALUES (new.seq, new.name, new.status);
    END;
    CREATE TRIGGER jobs_name_delete AFTER DELETE ON jobs BEGIN
        INSERT INTO job_names (job_names, rowid, name, status)
            VALUES ('delete', old.seq, old.name, old.status);
    END;
    CREATE TRIGGER jobs_name_update AFTER UPDATE OF name, status ON jobs
        WHEN old.name IS NOT new.name OR old.status IS NOT new.status BEGIN
        INSERT INTO job_names (job_names, rowid, name, status)
            VALUES ('delete', old.seq, old.name, old.status);
        INSERT INTO job_names (rowid, name, status) VALUES (new.seq, new.name, new.status);
    END;
    """,
    # 8: a done job's poster is made just after it is marked done (pool.py); until then
    # `poster_pending` says it is owed, so a crash in between is made good at the next start.
    """
    ALTER TABLE jobs ADD COLUMN poster_pending INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_poster_pending ON jobs (seq) WHERE poster_pending = 1;
    """,
    # 9 (remote workers, attempts.py): each dispatch of a job to a remote worker is an
    # attempt with its own token (only its sha256 kept) and lease; the job names the
    # worker that runs or ran it.
    """
    CREATE TABLE attempts (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        token_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        worker TEXT,
        dispatched_at TEXT NOT NULL,
        claimed_at TEXT,
        heartbeat_at TEXT,
        ended_at TEXT
    ) WITHOUT ROWID;
    CREATE INDEX attempts_job ON attempts (job_id, number);
    CREATE INDEX attempts_live ON attempts (state) WHERE state IN ('dispatched', 'claimed');
    CREATE INDEX attempts_heard ON attempts (heartbeat_at) WHERE heartbeat_at IS NOT NULL;
    ALTER TABLE jobs ADD COLUMN worker TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

# Everything but the log tail, which only the single-job view needs.
LIST_COLUMNS = (
    "seq, id, name, status, profile, origin, source_ext, created_at, started_at, "
    "finished_at, progress, fps, eta_s, source, output, poster, error_code, error_message"
    ", folder, rejected_as, repackaged, published_as, publish_note, worker"
)
ALL_COLUMNS = LIST_COLUMNS + ", log_tail"
INSERT_SQL = """INSERT INTO jobs (id, name, status, profile, origin, source_ext, created_at,
        started_at, finished_at, progress, source, output, poster, error_code, error_message,
        log_tail, intake_path, folder)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
# Columns a transition may set besides its own (`more`): what the inbox records.
MORE_COLUMNS = frozenset({"rejected_as", "repackaged", "publish_pending", "poster_pending"})
# How a job can be born: through the intake (admitting, then queued or rejected), or
# already queued or rejected.
NEW_STATES = frozenset({Status.ADMITTING, Status.QUEUED, Status.REJECTED})
# What add_many may import besides: jobs that have ended. Never one that is running.
IMPORTABLE_STATES = NEW_STATES | {Status.DONE, Status.FAILED, Status.CANCELLED}


class Listener(Protocol):
    def job_changed(self, job: Job, *, progress_only: bool) -> None: ...

    def job_deleted(self, job_id: str) -> None: ...


class StoreClosed(Exception):
    pass


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # A second connection for reads: in WAL mode they never wait for the writer, so
        # the API keeps answering while a write waits out a lock someone else holds.
        self._reader: aiosqlite.Connection | None = None
        # A third for name searches: a scan of 100k names never holds up the other reads.
        self._searcher: aiosqlite.Connection | None = None
        self._listeners: list[Listener] = []
        # Counts per state, kept between changes: /api/status asks far more often than
        # jobs change state. `_generation` keeps a count read across a change from sticking.
        self._counts: dict[str, int] | None = None
        self._generation = 0

    async def open(self) -> None:
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            self._db.row_factory = aiosqlite.Row
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = NORMAL")
            await self._db.execute("PRAGMA busy_timeout = 5000")
            await self._migrate()
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            self._reader.row_factory = aiosqlite.Row
            await self._reader.execute("PRAGMA busy_timeout = 5000")
            await self._reader.execute("PRAGMA query_only = 1")
            self._searcher = await aiosqlite.connect(self.path, isolation_level=None)
            self._searcher.row_factory = aiosqlite.Row
            await self._searcher.execute("PRAGMA busy_timeout = 5000")
            await self._searcher.execute("PRAGMA query_only = 1")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        searcher, self._searcher = self._searcher, None
        if searcher is not None:
            await searcher.close()
        reader, self._reader = self._reader, None
        db, self._db = self._db, None
        if reader is not None:
            await reader.close()
        if db is not None:
            await db.close()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreClosed("the store is closed")
        return self._db

    @property
    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreClosed("the store is closed")
        return self._reader

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear about every change from now on; returns the undo."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def _migrate(self) -> None:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this vidd ({SCHEMA_VERSION})"
            )
        for i in range(version, SCHEMA_VERSION):
            script = f"BEGIN IMMEDIATE; {MIGRATIONS[i]}; PRAGMA user_version = {i + 1}; COMMIT;"
            await self._conn.executescript(script)
            log.info("store: schema migrated to version %d", i + 1)

    async def check_writable(self) -> None:
        """Raise unless a write goes through (locked, read-only, full, closed)."""
        await self._conn.execute(
            "INSERT INTO health (id, checked_at) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            (time_text(now()),),
        )

    # --- reads ---------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self._read.execute(
            f"SELECT {ALL_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return await self._with_position(_job(row))

    async def list_jobs(
        self, *, status: Status | None = None, limit: int = 50, before: int | None = None
    ) -> list[Job]:
        """Newest first. `before` is the `seq` of the last job of the previous page."""
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = ?")
            args.append(str(status))
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        sql = f"SELECT {LIST_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        async with self._read.execute(sql, (*args, limit)) as cur:
            jobs = [_job(row) for row in await cur.fetchall()]
        return await self._with_positions(jobs)

    async def seq_of(self, job_id: str) -> int | None:
        async with self._read.execute("SELECT seq FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else None

    async def counts(self) -> dict[str, int]:
        if self._counts is not None:
            return dict(self._counts)
        generation = self._generation
        counts = {str(s): 0 for s in Status}
        async with self._read.execute("SELECT status, n FROM job_counts") as cur:
            for row in await cur.fetchall():
                counts[row[0]] = int(row[1])
        if generation == self._generation:
            self._counts = counts
        return dict(counts)

    def _state_changed(self) -> None:
        self._generation += 1
        self._counts = None

    async def queue_position(self, seq: int) -> int:
        """How many queued jobs are ahead of the queued job with this seq."""
        async with self._read.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?", (seq,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _with_position(self, job: Job) -> Job:
        if job.status is not Status.QUEUED:
            return job
        return _replace(job, queue_position=await self.queue_position(job.seq))

    async def _with_positions(self, jobs: list[Job]) -> list[Job]:
        # A page is contiguous in seq among the queued jobs it holds, so one count
        # gives the position of the oldest; the rest follow by rank.
        queued = sorted((j for j in jobs if j.status is Status.QUEUED), key=lambda j: j.seq)
        if not queued:
            return jobs
        base = await self.queue_position(queued[0].seq)
        rank = {j.id: base + i for i, j in enumerate(queued)}
        return [_replace(j, queue_position=rank[j.id]) if j.id in rank else j for j in jobs]

    # --- the job list: several states, a name search, how many match ----------------

    async def find_jobs(
        self,
        *,
        statuses: Collection[Status] = (),
        name: str = "",
        limit: int = 50,
        before: int | None = None,
    ) -> list[Job]:
        """Newest first: jobs in any of `statuses` (every state when empty) whose name
        holds `name` in any case (every name when empty). `before` is a `seq`."""
        source, where, args, order = _job_filter(statuses, name)
        if before is not None:
            where.append(f"{order} < ?")
            args.append(before)
        columns = ", ".join(f"j.{c.strip()}" for c in LIST_COLUMNS.split(","))
        sql = f"SELECT {columns} {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} DESC LIMIT ?"
        async with self._reading(name).execute(sql, (*args, limit)) as cur:
            jobs = [_job(row) for row in await cur.fetchall()]
        if not name:
            return await self._with_positions(jobs)
        # A search skips queued jobs, so each one's place is counted on its own.
        return [await self._with_position(j) for j in jobs]

    async def count_jobs(self, *, statuses: Collection[Status] = (), name: str = "") -> int:
        """How many jobs find_jobs would page through. Without a name, from the counts
        the triggers keep (no scan); with one, from the name index."""
        if not name:
            counts = await self.counts()
            return sum(counts[str(s)] for s in statuses) if statuses else sum(counts.values())
        source, where, args, _ = _job_filter(statuses, name)
        if source.startswith("FROM job_names"):
            source = "FROM job_names"  # the index knows names and states: no join needed
        elif statuses:
            # A scan of names: through the state index when those states are few, else
            # one pass over the table (cheaper than a lookup per job of most of them).
            counts = await self.counts()
            if sum(counts[str(s)] for s in statuses) * 4 > sum(counts.values()):
                source = "FROM jobs j NOT INDEXED"
        sql = f"SELECT COUNT(*) {source}" + (" WHERE " + " AND ".join(where) if where else "")
        async with self._reading(name).execute(sql, args) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    def _reading(self, name: str) -> aiosqlite.Connection:
        """The connection for a read: searches by name have their own."""
        if not name:
            return self._read
        if self._searcher is None:
            raise StoreClosed("the store is closed")
        return self._searcher

    # --- writes: new jobs ------------------------------------------------------

    async def add(self, job: Job, *, intake_path: Path | None = None) -> Job:
        """Insert a new job: admitting (its write-ahead record), queued or rejected.

        `intake_path` is where the file was before the intake claimed it, so that a
        crash mid-admission can be rolled back or finished at the next start.
        """
        if job.status not in NEW_STATES:
            raise IllegalTransition(job.id, job.status, job.status)
        async with self._conn.execute(
            f"{INSERT_SQL} RETURNING {ALL_COLUMNS}", _insert_values(job, intake_path)
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return await self._changed(_job(row))

    async def add_many(self, jobs: Iterable[Job]) -> int:
        """Insert many jobs in one transaction (an import, a scale test). Listeners hear
        nothing per job: they learn of the new rows from the next change or a reload."""
        rows = []
        for job in jobs:
            if job.status not in IMPORTABLE_STATES:
                raise IllegalTransition(job.id, job.status, job.status)
            rows.append(_insert_values(job, None))
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            await self._conn.executemany(INSERT_SQL, rows)
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise
        self._state_changed()
        return len(rows)

    # --- writes: one operation per intent ------------------------------------------

    async def admitted(self, job_id: str, source: MediaInfo | None) -> Job:
        """The intake probed the claimed file: it is a video, so queue it. No `source`:
        not probed, its encode's own scan tells (issue 14)."""
        return await self.transition(job_id, Status.QUEUED, source=source, expect=Status.ADMITTING)

    async def reject(
        self,
        job_id: str,
        reason: str,
        *,
        rejected_as: str | None = None,
        was: Status = Status.ADMITTING,
    ) -> Job:
        """The intake probed the claimed file: not a video. `rejected_as`: its name in
        rejected/ (an inbox file), recorded with the state so a crash can't lose it.
        `was` running: its encode's scan found it out (intake.reject_scanned)."""
        return await self.transition(
            job_id,
            Status.REJECTED,
            error=JobError("not_video", reason),
            expect=was,
            more={"rejected_as": rejected_as},
        )

    async def abandon_admission(self, job_id: str) -> bool:
        """Remove the write-ahead record of an admission that was rolled back."""
        async with self._conn.execute(
            "DELETE FROM jobs WHERE id = ? AND status = 'admitting' RETURNING id", (job_id,)
        ) as cur:
            gone = await cur.fetchone() is not None
        if gone:
            self._deleted(job_id)
        return gone

    async def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to running and return it."""
        async with self._conn.execute(
            f"""UPDATE jobs SET status = 'running', started_at = ?, progress = 0,
                    fps = NULL, eta_s = NULL, error_code = NULL, error_message = NULL,
                    worker = NULL
                WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1)
                  AND status = 'queued'
                RETURNING {ALL_COLUMNS}""",
            (time_text(now()),),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return await self._changed(_job(row))

    async def finish(
        self,
        job_id: str,
        output: MediaInfo,
        *,
        poster: bool,
        log_tail: str,
        repackaged: bool = False,
        publish: bool = False,
        poster_pending: bool = False,
        source: MediaInfo | None = None,
    ) -> Job:
        """A running job's output is verified and in videos/. With `publish`, the job is
        marked as still to be published to storage.output_dir in the same write; with
        `poster_pending`, as still owed its poster (see poster_made); `source`: the facts
        its encode's scan found (EncodeResult.source), for a job queued unprobed."""
        return await self.transition(
            job_id,
            Status.DONE,
            output=output,
            source=source,
            poster=poster,
            log_tail=log_tail,
            more={
                "repackaged": int(repackaged),
                "publish_pending": int(publish),
                "poster_pending": int(poster_pending),
            },
        )

    async def fail(self, job_id: str, error: JobError, *, log_tail: str = "") -> Job:
        return await self.transition(job_id, Status.FAILED, error=error, log_tail=log_tail)

    async def cancel(self, job_id: str, *, was: Status, log_tail: str | None = None) -> Job:
        """Cancel a job that is `was` (queued, or running when the pool has stopped it)."""
        return await self.transition(
            job_id,
            Status.CANCELLED,
            error=JobError("cancelled", "cancelled by a user"),
            log_tail=log_tail,
            expect=was,
        )

    async def retry(self, job_id: str, profile: str | None = None) -> Job:
        """Back to the queue after a failure or a cancel (not from running: that is
        requeue), with another profile when one is given."""
        try:
            return await self.transition(
                job_id, Status.QUEUED, expect=Status.FAILED, profile=profile
            )
        except IllegalTransition:
            return await self.transition(
                job_id, Status.QUEUED, expect=Status.CANCELLED, profile=profile
            )

    async def requeue(self, job_id: str) -> Job:
        """A running job interrupted by a stop goes back to the queue."""
        return await self.transition(job_id, Status.QUEUED, expect=Status.RUNNING)

    async def requeue_interrupted(self, keep: Collection[str] = ()) -> list[str]:
        """At start-up: jobs left running by a stop or a crash go back to the queue,
        except those in `keep` (remote encodes the pool adopts)."""
        async with self._conn.execute("SELECT id FROM jobs WHERE status = 'running'") as cur:
            ids: list[str] = [row[0] for row in await cur.fetchall() if row[0] not in keep]
        for job_id in ids:
            await self.requeue(job_id)
        return ids

    async def set_progress(
        self, job_id: str, progress: float, fps: float | None, eta_s: float | None
    ) -> Job | None:
        return await self._update_running(
            job_id, "progress = ?, fps = ?, eta_s = ?", (progress, fps, eta_s), progress_only=True
        )

    async def set_source(self, job_id: str, source: MediaInfo) -> Job | None:
        """The source's facts of a running job queued unprobed, as soon as its encode's
        scan finds them (the done record has them too). None if it is not running, or
        has them already."""
        return await self._update_running(
            job_id, "source = ?", (_media_json(source),), only_if="source IS NULL"
        )

    async def _update_running(
        self,
        job_id: str,
        sets: str,
        args: tuple[object, ...],
        *,
        only_if: str = "1",
        progress_only: bool = False,
    ) -> Job | None:
        """SET `sets` (vidd's own SQL, never a user's) on a running job where `only_if`
        holds, and tell the listeners. None when no row was changed."""
        async with self._conn.execute(
            f"""UPDATE jobs SET {sets}
                WHERE id = ? AND status = 'running' AND ({only_if})
                RETURNING {LIST_COLUMNS}""",
            (*args, job_id),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        job = _job(row)
        self._notify(job, progress_only=progress_only)
        return job

    async def delete(self, job_id: str) -> bool:
        async with self._conn.execute(
            "DELETE FROM jobs WHERE id = ? RETURNING id", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return False
        self._deleted(job_id)
        return True

    async def transition(
        self,
        job_id: str,
        target: Status,
        *,
        error: JobError | None = None,
        output: MediaInfo | None = None,
        source: MediaInfo | None = None,
        poster: bool = False,
        log_tail: str | None = None,
        expect: Status | None = None,
        profile: str | None = None,
        more: dict[str, Any] | None = None,
    ) -> Job:
        """Move a job to `target`, or raise IllegalTransition (KeyError if it is gone).

        The one place a state changes: one UPDATE guarded by the legal source states,
        so it is atomic. `expect` narrows them to one: a user's cancel of a queued job
        must not hit a job just claimed.
        """
        sets = ["status = ?"]
        args: list[Any] = [str(target)]
        t = time_text(now())
        if target is Status.RUNNING:
            sets += ["started_at = ?", "finished_at = NULL", "progress = 0"]
            sets += ["fps = NULL", "eta_s = NULL", "error_code = NULL", "error_message = NULL"]
            args.append(t)
        elif target is Status.QUEUED:
            sets += ["started_at = NULL", "finished_at = NULL", "progress = 0"]
            sets += ["fps = NULL", "eta_s = NULL", "error_code = NULL", "error_message = NULL"]
            sets += ["output = NULL", "poster = 0", "intake_path = NULL"]
        else:
            sets += ["finished_at = ?", "fps = NULL", "eta_s = NULL"]
            args.append(t)
            if target is Status.DONE:
                sets += ["progress = 1", "output = ?", "poster = ?"]
                args += [_media_json(output), int(poster)]
            sets += ["error_code = ?", "error_message = ?"]
            args += [error.code if error else None, error.message if error else None]
        if source is not None:
            sets.append("source = ?")
            args.append(_media_json(source))
        if log_tail is not None:
            sets.append("log_tail = ?")
            args.append(log_tail)
        if profile is not None:
            sets.append("profile = ?")
            args.append(profile)
        for column, value in (more or {}).items():
            if column not in MORE_COLUMNS:
                raise ValueError(f"transition can't set {column!r}")
            sets.append(f"{column} = ?")
            args.append(value)
        allowed = sorted(str(s) for s in sources_of(target) if expect in (None, s))
        marks = ", ".join("?" for _ in allowed)
        sql = (
            f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND status IN ({marks}) "
            f"RETURNING {ALL_COLUMNS}"
        )
        async with self._conn.execute(sql, (*args, job_id, *allowed)) as cur:
            row = await cur.fetchone()
        if row is None:
            current = await self.get(job_id)
            if current is None:
                raise KeyError(job_id)
            raise IllegalTransition(job_id, current.status, target)
        return await self._changed(_job(row))

    # --- browser sessions ------------------------------------------------------------

    async def open_session(
        self, id_hash: str, token_fp: str, expires_at: datetime, address: str
    ) -> None:
        await self._conn.execute(
            "INSERT INTO sessions (id_hash, token_fp, created_at, expires_at, address) "
            "VALUES (?, ?, ?, ?, ?)",
            (id_hash, token_fp, time_text(now()), time_text(expires_at), address[:100]),
        )

    async def session_open(self, id_hash: str, token_fp: str) -> bool:
        """Whether this session exists, belongs to the current token and has not expired."""
        async with self._read.execute(
            "SELECT 1 FROM sessions WHERE id_hash = ? AND token_fp = ? AND expires_at > ?",
            (id_hash, token_fp, time_text(now())),
        ) as cur:
            return await cur.fetchone() is not None

    async def close_session(self, id_hash: str) -> None:
        await self._conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    async def close_sessions_except(self, token_fp: str) -> int:
        """Drop the sessions of any other token, and the expired ones."""
        async with self._conn.execute(
            "DELETE FROM sessions WHERE token_fp <> ? OR expires_at <= ? RETURNING 1",
            (token_fp, time_text(now())),
        ) as cur:
            return len(list(await cur.fetchall()))

    async def session_count(self) -> int:
        async with self._read.execute("SELECT COUNT(*) FROM sessions") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # --- resumable uploads (vidd/uploads.py) ---------------------------------------------

    UPLOAD_COLUMNS = "id, length, received, name, profile, owner, created_at, expires_at, job_id"

    async def add_upload(self, row: dict[str, Any]) -> None:
        await self._conn.execute(
            f"INSERT INTO uploads ({self.UPLOAD_COLUMNS}) VALUES "
            "(:id, :length, :received, :name, :profile, :owner, :created_at, :expires_at, "
            ":job_id)",
            row,
        )

    async def upload(self, upload_id: str) -> dict[str, Any] | None:
        async with self._read.execute(
            f"SELECT {self.UPLOAD_COLUMNS} FROM uploads WHERE id = ?", (upload_id,)
        ) as cur:
            row = await cur.fetchone()
        return dict(row) if row is not None else None

    async def uploads(self) -> list[dict[str, Any]]:
        async with self._read.execute(f"SELECT {self.UPLOAD_COLUMNS} FROM uploads") as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def upload_received(self, upload_id: str, received: int, expires_at: float) -> None:
        await self._conn.execute(
            "UPDATE uploads SET received = ?, expires_at = ? WHERE id = ?",
            (received, expires_at, upload_id),
        )

    async def upload_became(self, upload_id: str, job_id: str) -> None:
        await self._conn.execute("UPDATE uploads SET job_id = ? WHERE id = ?", (job_id, upload_id))

    async def delete_upload(self, upload_id: str) -> None:
        await self._conn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    async def open_upload_count(self) -> int:
        async with self._read.execute("SELECT COUNT(*) FROM uploads WHERE job_id IS NULL") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def expired_uploads(self, at: float) -> list[str]:
        async with self._read.execute("SELECT id FROM uploads WHERE expires_at <= ?", (at,)) as cur:
            return [r[0] for r in await cur.fetchall()]

    # --- recovery ------------------------------------------------------------------

    async def admissions(self) -> list[tuple[Job, Path | None]]:
        """Admissions a crash cut short: each job still admitting, with where its file was."""
        async with self._read.execute(
            f"SELECT {ALL_COLUMNS}, intake_path FROM jobs WHERE status = 'admitting' ORDER BY seq"
        ) as cur:
            rows = await cur.fetchall()
        return [(_job(r), _path(r["intake_path"])) for r in rows]

    # --- publishing to storage.output_dir ---------------------------------------------

    async def publish_pending(self) -> list[Job]:
        """Done jobs whose result still waits to be published (a crash came between)."""
        return await self._done_owing("publish_pending")

    async def published(self, job_id: str, published_as: str | None, note: str | None) -> Job:
        """Publishing ended: where the result went (None when it could not), and a note."""
        return await self._set_done(
            job_id,
            "publish_pending = 0, published_as = ?, publish_note = ?",
            (published_as, note),
        )

    # --- posters made after done (pool.py) ---------------------------------------------

    async def posters_pending(self) -> list[Job]:
        """Done jobs still owed their poster (a stop or a crash came between)."""
        return await self._done_owing("poster_pending")

    async def poster_made(self, job_id: str, made: bool) -> Job:
        """The poster of a done job is in videos/ (`made`), or could not be made; either
        way it is no longer owed. KeyError when the job is gone or not done."""
        return await self._set_done(job_id, "poster = ?, poster_pending = 0", (int(made),))

    async def _done_owing(self, flag: str) -> list[Job]:
        """Done jobs with the `flag` column set (publish_pending, poster_pending)."""
        async with self._read.execute(
            f"SELECT {ALL_COLUMNS} FROM jobs WHERE {flag} = 1 AND status = 'done' ORDER BY seq"
        ) as cur:
            rows = await cur.fetchall()
        return [_job(r) for r in rows]

    async def _set_done(self, job_id: str, sets: str, args: tuple[Any, ...]) -> Job:
        """UPDATE a done job's `sets` (no state change). KeyError when gone or not done."""
        async with self._conn.execute(
            f"""UPDATE jobs SET {sets}
                WHERE id = ? AND status = 'done' RETURNING {ALL_COLUMNS}""",
            (*args, job_id),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(job_id)
        return await self._changed(_job(row))

    # --- remote workers (attempts.py holds the attempt SQL) ------------------------------

    @property
    def writer(self) -> aiosqlite.Connection:
        """The write connection, for attempts.py's statements (single statements only)."""
        return self._conn

    @property
    def reader(self) -> aiosqlite.Connection:
        return self._read

    async def set_worker(self, job_id: str, worker: str | None) -> Job | None:
        """A running job is now on `worker` (None: not on any); listeners hear it."""
        async with self._conn.execute(
            f"UPDATE jobs SET worker = ? WHERE id = ? AND status = 'running' "
            f"RETURNING {ALL_COLUMNS}",
            (worker, job_id),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else await self._changed(_job(row))

    async def running_ids(self) -> list[str]:
        async with self._read.execute(
            "SELECT id FROM jobs WHERE status = 'running' ORDER BY seq"
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def statuses(self) -> dict[str, Status]:
        """Every job id with its status: which files in sources/ belong to a job."""
        async with self._read.execute("SELECT id, status FROM jobs") as cur:
            rows = await cur.fetchall()
        return {r[0]: Status(r[1]) for r in rows}

    async def _changed(self, job: Job) -> Job:
        self._state_changed()
        job = await self._with_position(job)
        self._notify(job, progress_only=False)
        return job

    def _deleted(self, job_id: str) -> None:
        self._state_changed()
        for listener in self._listeners:
            try:
                listener.job_deleted(job_id)
            except Exception:  # the change is committed; one listener's bug stays its own
                log.exception("store listener %r failed", listener)

    def _notify(self, job: Job, *, progress_only: bool) -> None:
        for listener in self._listeners:
            try:
                listener.job_changed(job, progress_only=progress_only)
            except Exception:  # the change is committed; one listener's bug stays its own
                log.exception("store listener %r failed", listener)


def _insert_values(job: Job, intake_path: Path | None) -> tuple[Any, ...]:
    return (
        job.id,
        job.name,
        str(job.status),
        job.profile,
        job.origin,
        job.source_ext,
        time_text(job.created_at),
        time_text(job.started_at),
        time_text(job.finished_at),
        job.progress,
        _media_json(job.source),
        _media_json(job.output),
        int(job.poster),
        job.error.code if job.error else None,
        job.error.message if job.error else None,
        job.log_tail,
        os.fsencode(intake_path) if intake_path is not None else None,  # bytes: any name
        job.folder,
    )


def _path(value: bytes | str | None) -> Path | None:
    if not value:
        return None
    return Path(os.fsdecode(value) if isinstance(value, bytes) else value)


def time_text(t: datetime | None) -> str | None:
    """A time as the database stores it (ISO 8601), or None."""
    return t.isoformat() if t else None


def parse_time(s: str | None) -> datetime | None:
    """A stored time back as a datetime, or None."""
    return datetime.fromisoformat(s) if s else None


def _media_json(info: MediaInfo | None) -> str | None:
    return None if info is None else json.dumps(dataclasses.asdict(info))


def _media(s: str | None) -> MediaInfo | None:
    if not s:
        return None
    d = json.loads(s)
    return MediaInfo(**{**d, "audio_codecs": tuple(d["audio_codecs"])})


def _job(row: aiosqlite.Row) -> Job:
    keys = row.keys()
    created = parse_time(row["created_at"])
    assert created is not None
    return Job(
        seq=row["seq"],
        id=row["id"],
        name=row["name"],
        status=Status(row["status"]),
        profile=row["profile"],
        origin=row["origin"],
        source_ext=row["source_ext"],
        created_at=created,
        started_at=parse_time(row["started_at"]),
        finished_at=parse_time(row["finished_at"]),
        progress=row["progress"],
        fps=row["fps"],
        eta_s=row["eta_s"],
        source=_media(row["source"]),
        output=_media(row["output"]),
        poster=bool(row["poster"]),
        error=JobError(row["error_code"], row["error_message"]) if row["error_code"] else None,
        log_tail=row["log_tail"] if "log_tail" in keys else "",
        folder=row["folder"],
        rejected_as=row["rejected_as"],
        repackaged=bool(row["repackaged"]),
        published_as=row["published_as"],
        publish_note=row["publish_note"],
        worker=row["worker"],
    )


def _replace(job: Job, **changes: Any) -> Job:
    return dataclasses.replace(job, **changes)


# --- the job list's filter (find_jobs, count_jobs) ------------------------------------

# The trigram index finds 3 characters and more; shorter searches scan the names.
MIN_INDEXED_CHARS = 3


def _job_filter(statuses: Collection[Status], name: str) -> tuple[str, list[str], list[Any], str]:
    """(FROM clause, WHERE terms, their arguments, the column to order and page by) for
    jobs in `statuses` whose name holds `name`. The search is always literal: the name
    goes in as one quoted FTS5 string, or as LIKE patterns with their wildcards escaped.
    With the name index, its WHERE terms name only the index (count_jobs relies on it)."""
    where: list[str] = []
    args: list[Any] = []
    if len(name) >= MIN_INDEXED_CHARS:
        # The index drives (newest first, stopping at the page's end); each hit looks
        # up its job by primary key. CROSS JOIN keeps SQLite from turning that around.
        source, order = "FROM job_names f CROSS JOIN jobs j ON j.seq = f.rowid", "f.rowid"
        query = 'name : "' + name.replace('"', '""') + '"'
        if statuses:  # states are words of the enum: no quote in them
            query += " AND (" + " OR ".join(f'status : "{s}"' for s in statuses) + ")"
        where.append("job_names MATCH ?")
        args.append(query)
        return source, where, args, order
    else:
        source, order = "FROM jobs j", "j.seq"
        if name:
            # LIKE ignores case for ASCII only: other letters are tried in both cases.
            escaped = [c if c not in "\\%_" else "\\" + c for c in name]
            variants = {""}
            for c, e in zip(name, escaped, strict=True):
                cases = {e, e.lower(), e.upper()} if not c.isascii() else {e}
                variants = {v + x for v in variants for x in cases}
            where.append("(" + " OR ".join("j.name LIKE ? ESCAPE '\\'" for _ in variants) + ")")
            args += [f"%{v}%" for v in sorted(variants)]
    if statuses:
        where.append(f"j.status IN ({', '.join('?' for _ in statuses)})")
        args += [str(s) for s in statuses]
    return source, where, args, order
