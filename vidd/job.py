"""A job: its states, the legal transitions between them, and its JSON shape."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .words import plain


class Status(enum.StrEnum):
    ADMITTING = "admitting"  # the intake's write-ahead record: claimed, not yet probed
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


# from -> the states it may move to. Rejected and done are final.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.ADMITTING: frozenset({Status.QUEUED, Status.REJECTED}),
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    # Running -> rejected: an inbox file the intake left to its encode's scan (issue 14),
    # which found it is not a video.
    Status.RUNNING: frozenset(
        {Status.DONE, Status.FAILED, Status.CANCELLED, Status.QUEUED, Status.REJECTED}
    ),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
    Status.DONE: frozenset(),
    Status.REJECTED: frozenset(),
}


def sources_of(target: Status) -> frozenset[Status]:
    """The states from which `target` can be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


class IllegalTransition(Exception):
    def __init__(self, job_id: str, current: Status, target: Status) -> None:
        super().__init__(f"job {job_id}: {current} -> {target} is not allowed")
        self.job_id = job_id
        self.current = current
        self.target = target


def new_id() -> str:
    """A random, URL-safe id: 72 bits, so a URL can't be guessed. Never starting with
    "-", so that a command line never reads one as an option."""
    while True:
        job_id = secrets.token_urlsafe(9)
        if job_id[0] != "-":
            return job_id


def is_valid_id(value: str) -> bool:
    return 1 <= len(value) <= 32 and all(c.isalnum() or c in "-_" for c in value)


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z") if t else None


@dataclass(frozen=True)
class MediaInfo:
    """What a probe found in a file."""

    size: int = 0
    duration: float = 0.0
    width: int = 0
    height: int = 0
    video_codec: str = ""
    audio_codecs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "duration": round(self.duration, 3),
            "width": self.width,
            "height": self.height,
            "video_codec": self.video_codec,
            "audio_codecs": list(self.audio_codecs),
        }


@dataclass(frozen=True)
class JobError:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        # Stored technical; told in plain words, the technical text one click away.
        return {
            "code": self.code,
            "message": plain(self.code, self.message),
            "detail": self.message,
        }


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    status: Status
    profile: str
    origin: str  # "inbox" or "upload"
    source_ext: str  # ".mkv": from a cleaned-up file name, "" when it had none we trust
    created_at: datetime
    seq: int = 0  # insertion order, for paging and the queue
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float = 0.0
    fps: float | None = None
    eta_s: float | None = None
    source: MediaInfo | None = None
    output: MediaInfo | None = None
    poster: bool = False
    error: JobError | None = None
    log_tail: str = ""
    queue_position: int | None = field(default=None, compare=False)
    # The inbox (see publish.py): the subfolder the file came from ("" for the top and
    # uploads), its name in rejected/, whether the result is a stream copy, where it was
    # published under storage.output_dir, and a plain sentence when that was not simple.
    folder: str = ""
    rejected_as: str | None = None
    repackaged: bool = False
    published_as: str | None = None
    publish_note: str | None = None
    worker: str | None = None  # the remote worker that runs or ran it; None for local

    @property
    def source_file(self) -> str:
        return f"{self.id}{self.source_ext}"

    def to_json(self, *, with_log: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": str(self.status),
            "profile": self.profile,
            "origin": self.origin,
            "progress": round(self.progress, 4),
            "fps": None if self.fps is None else round(self.fps, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "queue_position": self.queue_position,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "source": self.source.to_json() if self.source else None,
            "output": None,
            "error": self.error.to_json() if self.error else None,
        }
        if self.status is Status.DONE and self.output:
            data["output"] = {
                "url": f"/videos/{self.id}.mp4",
                "poster_url": f"/videos/{self.id}.jpg" if self.poster else None,
                "watch_url": f"/watch/{self.id}",
                **self.output.to_json(),
            }
        data |= {
            "folder": self.folder,
            "rejected_as": self.rejected_as,
            "repackaged": self.repackaged,
            "published_as": self.published_as,
            "publish_note": self.publish_note,
            "worker": self.worker,
        }
        if with_log:
            data["log_tail"] = self.log_tail
        return data
