"""Which config file `vidd serve`, `vidd check-config` and the remote commands read:
`--config`, then `$VIDD_CONFIG`, then /etc/vidd/config.toml (what `make install` writes),
then ./config.toml (a checkout)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = "VIDD_CONFIG"
SYSTEM = Path("/etc/vidd/config.toml")
LOCAL = Path("config.toml")


@dataclass(frozen=True)
class Location:
    path: Path
    source: str  # how it was found: "--config", "$VIDD_CONFIG", "the system config"...

    @property
    def explicit(self) -> bool:
        """Named by the user: a problem with it is theirs to hear about."""
        return self.source in ("--config", f"${ENV}")

    def __str__(self) -> str:
        return f"{self.path} (from {self.source})"


class NoConfig(Exception):
    """No file given, and none where vidd looks."""


def find_config(
    given: str | None,
    env: Mapping[str, str] | None = None,
    system: Path = SYSTEM,
    local: Path = LOCAL,
) -> Location:
    """The config file to read; NoConfig (in words) when there is none."""
    env = os.environ if env is None else env
    if given:
        return Location(Path(given), "--config")
    if value := env.get(ENV):
        return Location(Path(value), f"${ENV}")
    if system.is_file():
        return Location(system, "the system config")
    if local.is_file():
        return Location(local, "the current folder")
    raise NoConfig(
        f"no config file: pass --config PATH, set {ENV}, or create {system} or ./{local}"
    )
