"""The daemon's lifecycle rules that a user meets directly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from conftest import Daemon, free_port, write_config


def test_a_second_vidd_on_the_same_data_is_refused(
    daemon_factory: Callable[..., Daemon], tmp_path
) -> None:
    first = daemon_factory()
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other, storage={"data_dir": str(first.data)}, web={"port": free_port()})
    result = subprocess.run(
        [sys.executable, "-m", "vidd", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2  # the operator's to fix, like a config error
    assert "another vidd is already using" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert first.proc.poll() is None  # the first one is untouched
