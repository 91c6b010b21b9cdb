"""SIGHUP: read the config file again and apply what can change while encodes run (the
log level, the profiles, `encode.max_parallel`, the token); name every other change as
one that waits for a restart. A config that no longer loads is logged, and the running
one kept.

The live config is the one `Services` and the pool, encoder and intake hold: a reload
gives each of them the running config with the reloadable keys taken from the file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from . import logs
from .config import SECTIONS, Config, ConfigError, load
from .services import Services
from .web.security import Guard
from .web.sessions import Sessions

log = logging.getLogger(__name__)

# The keys a reload applies. Everything else (folders, the port, limits the web server was
# built with, the watcher's timings) is read once at start-up.
RELOADABLE = (
    "daemon.log_level",
    "encode.profiles",
    "encode.default_profile",
    "encode.max_parallel",
    "web.token",
)
# Shown with their values in the log line; the rest by name only (a token is a secret,
# profiles are long).
SHOWN = ("daemon.log_level", "encode.default_profile", "encode.max_parallel")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a reload did: the keys it applied and the changed ones that need a restart;
    `error` when the file could not be used (nothing changed then)."""

    applied: tuple[str, ...] = ()
    need_restart: tuple[str, ...] = ()
    error: str | None = None
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # of the SHOWN keys


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ, in the file's section order."""
    keys: list[str] = []
    for section in SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(before):
            if getattr(before, f.name) != getattr(after, f.name):
                keys.append(f"{section}.{f.name}")
    return keys


def merged(old: Config, new: Config) -> Config:
    """The running config with the reloadable keys of `new`."""
    values: dict[str, dict[str, Any]] = {}
    for key in RELOADABLE:
        section, name = key.split(".")
        values.setdefault(section, {})[name] = getattr(getattr(new, section), name)
    sections = {
        section: dataclasses.replace(getattr(old, section), **keys)
        for section, keys in values.items()
    }
    return dataclasses.replace(old, **sections)


class Reloader:
    """Applies the config file to a running vidd, one reload at a time."""

    def __init__(self, services: Services, guard: Guard, *, verbose: bool = False) -> None:
        self.services = services
        self.guard = guard
        self.verbose = verbose  # --verbose keeps debug output whatever the level says
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Reloader {self.services.config.path}>"

    async def reload(self) -> Outcome:
        async with self._lock:
            outcome = await self._reload()
        log.log(logging.ERROR if outcome.error else logging.INFO, "%s", self.describe(outcome))
        if "daemon.log_level" in outcome.applied:  # after the line, which it might hide
            logs.setup(self.services.config.daemon.log_level, verbose=self.verbose)
        return outcome

    async def _reload(self) -> Outcome:
        svc = self.services
        old = svc.config
        try:
            new = load(old.path)
        except ConfigError as e:
            return Outcome(error=str(e))
        except OSError as e:  # unreadable: permissions, a folder in its place
            return Outcome(error=f"{old.path}: {e.strerror or e}")
        changed = changed_keys(old, new)
        applied = tuple(k for k in changed if k in RELOADABLE)
        need_restart = tuple(k for k in changed if k not in RELOADABLE)
        if applied:
            await self._apply(old, merged(old, new))
        values = {k: _value(new, k) for k in applied if k in SHOWN}
        return Outcome(applied, need_restart, values=values)

    async def _apply(self, old: Config, live: Config) -> None:
        svc = self.services
        for holder in (svc, svc.pool, svc.encoder, svc.intake):
            holder.config = live
        svc.pool.resize(live.encode.max_parallel)
        if removed := sorted(set(old.encode.profiles) - set(live.encode.profiles)):
            log.warning(
                "reload: profile(s) %s removed; a queued job that names one fails when it "
                "starts (retry it with another profile)",
                ", ".join(removed),
            )
        if live.web.token != old.web.token:
            self.guard.token = live.web.token
            sessions = Sessions(svc.store, live.web.token)
            self.guard.sessions = sessions
            ended = await sessions.forget_other_tokens()  # logged in with the old token
            log.info("reload: the token changed; %d browser session(s) ended", ended)

    def describe(self, outcome: Outcome) -> str:
        path = self.services.config.path
        if outcome.error:
            return f"reload: {outcome.error}; the running config is kept"
        if not outcome.applied and not outcome.need_restart:
            return f"reload: {path}: nothing changed"
        parts = []
        if outcome.applied:
            shown = outcome.values
            names = [f"{k} = {shown[k]!r}" if k in shown else k for k in outcome.applied]
            parts.append("applied " + ", ".join(names))
        if outcome.need_restart:
            parts.append("needs a restart: " + ", ".join(outcome.need_restart))
        return f"reload: {path}: " + "; ".join(parts)


def _value(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)
