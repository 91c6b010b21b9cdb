"""What vidd says about itself: GET /api/status (JSON), /healthz (can it work?)
and /metrics (Prometheus text format)."""

from __future__ import annotations

from aiohttp import web

from .. import __version__, disk
from .errors import error_response
from .keys import COUNTERS, HUB, SERVICES

STATUS_HEALTH_AGE_S = 1.0  # /api/status is polled hard; its health may be a second old
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/status", api_status)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)


async def api_status(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    cfg = svc.config
    problems = await svc.problems(max_age_s=STATUS_HEALTH_AGE_S)
    return web.json_response(
        {
            "version": __version__,
            "handbrake": {"path": cfg.encode.handbrake, "version": svc.handbrake_version},
            "uptime_s": round(svc.uptime_s, 1),
            "workers": {"max": svc.pool.max, "busy": svc.pool.busy},
            "jobs": await svc.store.counts(),
            "disk": {
                "free_bytes": disk.free_bytes(cfg.storage.data_dir),
                "min_free_bytes": cfg.storage.min_free_bytes,
                "reserved_bytes": svc.disk.reserved,
            },
            "watching": svc.watching,
            "health": {"ok": not problems, "problems": problems},
            "paused": svc.pool.paused,
            "inbox_troubles": svc.watcher.troubles() if svc.watcher is not None else [],
            "profiles": sorted(cfg.encode.profiles),
            "default_profile": cfg.encode.default_profile,
            "max_upload_bytes": cfg.web.max_upload_bytes,
            "login": bool(cfg.web.token),
            "websocket_clients": len(request.app[HUB].clients),
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """200 when vidd can do its work; 503 naming what stops it (in words, for a person
    and for the load balancer's log)."""
    problems = await request.app[SERVICES].problems()
    if problems:
        return error_response(503, "unavailable", "; ".join(problems))
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    pool = svc.pool
    counts = await svc.store.counts()
    # name -> (type, help, {labels: value})
    table: dict[str, tuple[str, str, dict[str, int | float]]] = {
        "vidd_jobs": (
            "gauge",
            "Jobs in each state.",
            {f'{{state="{state}"}}': n for state, n in sorted(counts.items())},
        ),
        "vidd_encodes_total": (
            "counter",
            "Encodes finished, successful or not.",
            {"": pool.jobs_complete + pool.jobs_failed},
        ),
        "vidd_encodes_failed_total": ("counter", "Encodes that failed.", {"": pool.jobs_failed}),
        "vidd_encode_seconds_total": (
            "counter",
            "Seconds spent encoding.",
            {"": float(pool.encode_seconds)},
        ),
        "vidd_upload_bytes_total": (
            "counter",
            "Bytes received in uploads.",
            {"": request.app[COUNTERS].bytes_uploaded},
        ),
        "vidd_uploads_in_progress": (
            "gauge",
            "Uploads being received now.",
            {"": request.app[COUNTERS].uploads_active},
        ),
        "vidd_websocket_clients": (
            "gauge",
            "Connected WebSocket clients.",
            {"": len(request.app[HUB].clients)},
        ),
        "vidd_queue_depth": ("gauge", "Jobs waiting for a worker.", {"": counts["queued"]}),
        "vidd_workers_busy": ("gauge", "Encodes running now.", {"": pool.busy}),
        "vidd_workers_max": ("gauge", "Encodes that may run at once.", {"": pool.max}),
        "vidd_uptime_seconds": ("gauge", "Seconds since vidd started.", {"": svc.uptime_s}),
    }
    lines: list[str] = []
    for name, (kind, help_, samples) in table.items():
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for labels, value in samples.items():
            shown = repr(round(value, 3)) if isinstance(value, float) else str(value)
            lines.append(f"{name}{labels} {shown}")
    return web.Response(
        body=("\n".join(lines) + "\n").encode(),
        headers={"Content-Type": PROMETHEUS_TYPE, "Cache-Control": "no-store"},
    )
