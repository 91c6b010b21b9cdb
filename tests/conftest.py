"""The fixtures: clips made by ffmpeg for this session, configs in temporary folders, and
real vidd daemons, each stopped after its test. What they are built of is in testkit/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.daemon import Daemon, start_daemon, write_config
from testkit.media import make_clip
from vidd import config as config_mod

pytest_plugins = ["testkit.hang_report"]


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


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., config_mod.Config]:
    """Build a real Config in tmp_path; keyword arguments are sections of overrides."""

    def make(text: str = "", **sections: dict[str, Any]) -> config_mod.Config:
        return config_mod.load(write_config(tmp_path, text, **sections))

    return make


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
