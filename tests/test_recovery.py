"""After a crash: each state the data folder can be left in by a kill -9 mid-admission,
built for real (a store file, files where the crash left them), then `Intake.recover`
as the next start runs it. Every file ends with exactly one job, or back in the inbox."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testkit.jobs import make_job
from vidd.intake import Intake
from vidd.job import Job, JobError, Status, now
from vidd.layout import Layout
from vidd.store import Store


@pytest.fixture
async def env(make_config):
    cfg = make_config(watch={"enabled": False})
    layout = Layout(cfg.storage)
    layout.make_dirs()
    async with Store(cfg.storage.db_path) as store:
        yield store, Intake(cfg, store, layout), layout


def admitting(origin: str, name: str = "clip.avi") -> Job:
    return make_job(name=name, status=Status.ADMITTING, origin=origin)


async def recover(intake: Intake) -> int:
    touched = await intake.recover()
    await intake.stop(60)  # wait for the probes it started in the background
    return touched


async def only_job(store: Store) -> Job:
    (job,) = await store.list_jobs()
    return job


async def test_a_claimed_file_whose_probe_was_cut_short_is_finished(env, clip: Path) -> None:
    store, intake, layout = env
    job = await store.add(admitting("inbox"), intake_path=layout.inbox / "clip.avi")
    shutil.copyfile(clip, layout.source(job))  # moved into sources/, then the crash
    assert await recover(intake) == 1
    done = await only_job(store)
    assert done.id == job.id and done.status is Status.QUEUED
    assert done.source is not None and done.source.duration > 1
    assert layout.source(job).exists() and not (layout.inbox / "clip.avi").exists()


async def test_a_file_still_in_the_inbox_is_rolled_back(env, clip: Path) -> None:
    store, intake, layout = env
    original = layout.inbox / "clip.avi"
    shutil.copyfile(clip, original)  # the crash came before the move
    await store.add(admitting("inbox"), intake_path=original)
    assert await recover(intake) == 1
    assert await store.list_jobs() == []  # the watcher will take it again
    assert original.exists() and list(layout.sources.iterdir()) == []


async def test_an_upload_still_in_tmp_is_finished_not_lost(env, clip: Path) -> None:
    store, intake, layout = env
    received = layout.new_upload()
    shutil.copyfile(clip, received)
    job = await store.add(admitting("upload"), intake_path=received)
    await recover(intake)
    assert layout.clear_tmp() == 0  # it left tmp/ before the start clears it
    done = await only_job(store)
    assert done.id == job.id and done.status is Status.QUEUED
    assert layout.source(job).exists()


async def test_an_admission_with_no_file_anywhere_is_removed(env, caplog) -> None:
    store, intake, layout = env
    await store.add(admitting("upload"), intake_path=layout.tmp / "upload-gone")
    assert await recover(intake) == 1
    assert await store.list_jobs() == []
    assert "had no file left" in caplog.text


async def test_a_copy_across_filesystems_cut_before_its_unlink_leaves_one_job(
    env, clip: Path
) -> None:
    store, intake, layout = env
    original = layout.inbox / "clip.avi"
    shutil.copyfile(clip, original)
    job = await store.add(admitting("inbox"), intake_path=original)
    shutil.copyfile(clip, layout.source(job))  # copied and renamed; the unlink never ran
    await recover(intake)
    assert (await only_job(store)).status is Status.QUEUED
    assert not original.exists()  # no second admission of the same file


async def test_a_new_file_of_the_same_name_and_size_is_kept(env, clip: Path) -> None:
    """Only a copy of the very file is a leftover: a new drop that happens to have the
    claimed file's name and size is someone else's file."""
    store, intake, layout = env
    original = layout.inbox / "clip.avi"
    job = await store.add(admitting("inbox"), intake_path=original)
    shutil.copyfile(clip, layout.source(job))  # renamed into sources/, then the crash
    other = bytes(reversed(clip.read_bytes()))
    original.write_bytes(other)  # then another file is dropped under that name
    await recover(intake)
    assert (await only_job(store)).status is Status.QUEUED
    assert original.read_bytes() == other  # it waits for the watcher, as any new drop


async def test_an_orphan_in_sources_is_adopted_never_deleted(env, clip: Path, caplog) -> None:
    store, intake, layout = env
    orphan = layout.sources / "Xy12ab34cd56.avi"  # an older vidd's crash left it so
    shutil.copyfile(clip, orphan)
    (layout.sources / ".Zz.avi.partial").write_bytes(b"half a copy")
    await recover(intake)
    job = await only_job(store)
    assert job.status is Status.QUEUED and job.name == "Xy12ab34cd56.avi"
    assert sorted(p.name for p in layout.sources.iterdir()) == [f"{job.id}.avi"]
    assert "has no job: adopting it" in caplog.text


async def test_a_rejected_inbox_file_left_in_sources_goes_to_rejected(env, clip: Path) -> None:
    store, intake, layout = env
    job = make_job(
        name="notes.txt",
        status=Status.REJECTED,
        origin="inbox",
        source_ext=".txt",
        finished_at=now(),
        error=JobError("not_video", "not a video"),
    )
    await store.add(job)
    layout.source(job).write_text("hello")  # recorded as rejected; the move never ran
    await recover(intake)
    assert not layout.source(job).exists()
    assert layout.rejected(job).read_text() == "hello"
