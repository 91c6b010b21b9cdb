"""Resumable uploads (tus 1.0), below HTTP: each upload's partial file in uploads/ and its
row in the store, the disk space promised to it, who writes to it now, when it expires,
and the hand-over of a complete file to the intake.

The partial file is the truth about what arrived: every PATCH ends (finished, cut off
or taken over) by truncating the file to the bytes it keeps, fsyncing it and recording
that length, so a restart or a crash loses nothing that was acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import disk
from .config import Config
from .job import Job
from .layout import Layout
from .store import Store

log = logging.getLogger(__name__)

CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
SWEEP_EVERY_S = 60.0

Read = Callable[[], Awaitable[bytes]]  # the next piece of a body; b"" at its end
Admit = Callable[[Path, str, "str | None"], Awaitable[Job]]  # (file, name, profile)


class UploadGone(Exception):
    """No such upload: never made, deleted, or expired."""


class OffsetMismatch(Exception):
    def __init__(self, received: int) -> None:
        super().__init__(f"the upload has {received} bytes")
        self.received = received


class ChecksumMismatch(Exception):
    """The PATCH's bytes do not match its Upload-Checksum; they were dropped."""


class PastLength(Exception):
    """The body goes past the upload's declared length."""


class TooManyOpen(Exception):
    """`web.max_open_uploads` uploads are incomplete already."""


@dataclass(frozen=True)
class Upload:
    id: str
    length: int
    received: int
    name: str
    profile: str | None
    owner: str
    created_at: float
    expires_at: float
    job_id: str | None

    @property
    def complete(self) -> bool:
        return self.received >= self.length


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, header: str) -> Checksum:
        """`Upload-Checksum: sha256 <base64>`; ValueError names what is wrong."""
        algorithm, _, encoded = header.strip().partition(" ")
        algorithm = algorithm.lower()
        if algorithm not in CHECKSUMS:
            raise ValueError(f"checksum algorithm must be one of {', '.join(CHECKSUMS)}")
        try:
            digest = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the checksum is not base64") from None
        if len(digest) != CHECKSUMS[algorithm]().digest_size:
            raise ValueError(f"not a {algorithm} digest")
        return cls(algorithm, digest)


class Uploads:
    """Every resumable upload. One writer per upload: a new PATCH takes over from one
    still running (a connection the client gave up on), never waits for it."""

    def __init__(
        self,
        config: Config,
        store: Store,
        layout: Layout,
        guard: disk.DiskGuard,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.layout = layout
        self.guard = guard
        self.clock = clock
        self._promises: dict[str, disk.Reservation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._writers: dict[str, asyncio.Task[Any]] = {}
        self._admitting: set[str] = set()  # never cancelled: the file is the intake's now
        self._sweeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Uploads open={len(self._promises)} writing={len(self._writers)}>"

    @property
    def expiry_s(self) -> float:
        return self.config.web.upload_expiry_s

    # --- start and stop ------------------------------------------------------------------

    async def open(self) -> int:
        """At start-up: each row's offset from its file (a crash may have cut a PATCH
        after bytes landed), its disk space promised again; files without a row and
        rows without a file go. Returns how many uploads wait to be resumed."""
        self.layout.uploads.mkdir(parents=True, exist_ok=True)
        known = set()
        for row in await self.store.uploads():
            upload = Upload(**row)
            known.add(upload.id)
            if upload.job_id is not None:
                continue
            path = self.layout.partial_upload(upload.id)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                log.warning("uploads: %s had no partial file left; forgotten", upload.id)
                await self.store.delete_upload(upload.id)
                continue
            if size > upload.length:
                os.truncate(path, upload.length)
                size = upload.length
            if size != upload.received:
                await self.store.upload_received(upload.id, size, upload.expires_at)
            self._promises[upload.id] = self.guard.promise(upload.length - size, checked=False)
        for entry in self.layout.uploads.iterdir():
            if entry.name.removesuffix(".part") not in known or entry.suffix != ".part":
                entry.unlink(missing_ok=True)
        if self._promises:
            log.info("uploads: %d resumable upload(s) wait for their clients", len(self._promises))
        return len(self._promises)

    def start_sweeper(self, every_s: float = SWEEP_EVERY_S) -> None:
        self._sweeper = asyncio.create_task(self._sweep_every(every_s))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for promise in self._promises.values():
            promise.release()
        self._promises.clear()

    async def _sweep_every(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep()
            except Exception as e:  # the next round tries again
                log.warning("uploads: sweeping expired uploads failed: %s", e)

    async def sweep(self) -> int:
        """Delete every expired upload that nobody is writing to now."""
        gone = 0
        for upload_id in await self.store.expired_uploads(self.clock()):
            if upload_id in self._writers:
                continue
            await self._remove(upload_id)
            gone += 1
        if gone:
            log.info("uploads: %d expired upload(s) deleted", gone)
        return gone

    # --- the protocol's operations ---------------------------------------------------------

    async def create(self, length: int, name: str, profile: str | None, owner: str) -> Upload:
        """A new, empty upload: its row, then its file. Raises TooManyOpen, DiskFull."""
        if await self.store.open_upload_count() >= self.config.web.max_open_uploads:
            raise TooManyOpen(
                f"{self.config.web.max_open_uploads} uploads are incomplete already "
                "(web.max_open_uploads); finish or delete one first"
            )
        promise = self.guard.promise(length)
        try:
            at = self.clock()
            upload = Upload(
                id=secrets.token_urlsafe(18),
                length=length,
                received=0,
                name=name,
                profile=profile,
                owner=owner,
                created_at=at,
                expires_at=at + self.expiry_s,
                job_id=None,
            )
            await self.store.add_upload(upload.__dict__)
            self.layout.partial_upload(upload.id).touch(mode=0o640, exist_ok=False)
        except BaseException:
            promise.release()
            raise
        self._promises[upload.id] = promise
        log.info("uploads: %s created (%r, %d bytes)", upload.id, name, length)
        return upload

    async def find(self, upload_id: str) -> Upload:
        """The upload as last committed. An expired one is deleted here: UploadGone."""
        row = await self.store.upload(upload_id)
        if row is None:
            raise UploadGone(upload_id)
        upload = Upload(**row)
        if upload.expires_at <= self.clock() and upload_id not in self._writers:
            await self._remove(upload_id)
            raise UploadGone(upload_id)
        return upload

    async def write(
        self,
        upload_id: str,
        offset: int,
        read: Read,
        checksum: Checksum | None,
        admit: Admit,
    ) -> tuple[Upload, Job | None]:
        """Append a body at `offset`; once the file is complete, hand it to `admit`.

        Returns the upload as committed and its job (None while incomplete). Raises
        UploadGone, OffsetMismatch, PastLength, ChecksumMismatch, and whatever `read`
        or `admit` raise, always after the bytes that arrived have been committed."""
        async with self._writing(upload_id) as took_over:
            upload = await self.find(upload_id)
            if upload.job_id is not None and offset == upload.length:
                # Asked again for the end (its answer was lost): the same job, once more.
                job = await self.store.get(upload.job_id)
                if job is not None:
                    return upload, job
            if took_over and upload.job_id is None and offset < upload.received:
                # The client resends from where it last heard: its view wins over bytes
                # the connection it gave up on delivered after that.
                upload = await self._rewind(upload, offset)
            if upload.job_id is not None or upload.received != offset:
                raise OffsetMismatch(upload.length if upload.job_id else upload.received)
            if not upload.complete:
                upload = await self._receive(upload, read, checksum)
            if not upload.complete:
                return upload, None
            self._admitting.add(upload.id)
            try:
                job = await admit(
                    self.layout.partial_upload(upload.id), upload.name, upload.profile
                )
                await self.store.upload_became(upload.id, job.id)
            finally:
                self._admitting.discard(upload.id)
            if (promise := self._promises.pop(upload.id, None)) is not None:
                promise.release()
            log.info("uploads: %s complete: job %s (%s)", upload.id, job.id, job.status.value)
            return dataclasses.replace(upload, job_id=job.id), job

    async def delete(self, upload_id: str) -> None:
        """Termination: stops a writer still running, then removes the file and the row
        (a job it became stays)."""
        async with self._writing(upload_id):
            await self.find(upload_id)
            await self._remove(upload_id)
        log.info("uploads: %s deleted by its client", upload_id)

    # --- inside ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _writing(self, upload_id: str) -> AsyncIterator[bool]:
        """Be the upload's one writer: the one before is cancelled (it commits what it
        has on its way out), then its lock is ours. Yields whether one was taken over."""
        me = asyncio.current_task()
        assert me is not None
        old = self._writers.get(upload_id)
        took_over = old is not None and old is not me and not old.done()
        if took_over and upload_id not in self._admitting:
            assert old is not None
            log.info("uploads: %s: a new request takes over from one still running", upload_id)
            old.cancel()
        self._writers[upload_id] = me
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        try:
            async with lock:
                yield took_over
        finally:
            if self._writers.get(upload_id) is me:
                del self._writers[upload_id]
                if not lock.locked():
                    self._locks.pop(upload_id, None)

    async def _receive(self, upload: Upload, read: Read, checksum: Checksum | None) -> Upload:
        path = self.layout.partial_upload(upload.id)
        hasher = CHECKSUMS[checksum.algorithm]() if checksum is not None else None
        start = upload.received
        room = upload.length - start
        loop = asyncio.get_running_loop()
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        written = 0  # bytes on the disk
        queued = 0  # bytes handed to a write, finished or not
        # One write in flight while the next piece is read: disk and network overlap,
        # and at most two pieces are held in memory.
        writing: asyncio.Future[None] | None = None
        complete = False

        def put(chunk: bytes, at: int) -> None:
            if hasher is not None:
                hasher.update(chunk)
            view, done = memoryview(chunk), 0
            while done < len(chunk):
                done += os.pwrite(fd, view[done:], at + done)

        try:
            while chunk := await read():
                if len(chunk) > room - queued:
                    raise PastLength(f"the body goes past the upload's length ({upload.length})")
                if writing is not None:
                    await writing
                    writing = None
                    written = queued
                writing = loop.run_in_executor(None, put, chunk, start + queued)
                queued += len(chunk)
            if writing is not None:
                await writing
                writing = None
                written = queued
            complete = True
        finally:
            if writing is not None:
                await asyncio.wait([writing])  # the file closes after its last write
                if not writing.cancelled() and writing.exception() is None:
                    written = queued
            keep = start + written
            verified = True
            if checksum is not None:
                # Bytes that can't be checked (a body cut short) are not kept either.
                verified = complete and hasher is not None and hasher.digest() == checksum.digest
                keep = keep if verified else start
            upload = await _uncancelled(self._commit(upload, fd, keep))
        if not verified:
            raise ChecksumMismatch("the bytes do not match their checksum")
        return upload

    async def _commit(self, upload: Upload, fd: int, keep: int) -> Upload:
        """Truncate to what is kept, fsync, then record it: acknowledged means durable."""

        def settle() -> None:
            try:
                os.ftruncate(fd, keep)
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.get_running_loop().run_in_executor(None, settle)
        if (promise := self._promises.get(upload.id)) is not None:
            promise.wrote(max(0, keep - upload.received))
        expires_at = self.clock() + self.expiry_s
        await self.store.upload_received(upload.id, keep, expires_at)
        return dataclasses.replace(upload, received=keep, expires_at=expires_at)

    async def _rewind(self, upload: Upload, offset: int) -> Upload:
        path = self.layout.partial_upload(upload.id)
        await asyncio.get_running_loop().run_in_executor(None, os.truncate, path, offset)
        if (promise := self._promises.get(upload.id)) is not None:
            promise.unwrote(upload.received - offset)
        await self.store.upload_received(upload.id, offset, upload.expires_at)
        return dataclasses.replace(upload, received=offset)

    async def _remove(self, upload_id: str) -> None:
        self.layout.partial_upload(upload_id).unlink(missing_ok=True)
        await self.store.delete_upload(upload_id)
        if (promise := self._promises.pop(upload_id, None)) is not None:
            promise.release()


async def _uncancelled(coro: Awaitable[Upload]) -> Upload:
    """Run `coro` to its end even when the caller is cancelled meanwhile (a takeover
    lands while the old writer commits); the cancel is passed on afterwards."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
