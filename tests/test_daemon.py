"""The daemon's lifecycle rules that a user meets directly."""

from __future__ import annotations

from collections.abc import Callable

from testkit.daemon import Daemon, free_port, run_vidd, write_config


def test_a_second_vidd_on_the_same_data_is_refused(
    daemon_factory: Callable[..., Daemon], tmp_path
) -> None:
    first = daemon_factory()
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other, storage={"data_dir": str(first.data)}, web={"port": free_port()})
    result = run_vidd("serve", "--config", str(config))
    assert result.returncode == 1
    assert "another vidd is already using" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert first.proc.poll() is None  # the first one is untouched
