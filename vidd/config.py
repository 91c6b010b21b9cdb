"""The configuration: a frozen, typed dataclass tree built once from config.toml.

Every key is checked: an unknown key, a wrong type, a value out of bounds or a missing
HandBrakeCLI raises ConfigError with one line naming the file, the key and what was
expected. A missing ffmpeg only costs the posters: it is a line in `Config.warnings`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import math
import shutil
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reserved_args import reserved_arg

# Upper bounds: a value past them is a typo or a unit mix-up, never a real setting.
DAY_S = 86_400.0
MAX_BYTES = 1 << 60


def _most(limit: float) -> dict[str, float]:
    """Field metadata: the largest value the key accepts."""
    return {"max": limit}


class ConfigError(Exception):
    """A config problem, worded as one line for the person who wrote the file."""


@dataclass(frozen=True)
class Storage:
    data_dir: Path = Path("var")
    inbox: Path | None = None
    keep_sources: bool = True
    min_free_bytes: int = field(default=1 << 30, metadata=_most(MAX_BYTES))
    output_dir: Path | None = None  # each result also published here by its own name

    @property
    def inbox_dir(self) -> Path:
        return self.inbox if self.inbox is not None else self.data_dir / "inbox"

    @property
    def sources_dir(self) -> Path:
        return self.data_dir / "sources"

    @property
    def videos_dir(self) -> Path:
        return self.data_dir / "videos"

    @property
    def rejected_dir(self) -> Path:
        return self.data_dir / "rejected"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "vidd.db"


@dataclass(frozen=True)
class Watch:
    enabled: bool = True
    stable_seconds: float = field(default=10.0, metadata=_most(DAY_S))
    lease_quiet_seconds: float = field(default=0.3, metadata=_most(DAY_S))
    rescan_seconds: float = field(default=30.0, metadata=_most(DAY_S))
    recursive: bool = False
    max_depth: int = field(default=4, metadata=_most(32))


@dataclass(frozen=True)
class Profile:
    args: tuple[str, ...] = ()
    preset: str = ""
    description: str = ""  # one line for people: the picker, the card, the watch page
    # A source already in H.264 video and AAC audio is copied into an MP4 (index first)
    # with ffmpeg instead of being encoded again.
    repackage: bool = False

    def handbrake_args(self) -> list[str]:
        if self.preset:
            return ["--preset", self.preset, *self.args]
        return list(self.args)


DEFAULT_PROFILES = {
    # The arguments the project started from.
    "web": Profile(
        args=("-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"),
        description="Small MP4 for every browser: H.264 at 15 fps, 96 kbps AAC audio",
    ),
    "web-full-rate": Profile(
        args=("-e", "x264", "-q", "22", "-B", "96", "-O"),
        description="MP4 for every browser at the source's frame rate; "
        "H.264/AAC sources are copied, not re-encoded",
        repackage=True,
    ),
}


@dataclass(frozen=True)
class Encode:
    handbrake: str = "HandBrakeCLI"
    ffmpeg: str = "ffmpeg"
    max_parallel: int = field(default=3, metadata=_most(64))
    nice_step: int = field(default=10, metadata=_most(19))  # nice tops out at 19
    default_profile: str = "web"
    stall_timeout_s: float = field(default=120.0, metadata=_most(DAY_S))
    kill_grace_s: float = field(default=5.0, metadata=_most(600.0))
    log_tail_lines: int = field(default=200, metadata=_most(10_000))
    max_queued: int = field(default=1000, metadata=_most(1_000_000))
    child_env: tuple[str, ...] = ()
    profiles: dict[str, Profile] = field(default_factory=lambda: dict(DEFAULT_PROFILES))


@dataclass(frozen=True)
class Web:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    max_upload_bytes: int = field(default=8 << 30, metadata=_most(MAX_BYTES))
    max_ws_clients: int = field(default=2000, metadata=_most(100_000))
    max_ws_per_client: int = field(default=32, metadata=_most(100_000))
    max_uploads: int = field(default=8, metadata=_most(10_000))
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    trust_proxy: bool = False
    allow_anonymous: bool = False
    idle_timeout_s: float = field(default=15.0, metadata=_most(DAY_S))
    body_timeout_s: float = field(default=30.0, metadata=_most(DAY_S))
    min_body_rate: int = field(default=1024, metadata=_most(MAX_BYTES))
    max_connections: int = field(default=0, metadata=_most(1_000_000))
    max_connections_per_client: int = field(default=64, metadata=_most(1_000_000))
    # Resumable (tus) uploads: expiry after the last PATCH, and how many may be open.
    upload_expiry_s: float = field(default=86400.0, metadata=_most(30 * DAY_S))
    max_open_uploads: int = field(default=32, metadata=_most(10_000))


@dataclass(frozen=True)
class Daemon:
    shutdown_timeout_s: float = field(default=30.0, metadata=_most(DAY_S))
    log_level: str = "info"


@dataclass(frozen=True)
class Workers:
    """Remote encode workers (issue 13): Celery delivers attempts, vidd stays the record."""

    mode: str = "local"  # "celery": the pool dispatches to remote workers
    broker_url: str = field(default="", repr=False)  # holds the Redis password: never logged
    public_url: str = ""  # how workers reach this vidd
    lease_s: float = field(default=60.0, metadata=_most(DAY_S))
    max_encode_s: float = field(default=21600.0, metadata=_most(7 * DAY_S))
    max_attempts: int = field(default=3, metadata=_most(100))


WORKER_MODES = ("local", "celery")
MIN_LEASE_S = 1.0  # a heartbeat is at most every lease_s/4: shorter makes no sense


@dataclass(frozen=True)
class Config:
    path: Path = Path("config.toml")
    storage: Storage = field(default_factory=Storage)
    watch: Watch = field(default_factory=Watch)
    encode: Encode = field(default_factory=Encode)
    web: Web = field(default_factory=Web)
    daemon: Daemon = field(default_factory=Daemon)
    workers: Workers = field(default_factory=Workers)
    # Problems that don't stop vidd but leave it doing less (one line each, naming the
    # key): `check-config` prints them and `serve` logs them.
    warnings: tuple[str, ...] = field(default=(), compare=False)


SECTIONS = ("storage", "watch", "encode", "web", "daemon", "workers")


def load(path: Path | str, *, require_tools: bool = True) -> Config:
    """Read, check and resolve a config file."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(raw, path, require_tools=require_tools)


def from_dict(raw: dict[str, Any], path: Path, *, require_tools: bool = True) -> Config:
    base = path.parent
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: {sorted(unknown)[0]}: unknown section")
    sections: dict[str, Any] = {}
    for name in SECTIONS:
        cls = typing.get_type_hints(Config)[name]
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name}: expected a table")
        sections[name] = _build(cls, table, name, path)
    cfg = Config(path=path, **sections)
    return _resolve(cfg, base, require_tools)


def _build(cls: type[Any], table: dict[str, Any], prefix: str, path: Path) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{prefix}.{key}"
        if key not in fields:
            raise ConfigError(f"{path}: {where}: unknown key")
        values[key] = _convert(hints[key], value, where, path)
        limit = fields[key].metadata.get("max")
        if limit is not None and values[key] > limit:
            most = int(limit) if float(limit).is_integer() else limit
            raise ConfigError(f"{path}: {where}: expected at most {most}, got {value!r}")
    return cls(**values)


def _convert(hint: Any, value: Any, where: str, path: Path) -> Any:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{path}: {where}: expected {expected}, got {value!r}")

    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):  # Path | None: "" means None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        if value == "":
            return None
        return _convert(inner, value, where, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        if value < 0:
            raise wrong("a non-negative integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        if not math.isfinite(value):  # TOML has nan and inf
            raise wrong("a finite number")
        if value < 0:
            raise wrong("a non-negative number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise wrong("a path")
        return Path(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong("a list of strings")
        return tuple(value)
    if origin is dict:  # the profiles table
        if not isinstance(value, dict) or not value:
            raise wrong("a table of profiles")
        return {name: _profile(spec, f"{where}.{name}", path) for name, spec in value.items()}
    raise wrong(str(hint))  # pragma: no cover - a new field type nobody taught us


def _profile(spec: Any, where: str, path: Path) -> Profile:
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: {where}: expected a table with args or preset")
    profile: Profile = _build(Profile, spec, where, path)
    if not profile.args and not profile.preset:
        raise ConfigError(f"{path}: {where}: expected args or preset")
    reserved = reserved_arg(profile.args)
    if reserved is not None:
        raise ConfigError(f"{path}: {where}.args: {reserved} is set by vidd itself")
    return profile


def _resolve(cfg: Config, base: Path, require_tools: bool) -> Config:
    path = cfg.path
    storage = cfg.storage
    data_dir = (base / storage.data_dir).resolve()
    inbox = (base / storage.inbox).resolve() if storage.inbox is not None else None
    output_dir = (base / storage.output_dir).resolve() if storage.output_dir is not None else None
    storage = dataclasses.replace(storage, data_dir=data_dir, inbox=inbox, output_dir=output_dir)
    if output_dir is not None and output_dir.is_relative_to(storage.inbox_dir):
        raise ConfigError(
            f"{path}: storage.output_dir: expected a folder outside the inbox "
            f"({storage.inbox_dir}), or vidd would take its own results in again"
        )

    enc = cfg.encode
    if enc.default_profile not in enc.profiles:
        raise ConfigError(
            f"{path}: encode.default_profile: expected one of {sorted(enc.profiles)}, "
            f"got {enc.default_profile!r}"
        )
    if enc.max_parallel < 1:
        raise ConfigError(f"{path}: encode.max_parallel: expected at least 1")
    handbrake = _find_tool(enc.handbrake, base)
    if handbrake is None:
        if require_tools:
            raise ConfigError(
                f"{path}: encode.handbrake: expected an executable HandBrakeCLI, "
                f"{enc.handbrake!r} was not found (Debian: apt-get install handbrake-cli)"
            )
        handbrake = enc.handbrake
    warnings: list[str] = []
    ffmpeg = _find_tool(enc.ffmpeg, base) if enc.ffmpeg else None
    if enc.ffmpeg and ffmpeg is None:
        warnings.append(
            f"{path}: encode.ffmpeg: {enc.ffmpeg!r} was not found, so videos get no poster "
            '(Debian: apt-get install ffmpeg; ffmpeg = "" turns posters off)'
        )
    enc = dataclasses.replace(enc, handbrake=handbrake, ffmpeg=ffmpeg or "")

    if cfg.daemon.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f"{path}: daemon.log_level: expected debug, info, warning or error, "
            f"got {cfg.daemon.log_level!r}"
        )
    if not 0 < cfg.web.port < 65536:
        raise ConfigError(f"{path}: web.port: expected 1-65535, got {cfg.web.port}")
    _check_token(cfg.web, path)
    _check_workers(cfg.workers, cfg.web, path)
    return dataclasses.replace(cfg, storage=storage, encode=enc, warnings=tuple(warnings))


HEX = frozenset("0123456789abcdefABCDEF")
MIN_TOKEN_BITS = 128
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def token_bits(token: str) -> float:
    """A rough strength: 4 bits a character for hex, 6 for anything richer (base64)."""
    return len(token) * (4 if set(token) <= HEX else 6)


def _check_token(web: Web, path: Path) -> None:
    if web.token and token_bits(web.token) < MIN_TOKEN_BITS:
        raise ConfigError(
            f"{path}: web.token: too short to resist guessing (under {MIN_TOKEN_BITS} bits); "
            "make one with `openssl rand -hex 32`"
        )
    if not web.token and web.host not in LOOPBACK and not web.allow_anonymous:
        raise ConfigError(
            f"{path}: web.token: empty while web.host is {web.host!r}, so anyone who can reach "
            "the port could use vidd; set a token (`openssl rand -hex 32`), or "
            "web.allow_anonymous = true if that is what you mean"
        )


def _check_workers(workers: Workers, web: Web, path: Path) -> None:
    """Celery mode needs a broker and the URL workers reach vidd at. The broker URL is
    never quoted back: it holds the Redis password."""
    if workers.mode not in WORKER_MODES:
        raise ConfigError(
            f'{path}: workers.mode: expected "local" or "celery", got {workers.mode!r}'
        )
    if workers.lease_s < MIN_LEASE_S:
        raise ConfigError(f"{path}: workers.lease_s: expected at least {MIN_LEASE_S:g} s")
    if workers.max_encode_s < workers.lease_s:
        raise ConfigError(f"{path}: workers.max_encode_s: expected at least workers.lease_s")
    if workers.max_attempts < 1:
        raise ConfigError(f"{path}: workers.max_attempts: expected at least 1")
    if workers.mode != "celery":
        return
    if importlib.util.find_spec("celery") is None:  # found, not imported: that is lazy
        raise ConfigError(
            f'{path}: workers.mode: "celery" needs the workers extra: pip install "vidd[workers]"'
        )
    if not workers.broker_url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            f"{path}: workers.broker_url: expected a redis:// or rediss:// URL "
            "(redis://:PASSWORD@HOST:PORT/0) in celery mode"
        )
    public = workers.public_url
    try:
        host = urllib.parse.urlsplit(public).hostname
    except ValueError:
        host = None
    if not public.startswith(("http://", "https://")) or not host:
        raise ConfigError(
            f"{path}: workers.public_url: expected the http(s) URL workers reach this vidd "
            f"at (like http://10.0.0.5:8080) in celery mode, got {public!r}"
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:  # a name: the Host check (against DNS rebinding) must know it
        known = {"localhost", web.host.lower(), *(h.lower() for h in web.allowed_hosts)}
        if host.lower() not in known:
            raise ConfigError(
                f"{path}: workers.public_url: its host {host!r} must also be in "
                "web.allowed_hosts, or vidd refuses the workers' requests"
            ) from None


def _find_tool(name: str, base: Path) -> str | None:
    if "/" in name:
        candidate = (base / name).resolve()
        return str(candidate) if shutil.which(str(candidate)) else None
    return shutil.which(name)
