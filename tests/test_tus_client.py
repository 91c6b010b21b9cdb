"""vidd/tus_client.py against a real vidd: an upload in chunks becomes a job with the
same bytes; a progress callback that raises stops it; the next run resumes from the
server's offset; a daemon killed and restarted mid-upload is waited for and resumed."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import urllib.request
from pathlib import Path

import pytest

from testkit.daemon import get_json, wait_for
from testkit.noisy_clip import make_noisy_clip
from vidd.client import Client, Refused
from vidd.tus_client import TusSender, send

CHUNK = 1 << 20


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_noisy_clip(tmp_path_factory.mktemp("tus-client") / "noisy.avi")


@pytest.fixture
def vidd(daemon_factory):
    return daemon_factory(watch={"enabled": False})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_of(daemon, job: dict) -> Path:
    return daemon.data / "sources" / f"{job['id']}.avi"


def server_offset(url: str) -> int:
    req = urllib.request.Request(url, method="HEAD", headers={"Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.headers["Upload-Offset"])


class Stop(Exception):
    pass


def test_an_upload_in_chunks_becomes_a_job(vidd, video, tmp_path):
    sender = TusSender(Client(vidd.url), chunk_size=CHUNK, checksum=True)
    seen: list[tuple[int, int]] = []
    job = sender.send(video, "web", lambda sent, total: seen.append((sent, total)))
    size = video.stat().st_size
    assert (
        job["status"] in ("queued", "running", "done")
        and job["name"] == "noisy.avi"
        and job["profile"] == "web"
    )
    assert sender.patches == -(-size // CHUNK)
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert sha256(source_of(vidd, job)) == sha256(video)


def test_a_raising_callback_stops_it_and_the_next_run_resumes(vidd, video, tmp_path):
    resume = tmp_path / "resume.json"
    size = video.stat().st_size

    def stop_past_two_mib(sent: int, total: int) -> None:
        if sent > 2 * CHUNK + 100_000:
            raise Stop

    first = TusSender(Client(vidd.url), chunk_size=CHUNK, resume_file=resume)
    with pytest.raises(Stop):
        first.send(video, None, stop_past_two_mib)
    assert resume.exists()
    (url,) = json.loads(resume.read_text()).values()
    # The server notices the cut connection and keeps what came before it.
    wait_for(lambda: server_offset(vidd.url + url) > 2 * CHUNK, timeout=10)
    seen: list[int] = []
    second = TusSender(Client(vidd.url), chunk_size=CHUNK, resume_file=resume)
    job = second.send(video, None, lambda sent, total: seen.append(sent))
    # It went on from what the server kept: the cut PATCH's bytes included.
    assert seen[0] > 2 * CHUNK
    assert second.patches <= -(-(size - seen[0]) // CHUNK)
    assert sha256(source_of(vidd, job)) == sha256(video)
    assert "noisy" not in resume.read_text()  # forgotten once done


def test_a_daemon_killed_mid_upload_is_waited_for(vidd, video, tmp_path):
    restarted = threading.Event()

    def kill_once(sent: int, total: int) -> None:
        if sent > CHUNK + 200_000 and not restarted.is_set():
            restarted.set()
            vidd.stop(signal.SIGKILL)
            threading.Thread(target=vidd.start, daemon=True).start()

    delays = [0.5] * 40
    sender = TusSender(Client(vidd.url), chunk_size=CHUNK, retry_delays=delays)
    job = sender.send(video, None, kill_once)
    assert restarted.is_set()
    assert sha256(source_of(vidd, job)) == sha256(video)
    # Converted like any other upload.
    done = wait_for(
        lambda: (j := get_json(f"{vidd.url}/api/jobs/{job['id']}"))["status"] == "done" and j,
        timeout=120,
    )
    assert done["output"]["size"] > 0


def test_a_refusal_is_not_retried(daemon_factory, video, tmp_path):
    vidd = daemon_factory(watch={"enabled": False}, web={"max_upload_bytes": 1 << 20})
    sender = TusSender(Client(vidd.url), retry_delays=[0.1] * 3)
    with pytest.raises(Refused) as e:
        sender.send(video)
    assert e.value.status == 413 and sender.patches == 0
    with pytest.raises(Refused) as e:
        small = tmp_path / "small.avi"
        small.write_bytes(b"x" * 100)
        TusSender(Client(vidd.url)).send(small, "nope")
    assert e.value.status == 400 and e.value.code == "unknown_profile"


def test_send_is_a_drop_in_for_client_upload(vidd, video, tmp_path):
    job = send(Client(vidd.url), video, "web", resume_file=tmp_path / "resume.json")
    assert job["name"] == "noisy.avi" and job["status"] in ("queued", "running", "done")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"just some notes\n" * 64)
    with pytest.raises(Refused) as e:
        send(Client(vidd.url), notes)
    assert e.value.status == 422 and e.value.job and e.value.job["status"] == "rejected"
    assert e.value.message


def test_uploads_remembered_at_once_from_many_threads_are_all_kept(tmp_path: Path) -> None:
    """Several sends of one `vidd submit` share the resume file: none loses another's URL
    (a shared temp name or an unlocked read-modify-write would)."""
    resume = tmp_path / "resume.json"
    senders = [TusSender(Client("http://127.0.0.1:9"), resume_file=resume) for _ in range(8)]

    def remember(i: int) -> None:
        for j in range(25):
            senders[i]._remember(f"file-{i}-{j}", f"/api/uploads/{i}-{j}")

    threads = [threading.Thread(target=remember, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = json.loads(resume.read_text())
    assert len(kept) == 8 * 25
    assert kept["file-7-24"] == "/api/uploads/7-24"
    senders[0]._forget("file-7-24")
    assert "file-7-24" not in json.loads(resume.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["resume.json"]  # no temp or lock file left
