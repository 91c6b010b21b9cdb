"""GET /metrics of a real vidd, read with prometheus_client's own parser (and checked by
`promtool check metrics` where Prometheus's tool is installed): the build, process
metrics, encodes by result with their seconds, free disk, jobs by state."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.daemon import Daemon, wait_for
from testkit.jobs import make_job
from vidd import __version__
from vidd.client import Client
from vidd.job import Status, now
from vidd.metrics import Metrics, Snapshot


def scrape(d: Daemon) -> tuple[str, str]:
    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_a_running_vidd_reports_what_prometheus_graphs(daemon_factory, clip, tmp_path):
    d = daemon_factory(encode={"max_parallel": 1}, daemon={"shutdown_timeout_s": 2.0})
    client = Client(d.url)
    done = client.upload(clip)["id"]
    wait_for(lambda: client.job(done)["status"] == "done", timeout=60)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n" * 50)
    with pytest.raises(Exception, match="422"):
        client.upload(notes)

    content_type, text = scrape(d)
    assert content_type.startswith("text/plain; version=0.0.4")
    got = samples(text)
    assert got[("vidd_build_info", (("version", __version__),))] == 1
    assert got[("vidd_encodes_total", (("result", "done"),))] == 1
    assert got[("vidd_encodes_total", (("result", "failed"),))] == 0  # present before it happens
    assert got[("vidd_encode_seconds_count", ())] == 1
    spent = got[("vidd_encode_seconds_sum", ())]
    assert 0 < spent < 60
    assert got[("vidd_encode_seconds_bucket", (("le", "+Inf"),))] == 1
    assert got[("vidd_jobs", (("state", "done"),))] == 1
    assert got[("vidd_jobs", (("state", "rejected"),))] == 1  # a rejection is no encode
    assert got[("vidd_encodes_active", ())] == 0
    assert got[("vidd_workers_max", ())] == 1
    assert got[("vidd_disk_free_bytes", ())] > 0
    assert got[("vidd_upload_bytes_total", ())] >= clip.stat().st_size
    assert got[("process_resident_memory_bytes", ())] > 0  # the process collector
    assert got[("process_open_fds", ())] > 0


# Not in the Makefile's APT_TEST: Debian packages promtool only inside `prometheus`, the
# whole server (96 MB installed), whose install starts a service listening on :9090.
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_metrics(daemon_factory, clip):
    d = daemon_factory(daemon={"shutdown_timeout_s": 2.0})
    client = Client(d.url)
    job = client.upload(clip)["id"]
    wait_for(lambda: client.job(job)["status"] == "done", timeout=60)  # a histogram with data
    _, text = scrape(d)
    r = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_encode_is_counted_once_when_it_ends():
    metrics = Metrics("1.2.3")
    started = now()
    ran = make_job(status=Status.RUNNING, started_at=started)
    metrics.job_changed(ran, progress_only=False)  # starting counts nothing
    failed = make_job(
        status=Status.FAILED, started_at=started, finished_at=started + timedelta(seconds=42)
    )
    metrics.job_changed(failed, progress_only=True)  # progress is no end
    metrics.job_changed(failed, progress_only=False)
    never_ran = make_job(status=Status.CANCELLED)  # cancelled while queued: no encode
    metrics.job_changed(never_ran, progress_only=False)
    snapshot = Snapshot(
        jobs={"failed": 1, "cancelled": 1}, encodes_active=0, workers_max=2,
        disk_free_bytes=1 << 30, uptime_s=5.0,
    )  # fmt: skip
    got = samples(metrics.render(snapshot).decode())
    assert got[("vidd_encodes_total", (("result", "failed"),))] == 1
    assert got[("vidd_encodes_total", (("result", "cancelled"),))] == 0
    assert got[("vidd_encode_seconds_sum", ())] == 42
    assert got[("vidd_encode_seconds_bucket", (("le", "30.0"),))] == 0
    assert got[("vidd_encode_seconds_bucket", (("le", "60.0"),))] == 1
    assert got[("vidd_build_info", (("version", "1.2.3"),))] == 1
    assert metrics.ended == {"done": 0, "failed": 1, "cancelled": 0}
