"""An inbox file queued unprobed (issue 14): its encode's own scan, read from the real
HandBrakeCLI's stderr, gives the facts the probe gives, and a file that is not a video
ends `rejected` with the probe's words, kept as rejected/<id>-<name>, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.jobs import make_job
from testkit.media import make_clip
from vidd.encode_scan import EncodeScan
from vidd.encoder import EncodeFailed, Encoder
from vidd.intake import Intake, reject_scanned
from vidd.job import IllegalTransition, Job, Status, new_id
from vidd.layout import Layout
from vidd.pool import Pool
from vidd.probe import NotAVideo, probe
from vidd.store import Store

HANDBRAKE = "/usr/bin/HandBrakeCLI"
FAKE = Path(__file__).parent / "fake_handbrake.py"
TEXT = "".join(f"line {i}: these are my notes, not a video at all\n" for i in range(40))
FULL_RATE = """
[encode.profiles.web]
args = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]

[encode.profiles.web-full-rate]
args = ["-e", "x264", "-q", "22", "-B", "96", "-O"]
repackage = true
"""


def unprobed_job(cfg, src: Path, name: str, *, origin: str = "inbox") -> Job:
    """A running job as the intake leaves one it did not probe: its file in sources/."""
    for d in (cfg.storage.sources_dir, cfg.storage.videos_dir, cfg.storage.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)
    job = make_job(
        id=new_id(),
        name=name,
        status=Status.RUNNING,
        origin=origin,
        source_ext=os.path.splitext(name)[1],
    )
    shutil.copyfile(src, Layout(cfg.storage).source(job))
    return job


@pytest.fixture(scope="session")
def not_videos(clip_dir: Path) -> dict[str, Path]:
    """Files HandBrake opens but that are no videos, and ones it can't open at all."""
    made = {
        "notes.txt": clip_dir / "notes.txt",
        "notes.mp4": clip_dir / "notes.mp4",
        "noise.mkv": clip_dir / "noise.mkv",
        "empty.avi": clip_dir / "empty.avi",
    }
    made["notes.txt"].write_text(TEXT)
    made["notes.mp4"].write_text(TEXT)
    made["noise.mkv"].write_bytes(os.urandom(200_000))  # ffmpeg reads it as "bintext"
    made["empty.avi"].write_bytes(b"")
    made["still.mp4"] = make_clip(clip_dir / "still.mp4", seconds=0.04, vcodec="libx264")
    return made


# --- the scan's facts ---------------------------------------------------------------


async def test_the_encodes_scan_finds_what_the_probe_finds(clip, clip_h264, make_config):
    cfg = make_config()
    encoder = Encoder(cfg, Layout(cfg.storage))
    for src in (clip, clip_h264):
        job = unprobed_job(cfg, src, src.name)
        probed = await probe(HANDBRAKE, Layout(cfg.storage).source(job))

        result = await encoder.run(job, lambda p: None)

        assert result.source == probed
        assert result.output.duration == pytest.approx(probed.duration, abs=0.3)
        assert (cfg.storage.videos_dir / f"{job.id}.mp4").stat().st_size > 0
        assert list(cfg.storage.tmp_dir.iterdir()) == []


async def test_a_probed_job_reports_no_scanned_source(clip, make_config):
    cfg = make_config()
    job = unprobed_job(cfg, clip, "clip.avi")
    facts = await probe(HANDBRAKE, Layout(cfg.storage).source(job))
    job = make_job(**{**job.__dict__, "source": facts})
    result = await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert result.source is None  # the store has them already


def test_the_scan_reads_handbrakes_summary_without_the_job_dump():
    scan = EncodeScan()
    lines = [
        "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 640x480",
        "  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo",
        "[10:00:00] scan: audio 0x1: aac, rate=44100Hz, bitrate=69000 English (AAC LC)",
        "+ title 1:",
        "  + duration: 00:01:05",
        "  + size: 640x480, pixel aspect: 1/1, display aspect: 1.33, 30.000 fps",
    ]
    assert not any(scan.feed(line) for line in lines)
    title = scan.title_set()["TitleList"][0]
    assert title["VideoCodec"] == "h264"
    assert title["Duration"] == {"Seconds": 65.0}
    assert title["Geometry"] == {"Width": 640, "Height": 480}
    assert title["AudioList"] == [{"CodecName": "aac"}]
    dump = ["[10:00:00] json job:", "{", '    "Destination": {', '        "ChapterList": [',
            '            {"Duration": {"Ticks": 900}}, {"Duration": {"Ticks": 90}}', "        ]",
            "    }"]  # fmt: skip
    assert not any(scan.feed(line) for line in dump)
    assert not scan.complete
    assert scan.feed("}") and scan.complete
    assert not scan.feed("  Stream #1:0: Video: png")  # after the job: not the source's
    assert scan.title_set()["TitleList"][0]["Duration"] == {"Ticks": 990}
    assert scan.title_set()["TitleList"][0]["VideoCodec"] == "h264"


# --- not a video, found by the encode -----------------------------------------------


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4", "noise.mkv", "still.mp4", "empty.avi"])
async def test_not_a_video_is_a_rejection_in_the_probes_words(not_videos, make_config, name):
    cfg = make_config()
    job = unprobed_job(cfg, not_videos[name], name)
    source = Layout(cfg.storage).source(job)
    with pytest.raises(NotAVideo) as probed:
        await probe(HANDBRAKE, source)

    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)

    assert failed.value.reject
    assert failed.value.code == "not_video"
    assert failed.value.message == str(probed.value)
    assert source.read_bytes() == not_videos[name].read_bytes()  # untouched
    assert list(cfg.storage.tmp_dir.iterdir()) == []
    assert not (cfg.storage.videos_dir / f"{job.id}.mp4").exists()


async def test_a_video_that_fails_to_encode_is_a_failure_not_a_rejection(clip, make_config):
    # The scan finds a video; the encode then fails (it starts past the end of the
    # source, so nothing is encoded): the job fails, it is not rejected.
    cfg = make_config('[encode.profiles.web]\nargs = ["-e", "x264", "--start-at", "seconds:100"]\n')
    job = unprobed_job(cfg, clip, "clip.avi")
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert not failed.value.reject
    assert failed.value.code != "not_video"


@pytest.mark.parametrize(
    ("mode", "code"), [("crash", "crashed"), ("workdone_error", "workdone_error")]
)
async def test_a_handbrake_that_logs_no_scan_never_rejects_a_video(
    clip, make_config, monkeypatch, mode, code
):
    # The fake HandBrakeCLI prints progress but none of the scan's lines, then fails: the
    # file is not judged by a silence; the probe finds a video and the failure stands.
    FAKE.chmod(FAKE.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_HB_MODE", mode)
    cfg = make_config(encode={"handbrake": str(FAKE), "child_env": ["FAKE_HB_MODE"]})
    job = unprobed_job(cfg, clip, "clip.avi")
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert (failed.value.code, failed.value.reject) == (code, False)
    assert Layout(cfg.storage).source(job).read_bytes() == clip.read_bytes()
    assert list(cfg.storage.tmp_dir.iterdir()) == []


# --- what the pool does with a rejection --------------------------------------------


@pytest.fixture
async def store(make_config):
    cfg = make_config()
    cfg.storage.data_dir.mkdir(parents=True, exist_ok=True)
    async with Store(cfg.storage.db_path) as store:
        yield cfg, store


async def running(store: Store, job: Job) -> Job:
    await store.add(make_job(**{**job.__dict__, "status": Status.QUEUED}))
    claimed = await store.claim_next()
    assert claimed is not None and claimed.id == job.id
    return claimed


async def test_reject_scanned_keeps_an_inbox_file_as_rejected(store, not_videos):
    cfg, db = store
    layout = Layout(cfg.storage)
    job = await running(db, unprobed_job(cfg, not_videos["notes.txt"], "my notes.txt"))

    rejected = await reject_scanned(db, layout, job, "not a video: because")

    assert rejected.status is Status.REJECTED
    assert rejected.error is not None
    assert (rejected.error.code, rejected.error.message) == ("not_video", "not a video: because")
    assert rejected.rejected_as == f"{job.id}-my notes.txt"
    assert (cfg.storage.rejected_dir / rejected.rejected_as).read_text() == TEXT
    assert list(cfg.storage.sources_dir.iterdir()) == []
    assert await db.get(job.id) == rejected


async def test_reject_scanned_drops_an_upload_and_refuses_a_job_not_running(store, not_videos):
    cfg, db = store
    layout = Layout(cfg.storage)
    upload = await running(db, unprobed_job(cfg, not_videos["notes.txt"], "n.txt", origin="upload"))
    rejected = await reject_scanned(db, layout, upload, "no")
    assert rejected.rejected_as is None
    assert not layout.source(upload).exists()  # the user still has it, as at intake

    job = await running(db, unprobed_job(cfg, not_videos["notes.txt"], "n.txt"))
    await db.cancel(job.id, was=Status.RUNNING)
    with pytest.raises(IllegalTransition):
        await reject_scanned(db, layout, job, "no")
    assert layout.source(job).exists()  # the file stays with its job


# --- the intake's choice ------------------------------------------------------------


async def test_an_inbox_file_with_a_free_slot_is_queued_unprobed(make_config, clip):
    cfg = make_config(FULL_RATE, encode={"max_parallel": 1})
    cfg.storage.inbox_dir.mkdir(parents=True)
    async with Store(cfg.storage.db_path) as db:
        intake = Intake(cfg, db, Layout(cfg.storage), scan_in_encode=True)

        def dropped(name: str) -> Path:
            return Path(shutil.copyfile(clip, cfg.storage.inbox_dir / name))

        first = await intake.admit(dropped("a.avi"), "inbox")
        assert first.status is Status.QUEUED and first.source is None  # a slot was free
        second = await intake.admit(dropped("b.avi"), "inbox")
        assert second.source is not None  # it waits for a slot: probed meanwhile
        await db.cancel(first.id, was=Status.QUEUED)
        await db.cancel(second.id, was=Status.QUEUED)
        upload = await intake.admit(dropped("c.avi"), "upload")
        assert upload.source is not None  # its 201/422 answer needs the probe
        await db.cancel(upload.id, was=Status.QUEUED)
        full_rate = await intake.admit(dropped("d.avi"), "inbox", profile="web-full-rate")
        assert full_rate.source is not None  # repackaging or not needs the codecs
        await db.cancel(full_rate.id, was=Status.QUEUED)
        assert (await Intake(cfg, db, Layout(cfg.storage)).admit(dropped("e.avi"), "inbox")).source


async def test_a_waiting_inbox_file_is_probed_below_the_encodes(make_config, clip, monkeypatch):
    """Nobody waits on the probe of a file that waits for a slot: it runs at nice 10, not
    above the first encode (nice 5); an upload's probe, which its answer waits on, at 0."""
    from vidd import intake as intake_module
    from vidd import probe as probe_module

    niceness: list[int] = []
    real_probe = probe_module.probe

    async def recording(handbrake, path, box=None, nice=0):
        niceness.append(nice)
        return await real_probe(handbrake, path, box, nice=nice)

    monkeypatch.setattr(probe_module, "probe", recording)
    cfg = make_config(FULL_RATE, encode={"max_parallel": 1})
    cfg.storage.inbox_dir.mkdir(parents=True)
    async with Store(cfg.storage.db_path) as db:
        intake = Intake(cfg, db, Layout(cfg.storage), scan_in_encode=True)
        for i, origin in enumerate(("inbox", "inbox", "upload")):
            dropped = Path(shutil.copyfile(clip, cfg.storage.inbox_dir / f"{i}.avi"))
            await intake.admit(dropped, origin)
    assert niceness == [intake_module.WAITING_PROBE_NICE, 0]  # the first one was not probed


# --- end to end through the pool (pool._outcome: reject_scanned, finish(source=)) ---


async def pool_and_intake(cfg, db: Store) -> tuple[Pool, Intake]:
    layout = Layout(cfg.storage)
    layout.make_dirs()
    pool = Pool(cfg, db, Encoder(cfg, layout), layout)
    db.subscribe(pool)
    pool.start()
    return pool, Intake(cfg, db, layout, scan_in_encode=True)


async def ended(db: Store, job_id: str, timeout: float = 60.0) -> Job:
    async with asyncio.timeout(timeout):
        while True:
            job = await db.get(job_id)
            assert job is not None
            if job.status in (Status.DONE, Status.FAILED, Status.REJECTED, Status.CANCELLED):
                return job
            await asyncio.sleep(0.05)


Drop = Callable[[Path, str], Awaitable[Job]]


@contextlib.asynccontextmanager
async def through_the_pool(
    make_config, listener: object | None = None
) -> AsyncIterator[tuple[Any, Store, Drop]]:
    """A store (heard by `listener`), a started pool and an intake that leaves the probe
    to the encode: (config, store, drop), where drop(src, name) copies a file into the
    inbox and admits it."""
    cfg = make_config()
    cfg.storage.inbox_dir.mkdir(parents=True)
    async with Store(cfg.storage.db_path) as db:
        if listener is not None:
            db.subscribe(listener)
        pool, intake = await pool_and_intake(cfg, db)

        async def drop(src: Path, name: str) -> Job:
            path = Path(shutil.copyfile(src, cfg.storage.inbox_dir / name))
            return await intake.admit(path, "inbox")

        try:
            yield cfg, db, drop
        finally:
            await pool.stop(5)


async def test_through_the_pool_a_text_file_ends_rejected_and_kept(make_config, not_videos):
    async with through_the_pool(make_config) as (cfg, db, drop):
        job = await drop(not_videos["notes.txt"], "n.txt")
        assert job.source is None
        job = await ended(db, job.id)
        assert job.status is Status.REJECTED
        assert job.rejected_as is not None
        assert (cfg.storage.rejected_dir / job.rejected_as).read_text() == TEXT


async def test_through_the_pool_a_clip_ends_done_with_its_source_facts(make_config, clip):
    async with through_the_pool(make_config) as (_, db, drop):
        job = await drop(clip, "clip.avi")
        assert job.source is None
        job = await ended(db, job.id)
        assert job.status is Status.DONE
        assert job.source is not None and job.source.video_codec == "mpeg4"


async def test_the_page_hears_the_source_facts_while_the_encode_runs(make_config, clip_dir):
    """Queued unprobed, a job's source facts reach the store (and so the page) as soon as
    its encode's scan finds them, while it runs, not only with the done record."""
    long_clip = make_clip(clip_dir / "scan-six.avi", seconds=6)
    seen: list[Job] = []

    class Listener:
        def job_changed(self, job: Job, *, progress_only: bool) -> None:
            if not progress_only:
                seen.append(job)

        def job_deleted(self, job_id: str) -> None:
            pass

    async with through_the_pool(make_config, Listener()) as (_, db, drop):
        job = await drop(long_clip, "six.avi")
        assert job.source is None
        done = await ended(db, job.id)
        assert done.status is Status.DONE
    running = [j for j in seen if j.id == job.id and j.status is Status.RUNNING and j.source]
    assert running, [(j.status, j.source) for j in seen]
    assert running[0].source == done.source  # the same facts the done record keeps
    assert running[0].source is not None and running[0].source.duration == pytest.approx(6, abs=0.2)
