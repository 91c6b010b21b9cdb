"""Nothing lost, nothing stuck, under kill -9: a real daemon and the real HandBrakeCLI on
tiny clips, killed again and again at random moments while files are dropped into the
inbox and uploaded, then restarted on the same data folder. At the end every input is
exactly one terminal job (or still waits in the inbox), every output verifies, and
nothing is left over in sources/, tmp/ or the process table.

The randomness is seeded: VIDD_STRESS_SEED=<n> replays a run's choices (the timing of the
machine itself can't be replayed). The seed is printed, and every assertion carries it.
This test takes about a minute; VIDD_STRESS_CYCLES=<n> makes a longer soak of it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testkit.browser import ROOT
from testkit.daemon import Daemon, get_json, wait_for
from testkit.media import ffprobe, make_clip

CYCLES = int(os.environ.get("VIDD_STRESS_CYCLES") or 12)
TERMINAL = {"done", "failed", "cancelled", "rejected"}
TEXT = b"".join(b"line %d: notes to self, certainly not a video\n" % i for i in range(60))
# Files the watcher must leave alone: they are in the inbox before the first start and
# must still be there, untouched, at the end.
IGNORED = (".hidden.avi", "still-downloading.avi.part", "backup.avi~")
DURATION_SLACK_S = 0.35


@pytest.fixture(scope="session")
def stress_clips(clip_dir: Path) -> dict[str, tuple[bytes, float]]:
    """Two tiny clips of different lengths, so that each output's length can be checked
    against its own input's."""
    clips = {}
    for seconds in (1.0, 1.6):
        path = make_clip(clip_dir / f"stress-{seconds}s.avi", seconds=seconds)
        clips[f"{seconds}s"] = (path.read_bytes(), seconds)
    return clips


@dataclass
class Input:
    name: str
    kind: str  # "video" or "text"
    way: str  # "drop" (renamed in), "slow" (written in place), "upload", "slow-upload"
    seconds: float = 0.0  # a video's length
    digest: str = ""  # of its bytes: what vidd keeps must be this very file
    cycle: int = 0
    answer: str = ""  # uploads: "201", "422", "429", "503", "cut", "refused", or unexpected
    job_id: str | None = None  # the id a 201 answered with

    @property
    def uploaded(self) -> bool:
        return self.way.endswith("upload")


def daemon_env() -> dict[str, str]:
    """The daemon imports this checkout's vidd, whatever the venv has installed."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def pieces(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


def post_file(url: str, name: str, data: bytes, delays: list[float]) -> tuple[str, str | None]:
    """POST /api/jobs as multipart, the body sent in len(delays) pieces with a pause after
    each. Returns (answer, job id)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/api/jobs")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        for piece, delay in zip(pieces(body, len(delays)), delays, strict=False):
            conn.send(piece)
            time.sleep(delay)
        resp = conn.getresponse()
        payload = resp.read()
    except ConnectionRefusedError:  # the daemon was down: it never saw this upload
        return "refused", None
    except (OSError, http.client.HTTPException):  # cut by the kill, at any point
        return "cut", None
    finally:
        conn.close()
    if resp.status == 201:
        return "201", str(json.loads(payload)["id"])
    if resp.status == 422:
        return "422", None
    if resp.status in (429, 503):  # too many at once: turned away before it was taken
        return str(resp.status), None
    return f"HTTP {resp.status}: {payload[:300]!r}", None


def write_slowly(path: Path, data: bytes, delays: list[float]) -> None:
    """Write a file in place, in pieces, holding it open for writing throughout."""
    with open(path, "xb") as f:
        for piece, delay in zip(pieces(data, len(delays)), delays, strict=False):
            f.write(piece)
            f.flush()
            time.sleep(delay)


def strays(data_dir: Path) -> list[str]:
    """Processes other than this one whose command line names the data folder: encodes,
    probes or posters that outlived their daemon."""
    needle = str(data_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmd:
            words = cmd.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {words}")
    return found


RECOVERED = re.compile(
    r"recovered: (\d+) admission\(s\) finished or rolled back, (\d+) job\(s\) back to the "
    r"queue, (\d+) leftover\(s\) removed from tmp/"
)


class Stress:
    """The inputs sent so far, and the means to send more."""

    def __init__(
        self, seed: int, tmp_path: Path, clips: dict[str, tuple[bytes, float]], inbox: Path
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clips = clips
        self.inbox = inbox
        self.staging = tmp_path / "staging"  # same filesystem: a drop is one rename
        self.staging.mkdir()
        self.inputs: list[Input] = []
        self.uploads: list[threading.Thread] = []
        self.writers: list[threading.Thread] = []
        self.cycle = 0
        self.ctx = f"[VIDD_STRESS_SEED={seed}]"

    def _new(self, kind: str, way: str) -> tuple[Input, bytes]:
        if kind == "video":
            label = self.rng.choice(sorted(self.clips))
            data, seconds = self.clips[label]
            ext = ".avi"
        else:
            data, seconds, label, ext = TEXT, 0.0, "notes", ".txt"
        name = f"c{self.cycle:02d}-{len(self.inputs):03d}-{way}-{label}{ext}"
        digest = hashlib.sha256(data).hexdigest()
        inp = Input(name, kind, way, seconds=seconds, digest=digest, cycle=self.cycle)
        self.inputs.append(inp)
        return inp, data

    def _kind(self) -> str:
        return "text" if self.rng.random() < 0.15 else "video"

    def drop(self, kind: str | None = None) -> Input:
        """Made outside the inbox, then renamed in: the way a careful tool delivers."""
        inp, data = self._new(kind or self._kind(), "drop")
        staged = self.staging / inp.name
        staged.write_bytes(data)
        os.rename(staged, self.inbox / inp.name)
        return inp

    def slow_drop(self) -> Input:
        """Written in place over a second or two (it may outlive the daemon it began under)."""
        inp, data = self._new("video", "slow")
        delays = [self.rng.uniform(0.1, 0.4) for _ in range(self.rng.randint(3, 6))]
        t = threading.Thread(target=write_slowly, args=(self.inbox / inp.name, data, delays))
        t.start()
        self.writers.append(t)
        return inp

    def upload(self, url: str, kind: str | None = None, slow: bool | None = None) -> Input:
        slow = self.rng.random() < 0.3 if slow is None else slow
        inp, data = self._new(kind or self._kind(), "slow-upload" if slow else "upload")
        delays = [self.rng.uniform(0.05, 0.3) for _ in range(4)] if slow else [0.0]

        def send() -> None:
            inp.answer, inp.job_id = post_file(url, inp.name, data, delays)

        t = threading.Thread(target=send)
        t.start()
        self.uploads.append(t)
        return inp

    def anything(self, url: str) -> Input:
        way = self.rng.choices(["drop", "slow", "upload"], weights=[5, 1, 4])[0]
        if way == "drop":
            return self.drop()
        if way == "slow":
            return self.slow_drop()
        return self.upload(url)

    def join_uploads(self) -> None:
        for t in self.uploads:
            t.join(40)
            assert not t.is_alive(), f"{self.ctx} an upload hangs"
        self.uploads.clear()

    def join_all(self) -> None:
        self.join_uploads()
        for t in self.writers:
            t.join(40)
            assert not t.is_alive(), f"{self.ctx} a slow writer hangs"


def kill(d: Daemon, ctx: str) -> None:
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    # Its encodes, probes and posters die with it (PDEATHSIG), before anything restarts.
    wait_for(lambda: not strays(d.data), timeout=10, interval=0.05)


def settled(d: Daemon) -> list[dict[str, Any]] | None:
    """All jobs, once every one has ended and only ignored files are left in the inbox."""
    waiting = [p.name for p in d.inbox.iterdir() if p.name not in IGNORED]
    if waiting:
        return None
    jobs: list[dict[str, Any]] = get_json(d.url + "/api/jobs?limit=500")["jobs"]
    if any(j["status"] not in TERMINAL for j in jobs):
        return None
    if posters_owed(d):  # a done job's poster follows its done record
        return None
    return jobs


def posters_owed(d: Daemon) -> int:
    db = sqlite3.connect(d.config.storage.db_path)
    try:
        [[owed]] = db.execute("SELECT COUNT(*) FROM jobs WHERE poster_pending = 1").fetchall()
    finally:
        db.close()
    return int(owed)


@pytest.mark.timeout(300)
def test_kill_9_at_random_moments_loses_nothing(
    daemon_factory: Callable[..., Daemon],
    tmp_path: Path,
    stress_clips: dict[str, tuple[bytes, float]],
) -> None:
    seed = int(os.environ.get("VIDD_STRESS_SEED") or time.time_ns() % 1_000_000_007)
    print(f"\nstress: VIDD_STRESS_SEED={seed}")
    began = time.monotonic()
    env = daemon_env()
    d = daemon_factory(
        env=env,
        encode={"max_parallel": 2, "stall_timeout_s": 30.0, "kill_grace_s": 1.0},
        watch={"stable_seconds": 2.0, "rescan_seconds": 1.0},
    )
    data, inbox = d.data, d.inbox
    for name in IGNORED:
        (inbox / name).write_bytes(TEXT)
    s = Stress(seed, tmp_path, stress_clips, inbox)
    ctx = s.ctx
    logs = [d]
    plan = Counter[str]()

    for cycle in range(CYCLES):
        s.cycle = cycle
        mode = s.rng.choices(["intake", "random", "early"], weights=[5, 4, 1])[0]
        plan[mode] += 1
        if mode == "early":
            # Killed while the last start's recovery may still be probing.
            time.sleep(s.rng.uniform(0.0, 0.4))
        else:
            until = time.monotonic() + s.rng.uniform(0.8, 2.5)
            while time.monotonic() < until:
                s.anything(d.url)
                time.sleep(s.rng.uniform(0.05, 0.5))
            if mode == "intake":
                # Aimed at an admission: the watcher takes a drop ~0.35 s after it lands
                # and probes it for ~0.3 s; an upload is probed as soon as it is in.
                if s.rng.random() < 0.6:
                    s.drop()
                    time.sleep(s.rng.uniform(0.3, 1.0))
                else:
                    s.upload(d.url, slow=False)
                    time.sleep(s.rng.uniform(0.02, 0.6))
            else:
                time.sleep(s.rng.uniform(0.0, 1.5))
        kill(d, ctx)
        s.join_uploads()
        if cycle < CYCLES - 1 and s.rng.random() < 0.3:
            s.drop()  # dropped while vidd is down: the next start's scan takes it
        d = daemon_factory(env=env)
        logs.append(d)
    killed_at = time.monotonic()

    # The last start: let everything settle, then take stock.
    s.join_all()
    jobs = wait_for(lambda: settled(d), timeout=90, interval=0.2)
    settled_at = time.monotonic()
    check_jobs(s, d, jobs)
    assert d.stop() == 0, f"{ctx} vidd did not stop cleanly:\n{d.log()[-3000:]}"
    check_files(s, d, jobs)
    check_database(s, d)
    assert not strays(data), f"{ctx} processes outlived vidd: {strays(data)}"

    recoveries = [tuple(map(int, m)) for x in logs for m in RECOVERED.findall(x.log())]
    answers = Counter(i.answer for i in s.inputs if i.uploaded)
    print(
        f"stress: seed {seed}: {CYCLES} kills ({dict(plan)}), {len(s.inputs)} inputs "
        f"{dict(Counter(i.way for i in s.inputs))}, {Counter(i.kind for i in s.inputs)['text']} "
        f"not videos; upload answers {dict(answers)}; {len(jobs)} jobs "
        f"{dict(Counter(j['status'] for j in jobs))}; starts that recovered admissions: "
        f"{sum(1 for r in recoveries if r[0])} ({sum(r[0] for r in recoveries)} admissions), "
        f"requeued jobs: {sum(r[1] for r in recoveries)}; cycles {killed_at - began:.1f} s, "
        f"settling {settled_at - killed_at:.1f} s, total {time.monotonic() - began:.1f} s"
    )


def check_jobs(s: Stress, d: Daemon, jobs: list[dict[str, Any]]) -> None:
    """Every input is exactly one job in the state it deserves; every output verifies."""
    ctx = s.ctx
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        by_name[job["name"]].append(job)
    known = {i.name for i in s.inputs}
    strangers = [(j["id"], j["name"], j["status"]) for j in jobs if j["name"] not in known]
    assert not strangers, f"{ctx} jobs that match no input: {strangers}"
    for inp in s.inputs:
        found = by_name[inp.name]
        what = f"{ctx} {inp}: {found}"
        if not inp.uploaded:
            assert len(found) == 1, what
        elif inp.answer == "201":
            assert [j["id"] for j in found] == [inp.job_id], what
        elif inp.answer == "422":
            assert len(found) == 1 and inp.kind == "text", what
        elif inp.answer == "cut":
            assert len(found) <= 1, what
        elif inp.answer in ("refused", "429", "503"):
            assert not found, what
        else:
            pytest.fail(f"unexpected answer to an upload: {what}")
        for job in found:
            expected = "done" if inp.kind == "video" else "rejected"
            assert job["status"] == expected, f"{what}\n{job_log(d, job['id'])}"
            if expected == "done":
                check_output(d, inp, job, ctx)
                kept = d.data / "sources" / f"{job['id']}{os.path.splitext(inp.name)[1]}"
                assert sha256(kept) == inp.digest, f"{what}: {kept.name} is not this input"
            elif not inp.uploaded:
                assert job["rejected_as"] == f"{job['id']}-{inp.name}", what
                aside = d.data / "rejected" / job["rejected_as"]
                assert sha256(aside) == inp.digest, f"{what}: {aside.name} is not this input"


def check_output(d: Daemon, inp: Input, job: dict[str, Any], ctx: str) -> None:
    video = d.data / "videos" / f"{job['id']}.mp4"
    assert video.is_file(), f"{ctx} {inp.name}: {video} is missing"
    info = ffprobe(video)
    codecs = sorted(st["codec_name"] for st in info["streams"])
    assert codecs == ["aac", "h264"], f"{ctx} {inp.name}: {codecs}"
    seconds = float(info["format"]["duration"])
    assert abs(seconds - inp.seconds) < DURATION_SLACK_S, f"{ctx} {inp.name}: {seconds} s"
    assert job["output"]["size"] == video.stat().st_size, f"{ctx} {inp.name}: {job['output']}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "(missing)"


def job_log(d: Daemon, job_id: str) -> str:
    return str(get_json(f"{d.url}/api/jobs/{job_id}").get("log_tail", ""))[-2000:]


def check_files(s: Stress, d: Daemon, jobs: list[dict[str, Any]]) -> None:
    """Every file vidd keeps belongs to a job, and every job has the files it should."""
    ctx = s.ctx
    data = d.data
    origin = {i.name: ("upload" if i.uploaded else "inbox") for i in s.inputs}
    done = [j for j in jobs if j["status"] == "done"]
    ext = {j["id"]: os.path.splitext(j["name"])[1] for j in jobs}
    sources = {p.name for p in (data / "sources").iterdir()}
    assert sources == {f"{j['id']}{ext[j['id']]}" for j in done}, (
        f"{ctx} sources/ holds {sorted(sources)}; the done jobs are {[j['id'] for j in done]}"
    )
    rejected = {p.name for p in (data / "rejected").iterdir()}
    expected_rejected = {
        f"{j['id']}-{j['name']}"
        for j in jobs
        if j["status"] == "rejected" and origin[j["name"]] == "inbox"
    }
    assert rejected == expected_rejected, f"{ctx} rejected/: {rejected} != {expected_rejected}"
    videos = {p.name for p in (data / "videos").iterdir()}
    expected_videos = {f"{j['id']}.mp4" for j in done}
    expected_videos |= {f"{j['id']}.jpg" for j in done if j["output"]["poster_url"]}
    assert videos == expected_videos, f"{ctx} videos/: {videos ^ expected_videos}"
    assert list((data / "tmp").iterdir()) == [], f"{ctx} tmp/: {list((data / 'tmp').iterdir())}"
    inbox = sorted(p.name for p in d.inbox.iterdir())
    assert inbox == sorted(IGNORED), f"{ctx} the inbox holds {inbox}"
    for name in IGNORED:
        assert (d.inbox / name).read_bytes() == TEXT, f"{ctx} {name} was touched"


def check_database(s: Stress, d: Daemon) -> None:
    ctx = s.ctx
    db = sqlite3.connect(d.config.storage.db_path)
    try:
        [[integrity]] = db.execute("PRAGMA integrity_check").fetchall()
        assert integrity == "ok", f"{ctx} integrity_check: {integrity}"
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        assert set(statuses) <= TERMINAL, f"{ctx} jobs not ended (admitting?): {statuses}"
        counted = {k: n for k, n in db.execute("SELECT status, n FROM job_counts") if n}
        assert counted == statuses, f"{ctx} job_counts {counted} != {statuses}"
        [[owed]] = db.execute("SELECT COUNT(*) FROM jobs WHERE poster_pending = 1").fetchall()
        assert owed == 0, f"{ctx} {owed} poster(s) still owed"
    finally:
        db.close()
