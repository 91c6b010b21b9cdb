"""vidd's Prometheus metrics, in a registry of its own (never the library's global one):
process metrics, the build, encodes by result with a histogram of their seconds, and
what is true right now (jobs by state, active encodes, free disk, uploads, WebSockets),
read when Prometheus scrapes.

`Metrics` is a store listener: an encode is counted when its job leaves `running` for
good (done, failed or cancelled), with the seconds from its start to its end.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .job import Job, Status

COUNTED_MAX = 1000  # ends remembered, far more than can change again at once
# The text format every Prometheus reads (what generate_latest writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESULTS = (Status.DONE, Status.FAILED, Status.CANCELLED)
# Encodes of a few seconds (a phone clip) to hours (a film at a slow preset).
ENCODE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


@dataclass(frozen=True)
class Snapshot:
    """What is true at the moment of a scrape, gathered by the handler."""

    jobs: dict[str, int]
    encodes_active: int
    workers_max: int
    disk_free_bytes: int
    uptime_s: float
    upload_bytes: int = 0
    uploads_active: int = 0
    websocket_clients: int = 0


class _Now(Collector):
    """The snapshot as metric families; set just before each scrape is rendered."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return
        jobs = GaugeMetricFamily("vidd_jobs", "Jobs in each state.", labels=["state"])
        for state, n in sorted(s.jobs.items()):
            jobs.add_metric([state], n)
        yield jobs
        gauges = (
            ("vidd_encodes_active", "Encodes running now.", s.encodes_active),
            ("vidd_queue_depth", "Jobs waiting for a worker.", s.jobs.get("queued", 0)),
            (
                "vidd_workers_busy",
                "Encodes running now (as vidd_encodes_active).",
                s.encodes_active,
            ),
            ("vidd_workers_max", "Encodes that may run at once.", s.workers_max),
            ("vidd_disk_free_bytes", "Free bytes where vidd keeps its data.", s.disk_free_bytes),
            ("vidd_uptime_seconds", "Seconds since vidd started.", s.uptime_s),
            ("vidd_uploads_in_progress", "Uploads being received now.", s.uploads_active),
            ("vidd_websocket_clients", "Connected WebSocket clients.", s.websocket_clients),
        )
        for name, help_, value in gauges:
            yield GaugeMetricFamily(name, help_, value=value)
        yield CounterMetricFamily(
            "vidd_upload_bytes", "Bytes received in uploads.", value=s.upload_bytes
        )


class Metrics:
    """The registry and the counters that only grow while vidd runs."""

    def __init__(self, version: str = __version__) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        Info("vidd_build", "The running vidd.", registry=self.registry).info({"version": version})
        self.encodes = Counter(
            "vidd_encodes", "Encodes ended, by result.", ["result"], registry=self.registry
        )
        for result in RESULTS:
            self.encodes.labels(str(result))  # every result shows, at 0 until it happens
        self.encode_seconds = Histogram(
            "vidd_encode_seconds",
            "Seconds from an encode's start to its end (done, failed or cancelled).",
            buckets=ENCODE_BUCKETS,
            registry=self.registry,
        )
        self._now = _Now()
        self.registry.register(self._now)
        self.ended = {str(r): 0 for r in RESULTS}  # the counter's values, for repr
        # The ends counted lately (job id, finished_at): a done job changes again after its
        # end (its poster, its publishing), and an encode is counted once.
        self._counted: OrderedDict[tuple[str, object], None] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Metrics encodes={self.ended}>"

    # The store calls these for every change.
    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        if progress_only or job.status not in RESULTS or job.started_at is None:
            return  # not the end of an encode (a queued job cancelled never ran)
        key = (job.id, job.finished_at)
        if key in self._counted:
            return  # the same end again: a later change of the ended job
        self._counted[key] = None
        if len(self._counted) > COUNTED_MAX:
            self._counted.popitem(last=False)
        self.encodes.labels(str(job.status)).inc()
        self.ended[str(job.status)] += 1
        if job.finished_at is not None:
            seconds = (job.finished_at - job.started_at).total_seconds()
            self.encode_seconds.observe(max(0.0, seconds))

    def job_deleted(self, job_id: str) -> None:
        pass

    def render(self, snapshot: Snapshot) -> bytes:
        """The text Prometheus scrapes, with `snapshot` as the values of the moment."""
        self._now.snapshot = snapshot
        return generate_latest(self.registry)
