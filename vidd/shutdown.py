"""The named stages of a stop, each with its own time limit. Their sum must stay inside
the systemd unit's TimeoutStopSec, with a margin; a test holds them to it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from . import timeouts
from .config import Config

log = logging.getLogger(__name__)

WEBSOCKETS_S = 2.0  # every socket gets its 1001 close frame, concurrently
HTTP_S = 3.0  # requests in flight (a long upload) before the server closes them
STORE_S = 2.0  # the hub's last sends and the store's close
REAP_S = 2.0  # beyond the kill grace: reaping and recording the interrupted jobs


@dataclass(frozen=True)
class Stage:
    name: str
    timeout_s: float


@dataclass(frozen=True)
class Plan:
    drain: Stage  # stop intake, let running encodes finish (the page still answers)
    interrupt: Stage  # stop the encodes left (SIGTERM, grace, SIGKILL), requeue them
    websockets: Stage
    http: Stage
    store: Stage

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (self.drain, self.interrupt, self.websockets, self.http, self.store)

    @property
    def total_s(self) -> float:
        return sum(s.timeout_s for s in self.stages)


def plan(config: Config) -> Plan:
    return Plan(
        drain=Stage("drain encodes", config.daemon.shutdown_timeout_s),
        interrupt=Stage("interrupt encodes", config.encode.kill_grace_s + REAP_S),
        websockets=Stage("close websockets", WEBSOCKETS_S),
        http=Stage("stop http", HTTP_S),
        store=Stage("close store", STORE_S),
    )


async def run(stage: Stage, work: Awaitable[object]) -> bool:
    """Run one stage within its limit; False (and a log line) if it ran out of time."""
    log.debug("shutdown: %s (up to %g s)", stage.name, stage.timeout_s)
    try:
        await timeouts.wait_for(work, stage.timeout_s)
        return True
    except TimeoutError:
        log.warning("shutdown: %s took longer than %g s; going on", stage.name, stage.timeout_s)
        return False
