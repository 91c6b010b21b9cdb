"""The encoder: real HandBrakeCLI encodes verified end to end, and every way an encode can
fail (the fake HandBrakeCLI stalls, crashes and lies on demand) leaves tmp/ clean."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from testkit.jobs import make_job
from testkit.media import ffprobe, make_clip, mp4_top_boxes
from testkit.tmpfs import tiny_disk
from vidd import children
from vidd.config import Profile
from vidd.encoder import EncodeFailed, Encoder, Priority, output_rate
from vidd.job import Job, Status, new_id
from vidd.layout import Layout
from vidd.probe import probe
from vidd.progress import Progress

HANDBRAKE = "/usr/bin/HandBrakeCLI"
FAKE = Path(__file__).parent / "fake_handbrake.py"
PROFILES = """
[encode.profiles.web]
args = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]

[encode.profiles.cut]
args = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O", "--stop-at", "seconds:1"]

[encode.profiles.late]
args = ["-e", "x264", "-q", "22", "--start-at", "seconds:100"]
"""


# What the fake reads from its environment: vidd passes these on only when told to.
FAKE_ENV = ["FAKE_HB_MODE", "FAKE_HB_PIDS_OUT", "FAKE_HB_SHOW_ENV"]


def fake_pids(log_tail: str) -> list[int]:
    line = next(x for x in log_tail.splitlines() if x.startswith("fake pids: "))
    return list(json.loads(line.removeprefix("fake pids: ")))


def fake_env(log_tail: str) -> dict[str, str]:
    line = next(x for x in log_tail.splitlines() if x.startswith("fake env: "))
    return dict(json.loads(line.removeprefix("fake env: ")))


@pytest.fixture(scope="session")
def fake_handbrake() -> str:
    # git may not keep the executable bit
    FAKE.chmod(FAKE.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(FAKE)


@pytest.fixture(scope="session")
def long_clip(clip_dir: Path) -> Path:
    """A 30 s 640x480 clip: its encode takes a few seconds, long enough to cancel."""
    return make_clip(clip_dir / "long.avi", seconds=30, size="640x480")


async def intake_job(cfg, clip: Path, profile: str = "web") -> Job:
    """A job as the intake leaves it: the source in sources/<id><ext>, probed."""
    for d in (cfg.storage.sources_dir, cfg.storage.videos_dir, cfg.storage.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)
    job_id = new_id()
    source = cfg.storage.sources_dir / f"{job_id}{clip.suffix}"
    shutil.copyfile(clip, source)
    return make_job(
        id=job_id,
        name=clip.name,
        status=Status.RUNNING,
        profile=profile,
        source_ext=clip.suffix,
        source=await probe(HANDBRAKE, source),
    )


def assert_clean(cfg, job: Job) -> None:
    """After a failure: tmp/ empty, no output, the source untouched."""
    assert list(cfg.storage.tmp_dir.iterdir()) == []
    assert not (cfg.storage.videos_dir / f"{job.id}.mp4").exists()
    assert not (cfg.storage.videos_dir / f"{job.id}.jpg").exists()
    assert (cfg.storage.sources_dir / job.source_file).stat().st_size == job.source.size


def frame_times(video: Path) -> list[float]:
    out = subprocess.run(  # noqa: S603 - an argument list, no shell
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            str(video),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return sorted(float(t) for t in out.split())


def gone(pid: int, within: float = 2.0) -> bool:
    """True once a process has exited (a zombie left to a non-reaping init counts), within
    `within` seconds: a SIGKILL sent to a group is delivered at once, but a process takes
    a moment to finish exiting, longer on a loaded machine."""
    deadline = time.monotonic() + within
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def policies(pid: int) -> set[int]:
    """The scheduling policies of a process's threads."""
    return {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


async def stalling(make_config, fake_handbrake, clip, monkeypatch, **encode):
    """An encoder and a job whose fake HandBrake stalls (1 s stall timeout unless `encode`
    says otherwise), and the file the fake writes its pids to."""
    monkeypatch.setenv("FAKE_HB_MODE", "stall")
    settings = {"stall_timeout_s": 1.0, "kill_grace_s": 1.0, **encode}
    cfg = make_config(encode={"handbrake": fake_handbrake, "child_env": FAKE_ENV, **settings})
    job = await intake_job(cfg, clip)
    pids_file = Layout(cfg.storage).work(job.id) / "pids.json"  # the one folder it may write
    monkeypatch.setenv("FAKE_HB_PIDS_OUT", str(pids_file))
    return cfg, Encoder(cfg, Layout(cfg.storage)), job, pids_file


async def pids_from(pids_file: Path) -> list[int]:
    """The fake's pid and its grandchild's, once it has written them."""
    while not pids_file.exists() or not pids_file.read_text():
        await asyncio.sleep(0.02)
    return list(json.loads(pids_file.read_text()))


async def test_a_real_encode_is_verified_and_published(clip, make_config):
    cfg = make_config(PROFILES)
    job = await intake_job(cfg, clip)
    seen: list[Progress] = []
    encoder = Encoder(cfg, Layout(cfg.storage))

    result = await encoder.run(job, seen.append)

    video = cfg.storage.videos_dir / f"{job.id}.mp4"
    info = ffprobe(video)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    # `-r 15` alone is HandBrake's peak frame rate (--pfr): no two frames closer than 1/15 s,
    # so ffprobe's r_frame_rate reads 75/1 (a common time base) while the average is ~15.
    num, den = map(int, streams["video"]["avg_frame_rate"].split("/"))
    assert 13.5 <= num / den <= 15.05
    times = frame_times(video)
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 1 / 15 - 0.002
    boxes = mp4_top_boxes(video)
    assert boxes.index("moov") < boxes.index("mdat")  # plays while it downloads
    assert result.output.size == video.stat().st_size
    assert abs(result.output.duration - job.source.duration) < 0.5

    poster = cfg.storage.videos_dir / f"{job.id}.jpg"
    assert not poster.exists()  # the job is done without it; the pool asks for it after
    assert await encoder.make_poster(job.id, result.output.duration)
    assert poster.read_bytes()[:3] == b"\xff\xd8\xff"
    picture = ffprobe(poster)["streams"][0]
    assert picture["width"] == min(480, job.source.width)

    values = [p.progress for p in seen]
    assert values and values == sorted(values) and values[-1] >= 0.95
    assert "encoding" in {p.phase for p in seen}
    assert "x264" in result.log_tail or "libhb" in result.log_tail
    assert list(cfg.storage.tmp_dir.iterdir()) == []
    assert (cfg.storage.sources_dir / job.source_file).exists()
    assert encoder.running == {}


async def test_the_command_is_handbrakes_own_arguments_only(make_config):
    cfg = make_config(PROFILES)
    job = make_job(name="x.mkv", status=Status.RUNNING, source_ext=".mkv")
    args = Encoder(cfg, Layout(cfg.storage)).command(job)
    assert args[:2] == [cfg.encode.handbrake, "--json"]
    assert args[args.index("-i") + 1] == str(cfg.storage.sources_dir / f"{job.id}.mkv")
    assert args[args.index("-o") + 1] == str(Layout(cfg.storage).tmp_video(job.id))
    assert args[args.index("--format") + 1] == "av_mp4"
    assert args[-9:] == list(cfg.encode.profiles["web"].args)


def test_output_rate_is_read_from_the_profile():
    assert output_rate(Profile(args=("-e", "x264", "-r", "15"))) == 15.0
    assert output_rate(Profile(args=("--rate=29.97",))) == 29.97
    assert output_rate(Profile(args=("-r", "fast"))) is None
    assert output_rate(Profile(preset="Fast 1080p30")) is None


async def test_a_stall_is_stopped_with_its_whole_group(
    clip, make_config, fake_handbrake, monkeypatch, tmp_path
):
    monkeypatch.setenv("FAKE_HB_MODE", "stall")
    cfg = make_config(
        encode={
            "handbrake": fake_handbrake,
            "stall_timeout_s": 1.0,
            "kill_grace_s": 1.0,
            "child_env": FAKE_ENV,
        }
    )
    job = await intake_job(cfg, clip)
    seen: list[Progress] = []

    with pytest.raises(EncodeFailed) as failed:
        await asyncio.wait_for(Encoder(cfg, Layout(cfg.storage)).run(job, seen.append), 20)

    assert failed.value.code == "stalled"
    assert "still thinking" in failed.value.log_tail  # it kept talking, but made no progress
    assert seen[-1].progress == pytest.approx(0.3)
    assert all(gone(pid) for pid in fake_pids(failed.value.log_tail))
    assert_clean(cfg, job)


@pytest.mark.parametrize(
    ("mode", "code", "words"),
    [
        ("crash", "crashed", "SIGSEGV"),
        ("exitcode:2", "exit_code", "exit code 2"),
        ("exitcode:3", "exit_code", "exit code 3"),
        ("exitcode:5", "exit_code", "could not read"),
        ("exit0_no_workdone", "no_workdone", "without saying"),
        ("workdone_error", "workdone_error", "error 3"),
    ],
)
async def test_failures_are_reported_and_cleaned_up(
    clip, make_config, fake_handbrake, monkeypatch, mode, code, words
):
    monkeypatch.setenv("FAKE_HB_MODE", mode)
    cfg = make_config(encode={"handbrake": fake_handbrake, "child_env": FAKE_ENV})
    job = await intake_job(cfg, clip)
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert failed.value.code == code
    assert words in failed.value.message
    assert "hb_init" in failed.value.log_tail
    assert_clean(cfg, job)


async def test_no_space_left_in_the_log_is_disk_full(
    clip, make_config, fake_handbrake, monkeypatch
):
    monkeypatch.setenv("FAKE_HB_MODE", "nospace")
    cfg = make_config(encode={"handbrake": fake_handbrake, "child_env": FAKE_ENV})
    job = await intake_job(cfg, clip)
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert failed.value.code == "disk_full"
    assert failed.value.message.startswith("the disk filled up")
    assert "exit code" not in failed.value.message
    assert "No space left on device" in failed.value.log_tail
    assert_clean(cfg, job)


@pytest.mark.parametrize(
    ("seconds", "disk", "says_so"),
    [
        (30, "256k", True),  # a frame write fails: "No space left on device", exit 4
        (10, "64k", False),  # the last write fails: exit 0, WorkDone 0, nothing said
    ],
    ids=["handbrake-says-so", "handbrake-silent"],
)
async def test_real_handbrake_on_a_full_disk_is_disk_full(
    make_config, tmp_path, seconds, disk, says_so
):
    cfg = make_config()
    clip = make_clip(tmp_path / f"{seconds}s.avi", seconds=seconds, size="640x480")
    job = await intake_job(cfg, clip)
    with tiny_disk(cfg.storage.tmp_dir, disk):
        with pytest.raises(EncodeFailed) as failed:
            await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
        assert failed.value.code == "disk_full", failed.value.message
        assert ("No space left on device" in failed.value.log_tail) is says_so
        assert "HandBrake has exited" in failed.value.log_tail
        assert_clean(cfg, job)


async def test_an_output_shorter_than_its_source_fails(clip_h264, make_config):
    cfg = make_config(PROFILES)
    job = await intake_job(cfg, clip_h264, profile="cut")  # --stop-at seconds:1 on 3 s
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert failed.value.code == "duration_mismatch"
    assert_clean(cfg, job)


async def test_exit_0_and_workdone_0_with_a_broken_output_fails(clip, make_config):
    # A real HandBrakeCLI lie: starting past the end exits 0, says WorkDone Error 0, and
    # writes a few hundred bytes of MP4 with nothing in it.
    cfg = make_config(PROFILES)
    job = await intake_job(cfg, clip, profile="late")
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert failed.value.code in ("bad_output", "no_output")
    assert_clean(cfg, job)


async def test_cancelling_a_real_encode_reaps_it_and_cleans_up(long_clip, make_config):
    cfg = make_config(PROFILES)
    job = await intake_job(cfg, long_clip)
    encoder = Encoder(cfg, Layout(cfg.storage))
    started = asyncio.Event()
    procs = []

    def on_progress(p: Progress) -> None:
        if p.phase == "encoding" and p.progress < 0.9:
            procs.append(encoder.running[job.id])
            started.set()

    task = asyncio.create_task(encoder.run(job, on_progress))
    await asyncio.wait_for(started.wait(), 30)
    assert Layout(cfg.storage).tmp_video(job.id).exists()  # really mid-encode
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert procs[0].returncode is not None
    assert gone(procs[0].pid)
    assert encoder.running == {}
    assert_clean(cfg, job)


async def test_renice_and_kill_all_reach_a_running_encode(
    clip, make_config, fake_handbrake, monkeypatch, tmp_path
):
    cfg, encoder, job, pids_file = await stalling(
        make_config, fake_handbrake, clip, monkeypatch, stall_timeout_s=120.0
    )
    started = asyncio.Event()
    task = asyncio.create_task(encoder.run(job, lambda p: started.set(), priority=Priority(3)))
    await asyncio.wait_for(started.wait(), 20)
    pid, grandchild = await pids_from(pids_file)
    assert os.getpriority(os.PRIO_PROCESS, pid) == 3
    assert encoder.renice(job.id, Priority(7))
    assert os.getpriority(os.PRIO_PROCESS, pid) == 7
    assert os.getpriority(os.PRIO_PROCESS, grandchild) == 7  # the whole group
    assert not encoder.renice("no-such-job", Priority(7))

    encoder.kill_all()
    with pytest.raises(EncodeFailed) as failed:
        await asyncio.wait_for(task, 10)
    assert failed.value.code == "killed"
    assert gone(pid) and gone(grandchild)
    assert_clean(cfg, job)


async def test_background_reaches_the_whole_group_and_pauses_the_stall_clock(
    clip, make_config, fake_handbrake, monkeypatch
):
    """An encode ranked behind another runs in the background (SCHED_IDLE), grandchild
    and all, and may be starved there on purpose: it is not stalled however long it
    goes without progress. Moved up, it is back to normal and its stall clock runs."""
    if not children.can_move_up():
        pytest.skip("needs the right to move a child up again (root or CAP_SYS_NICE)")
    cfg, encoder, job, pids_file = await stalling(make_config, fake_handbrake, clip, monkeypatch)
    priority = Priority(15, background=True)
    task = asyncio.create_task(encoder.run(job, lambda p: None, priority=priority))
    pids = await pids_from(pids_file)
    assert len(os.listdir(f"/proc/{pids[0]}/task")) >= 2  # the fake's threads, every one:
    for pid in pids:
        assert policies(pid) == {os.SCHED_IDLE}
        assert os.getpriority(os.PRIO_PROCESS, pid) == 15

    await asyncio.sleep(2.5)  # 2.5 stall timeouts without progress, in the background
    assert not task.done()

    moved = time.monotonic()
    priority.nice, priority.background = 5, False
    assert encoder.renice(job.id, priority)
    for pid in pids:
        assert policies(pid) == {os.SCHED_OTHER}
        assert os.getpriority(os.PRIO_PROCESS, pid) == 5
    with pytest.raises(EncodeFailed) as failed:
        await asyncio.wait_for(task, 20)
    assert failed.value.code == "stalled"
    assert time.monotonic() - moved >= 1.0  # the clock started when it moved up
    assert all(gone(pid) for pid in pids)
    assert_clean(cfg, job)


async def test_where_nothing_can_move_up_the_background_is_a_nice_value_only(
    clip, make_config, fake_handbrake, monkeypatch, caplog
):
    """Without the privilege to move a job up again, none goes into the background: one
    left there when it comes first would be starved by those behind it. Not in the
    background, its stall clock runs."""
    monkeypatch.setattr(children, "can_move_up", lambda: False)
    caplog.set_level(logging.INFO, logger="vidd.encoder")
    cfg, encoder, job, pids_file = await stalling(make_config, fake_handbrake, clip, monkeypatch)
    task = asyncio.create_task(
        encoder.run(job, lambda p: None, priority=Priority(15, background=True))
    )
    pid = (await pids_from(pids_file))[0]
    assert policies(pid) == {os.SCHED_OTHER}
    assert os.getpriority(os.PRIO_PROCESS, pid) == 15
    assert "ranked by nice value only" in caplog.text
    with pytest.raises(EncodeFailed) as failed:
        await asyncio.wait_for(task, 10)
    assert failed.value.code == "stalled"
    assert_clean(cfg, job)


async def test_a_priority_changed_while_the_encode_starts_is_the_one_it_gets(
    clip, make_config, fake_handbrake, monkeypatch
):
    """The pool may move a job up before its HandBrake runs (the one ahead ended): the
    encode must not start in the background anyway."""
    if not children.can_move_up():
        pytest.skip("needs the right to move a child up again (root or CAP_SYS_NICE)")
    cfg, encoder, job, pids_file = await stalling(
        make_config, fake_handbrake, clip, monkeypatch, stall_timeout_s=60.0
    )
    priority = Priority(15, background=True)
    task = asyncio.create_task(encoder.run(job, lambda p: None, priority=priority))
    await asyncio.sleep(0)  # it has started, HandBrake not yet
    priority.nice, priority.background = 5, False
    assert not encoder.renice(job.id, priority)  # not running yet: taken when it runs
    pid = (await pids_from(pids_file))[0]
    assert policies(pid) == {os.SCHED_OTHER}
    assert os.getpriority(os.PRIO_PROCESS, pid) == 5
    encoder.kill_all()
    with pytest.raises(EncodeFailed):
        await asyncio.wait_for(task, 10)
    assert_clean(cfg, job)


async def test_the_child_does_not_inherit_the_notify_socket(
    clip, make_config, fake_handbrake, monkeypatch, tmp_path
):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("VIDD_TOKEN", "a secret the child must not see")
    monkeypatch.setenv("FAKE_HB_MODE", "workdone_error")
    monkeypatch.setenv("FAKE_HB_SHOW_ENV", "1")
    cfg = make_config(encode={"handbrake": fake_handbrake, "child_env": FAKE_ENV})
    job = await intake_job(cfg, clip)
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    env = fake_env(failed.value.log_tail)
    assert env["FAKE_HB_MODE"] == "workdone_error"  # passed on: encode.child_env names it
    # Only what it needs: PATH, HOME, TMPDIR, LANG (and what child_env names), plus the
    # two variables stdbuf itself adds to make HandBrake's stdout line-buffered.
    stdbuf = {"LD_PRELOAD", "_STDBUF_O"}
    assert set(env) - set(FAKE_ENV) - stdbuf == {"PATH", "HOME", "TMPDIR", "LANG"}, sorted(env)
    # HandBrake's scratch folder is the job's work folder, where vidd cleans up after it.
    assert env["TMPDIR"] == env["HOME"] == str(cfg.storage.tmp_dir / f"{job.id}.work")
    assert_clean(cfg, job)


async def test_a_missing_handbrake_or_source_fails_cleanly(
    clip, make_config, fake_handbrake, tmp_path
):
    copy = tmp_path / "HandBrakeCLI"
    shutil.copy(fake_handbrake, copy)
    cfg = make_config(encode={"handbrake": str(copy)})
    job = await intake_job(cfg, clip)
    copy.unlink()
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert failed.value.code == "spawn_failed"
    assert_clean(cfg, job)

    (cfg.storage.sources_dir / job.source_file).unlink()
    with pytest.raises(EncodeFailed) as failed:
        await Encoder(cfg, Layout(cfg.storage)).run(job, lambda p: None)
    assert failed.value.code == "source_missing"
    assert list(cfg.storage.tmp_dir.iterdir()) == []


async def test_a_poster_failure_does_not_fail_the_job(clip, make_config):
    cfg = make_config(PROFILES, encode={"ffmpeg": "/bin/false"})
    job = await intake_job(cfg, clip)
    encoder = Encoder(cfg, Layout(cfg.storage))
    result = await encoder.run(job, lambda p: None)
    assert await encoder.make_poster(job.id, result.output.duration) is False
    assert (cfg.storage.videos_dir / f"{job.id}.mp4").stat().st_size == result.output.size
    assert not (cfg.storage.videos_dir / f"{job.id}.jpg").exists()
    assert list(cfg.storage.tmp_dir.iterdir()) == []


async def test_a_crashed_progress_callback_does_not_leave_handbrake_running(
    clip, make_config, fake_handbrake, monkeypatch, tmp_path
):
    monkeypatch.setenv("FAKE_HB_MODE", "stall")
    cfg = make_config(
        encode={"handbrake": fake_handbrake, "kill_grace_s": 1.0, "child_env": FAKE_ENV}
    )
    job = await intake_job(cfg, clip)
    pids_file = Layout(cfg.storage).work(job.id) / "pids.json"
    monkeypatch.setenv("FAKE_HB_PIDS_OUT", str(pids_file))
    pids: list[int] = []

    def broken(p: Progress) -> None:
        if pids_file.exists() and pids_file.read_text():
            pids.extend(json.loads(pids_file.read_text()))
            raise RuntimeError("a bug in the callback")

    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(Encoder(cfg, Layout(cfg.storage)).run(job, broken), 20)
    assert len(pids) == 2 and all(gone(pid) for pid in pids)
    assert_clean(cfg, job)
