"""What vidd says about itself: GET /api/status (JSON), /healthz (can it work?)
and /metrics (Prometheus text format, see metrics.py)."""

from __future__ import annotations

from aiohttp import web

from .. import __version__, disk
from ..metrics import CONTENT_TYPE, Snapshot
from .errors import error_response
from .keys import COUNTERS, HUB, SERVICES

STATUS_HEALTH_AGE_S = 1.0  # /api/status is polled hard; its health may be a second old


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
            "workers": {
                "max": svc.pool.max,
                "busy": svc.pool.busy,
                "mode": cfg.workers.mode,  # "celery": encodes run on remote workers
                "broker": svc.broker,  # "up", "down" or null (local, or not asked yet)
            },
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
    """Prometheus text, rendered by prometheus_client from vidd's own registry."""
    svc = request.app[SERVICES]
    counters = request.app[COUNTERS]
    snapshot = Snapshot(
        jobs=await svc.store.counts(),
        encodes_active=svc.pool.busy,
        workers_max=svc.pool.max,
        disk_free_bytes=disk.free_bytes(svc.config.storage.data_dir),
        uptime_s=svc.uptime_s,
        upload_bytes=counters.bytes_uploaded,
        uploads_active=counters.uploads_active,
        websocket_clients=len(request.app[HUB].clients),
    )
    return web.Response(
        body=svc.metrics.render(snapshot),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )
