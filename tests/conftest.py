"""Shared fixtures: clips made by ffmpeg for this session, configs in temporary folders,
and a real vidd daemon running as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vidd import config as config_mod

ROOT = Path(__file__).resolve().parent.parent
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def make_clip(
    path: Path,
    seconds: float = 2.0,
    size: str = "320x240",
    vcodec: str = "mpeg4",
    acodec: str = "libmp3lame",
    rate: int = 25,
) -> Path:
    """A test pattern with a tone, made by ffmpeg."""
    args = [
        FFMPEG,
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        str(seconds),
        "-c:v",
        vcodec,
        "-c:a",
        acodec,
    ]
    if vcodec == "mpeg4":
        args += ["-q:v", "5"]
    subprocess.run([*args, str(path)], check=True, timeout=60)
    return path


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def clip(clip_dir: Path) -> Path:
    """A 2 s 320x240 MPEG-4/MP3 AVI: the everyday test input."""
    return make_clip(clip_dir / "clip.avi")


@pytest.fixture(scope="session")
def clip_h264(clip_dir: Path) -> Path:
    """A 3 s 320x240 H.264/AAC MP4."""
    return make_clip(clip_dir / "clip.mp4", seconds=3, vcodec="libx264", acodec="aac")


def write_config(folder: Path, text: str = "", **sections: dict[str, Any]) -> Path:
    """Write a config.toml into `folder`: data in folder/var, watcher fast, extra TOML appended.

    `sections` maps a section name to keys that replace the defaults below.
    """
    base: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": "var", "min_free_bytes": 0},
        "watch": {"stable_seconds": 2.0, "rescan_seconds": 5.0},
        "encode": {"max_parallel": 2, "stall_timeout_s": 30.0, "kill_grace_s": 2.0},
        "web": {"host": "127.0.0.1", "port": free_port()},
        "daemon": {"shutdown_timeout_s": 10.0},
    }
    for name, keys in sections.items():
        base.setdefault(name, {}).update(keys)
    lines = []
    for name, keys in base.items():
        lines.append(f"[{name}]")
        for key, value in keys.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n" + text, encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., config_mod.Config]:
    """Build a real Config in tmp_path; keyword arguments are sections of overrides."""

    def make(text: str = "", **sections: dict[str, Any]) -> config_mod.Config:
        return config_mod.load(write_config(tmp_path, text, **sections))

    return make


@dataclass
class Daemon:
    """A vidd started as `python -m vidd serve` in its own process."""

    config_path: Path
    config: config_mod.Config
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.config.web.host}:{self.config.web.port}"

    @property
    def data(self) -> Path:
        return self.config.storage.data_dir

    @property
    def inbox(self) -> Path:
        return self.config.storage.inbox_dir

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vidd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"vidd did not answer within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_daemon(config_path: Path, env: dict[str, str] | None = None) -> Daemon:
    cfg = config_mod.load(config_path)
    log_path = config_path.parent / f"vidd-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidd", "serve", "--config", str(config_path), "--verbose"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=config_path.parent,
        )
    d = Daemon(config_path, cfg, proc, log_path)
    d.wait_ready()
    return d


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start real daemons; each is stopped (and its children reaped) after the test."""
    started: list[Daemon] = []

    def start(text: str = "", env: dict[str, str] | None = None, **sections: Any) -> Daemon:
        path = tmp_path / "config.toml"
        if not path.exists() or sections or text:
            write_config(tmp_path, text, **sections)
        d = start_daemon(path, env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def get_json(url: str, timeout: float = 5.0) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll until `predicate()` returns something truthy; return it, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)


def mp4_top_boxes(path: Path) -> list[str]:
    """The names of an MP4's top-level boxes, in file order (to check moov before mdat)."""
    names = []
    with open(path, "rb") as f:
        while True:
            header = f.read(8)
            if len(header) < 8:
                break
            size = int.from_bytes(header[:4], "big")
            name = header[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
                f.seek(size - 16, 1)
            elif size == 0:
                names.append(name)
                break
            else:
                f.seek(size - 8, 1)
            names.append(name)
    return names


def ffprobe(path: Path) -> dict[str, Any]:
    import json

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    return dict(json.loads(out))
