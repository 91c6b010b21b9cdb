"""Where vidd keeps its files under `storage.data_dir`: the folders, and the one place
that knows the path of each of a job's files (its source, video, poster, work folder)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path

from . import names
from .config import Storage
from .job import Job


class Layout:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.inbox = storage.inbox_dir
        self.sources = storage.sources_dir
        self.videos = storage.videos_dir
        self.rejected_dir = storage.rejected_dir
        self.tmp = storage.tmp_dir
        self.uploads = storage.data_dir / "uploads"  # resumable uploads: never cleared at start

    def __repr__(self) -> str:
        return f"<Layout {self.storage.data_dir}>"

    def make_dirs(self) -> None:
        for d in (self.inbox, self.sources, self.videos, self.rejected_dir, self.tmp, self.uploads):
            d.mkdir(parents=True, exist_ok=True)
        if self.storage.output_dir is not None:
            self.storage.output_dir.mkdir(parents=True, exist_ok=True)

    # --- a job's files -----------------------------------------------------------

    def source(self, job: Job) -> Path:
        return self.sources / f"{job.id}{job.source_ext}"

    def rejected(self, job: Job) -> Path:
        """rejected/<id>-<cleaned original name>: recognisable, and unique by the id."""
        name = Path(job.rejected_as).name if job.rejected_as else ""
        return self.rejected_dir / (name or self.rejected_name(job))

    @staticmethod
    def rejected_name(job: Job) -> str:
        return f"{job.id}-{names.file_name(job.name)}"

    def rejected_before(self, job: Job) -> Path:
        """Where a rejected file went before names were kept (rejected/<id><ext>)."""
        return self.rejected_dir / f"{job.id}{job.source_ext}"

    def video(self, job_id: str) -> Path:
        return self.videos / f"{job_id}.mp4"

    def poster(self, job_id: str) -> Path:
        return self.videos / f"{job_id}.jpg"

    def outputs(self, job_id: str) -> tuple[Path, Path]:
        """A finished job's video and poster."""
        return self.video(job_id), self.poster(job_id)

    def files_of(self, job: Job) -> tuple[Path, ...]:
        """Everything a job owns outside tmp/: what deleting it removes."""
        rejected = (self.rejected(job), self.rejected_before(job))
        return (self.source(job), *rejected, *self.outputs(job.id))

    # --- tmp/: work in progress, on the same filesystem as videos/ -------------------

    def work(self, job_id: str) -> Path:
        """One job's own folder in tmp/: the only place its boxed tools may write, and
        HandBrake's TMPDIR (it leaves hb.<pid> behind when killed)."""
        return self.tmp / f"{job_id}.work"

    def tmp_video(self, job_id: str) -> Path:
        return self.work(job_id) / f"{job_id}.mp4"

    def tmp_poster(self, job_id: str) -> Path:
        return self.work(job_id) / f"{job_id}.jpg"

    def new_upload(self) -> Path:
        """A fresh name in tmp/ for an upload being received: never the client's name."""
        return self.tmp / f"upload-{secrets.token_hex(12)}"

    def partial_upload(self, upload_id: str) -> Path:
        """A resumable upload's bytes so far, by its random id (never the client's name)."""
        return self.uploads / f"{upload_id}.part"

    def clear_tmp_of(self, job_id: str) -> None:
        remove(self.work(job_id))

    def clear_tmp(self) -> int:
        """Leftovers in tmp/ belong to encodes and uploads that died with the last run."""
        removed = 0
        for entry in self.tmp.iterdir():
            remove(entry)
            removed += 1
        return removed


def remove(path: Path) -> None:
    """Remove a file or a folder tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
