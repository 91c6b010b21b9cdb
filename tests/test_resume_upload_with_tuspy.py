"""tuspy, a tus client we did not write, against a real vidd: a whole upload becomes a job;
an upload whose sending process is killed mid-way resumes from the server's offset, also
after vidd itself restarted; the source vidd keeps has the original's sha256."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from tusclient import client as tus

from testkit.daemon import wait_for
from testkit.noisy_clip import make_noisy_clip

CHUNK = 256 * 1024

# The sender runs in a process of its own, so the test can kill it mid-upload. It writes
# the upload's URL, then sends chunk after chunk, slowly enough to be caught in the middle.
SENDER = textwrap.dedent(
    """
    import sys, time
    from tusclient import client
    endpoint, path, url_file, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    uploader = client.TusClient(endpoint).uploader(
        path, chunk_size=chunk, metadata={"filename": "noisy.avi", "profile": "web"}
    )
    uploader.set_url(uploader.create_url())
    with open(url_file, "w") as f:
        f.write(uploader.url)
    while uploader.offset < uploader.get_file_size():
        uploader.upload_chunk()
        time.sleep(0.1)
    """
)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_noisy_clip(tmp_path_factory.mktemp("tuspy") / "noisy.avi")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def server_offset(url: str) -> int:
    r = requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=5)
    assert r.status_code == 200, r.status_code
    return int(r.headers["Upload-Offset"])


def job_of(url: str) -> str:
    state = requests.get(url, timeout=5).json()
    assert state["offset"] == state["length"] and state["job_id"], state
    return state["job_id"]


def test_a_whole_upload_becomes_a_job(daemon_factory, video):
    vidd = daemon_factory(watch={"enabled": False})
    with open(video, "rb") as f:  # a stream: with a path, tuspy leaves files open
        uploader = tus.TusClient(f"{vidd.url}/api/uploads").uploader(
            file_stream=f, chunk_size=CHUNK * 8, metadata={"filename": "holiday.avi"}
        )
        uploader.upload()
    job_id = job_of(uploader.url)
    job = requests.get(f"{vidd.url}/api/jobs/{job_id}", timeout=5).json()
    assert job["name"] == "holiday.avi" and job["origin"] == "upload"
    assert sha256(vidd.data / "sources" / f"{job_id}.avi") == sha256(video)


@pytest.mark.parametrize("restart_vidd", [False, True], ids=["same_vidd", "vidd_restarted"])
def test_a_killed_sender_resumes_from_the_server_offset(
    daemon_factory, video, tmp_path, restart_vidd
):
    vidd = daemon_factory(watch={"enabled": False})
    url_file = tmp_path / "url"
    endpoint = f"{vidd.url}/api/uploads"
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, endpoint, str(video), str(url_file), str(CHUNK)]
    )
    try:
        wait_for(url_file.exists, timeout=20)
        url = url_file.read_text()
        wait_for(lambda: server_offset(url) > 4 * CHUNK, timeout=30)
    finally:
        sender.send_signal(signal.SIGKILL)
        sender.wait()
    size = video.stat().st_size
    if restart_vidd:
        vidd.stop()
        vidd.start()
    kept = server_offset(url)
    assert 4 * CHUNK < kept < size

    with open(video, "rb") as f:
        resumed = tus.TusClient(endpoint).uploader(file_stream=f, url=url, chunk_size=CHUNK * 8)
        assert resumed.offset == kept  # tuspy asked the server (HEAD) where to go on from
        resumed.upload()
    job_id = job_of(url)
    assert sha256(vidd.data / "sources" / f"{job_id}.avi") == sha256(video)
    if restart_vidd:
        assert "resumable upload(s) wait for their clients" in vidd.log()
