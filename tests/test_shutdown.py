"""The stop, in named stages: their limits add up to less than systemd's TimeoutStopSec."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from vidd import config as config_mod
from vidd import shutdown

ROOT = Path(__file__).resolve().parent.parent
MARGIN_S = 5.0  # what systemd's SIGKILL must never have to cut short


def timeout_stop_sec() -> float:
    unit = (ROOT / "systemd" / "vidd.service").read_text(encoding="utf-8")
    match = re.search(r"^TimeoutStopSec=(\d+)\s*$", unit, re.MULTILINE)
    assert match, "the unit sets TimeoutStopSec"
    return float(match.group(1))


def test_the_stages_fit_in_the_units_stop_timeout_with_a_margin() -> None:
    cfg = config_mod.load(ROOT / "config.toml", require_tools=False)  # what `make install` ships
    plan = shutdown.plan(cfg)
    names = [s.name for s in plan.stages]
    assert names == [
        "drain encodes",
        "interrupt encodes",
        "close websockets",
        "stop http",
        "close store",
    ]
    assert plan.drain.timeout_s == cfg.daemon.shutdown_timeout_s
    assert plan.interrupt.timeout_s > cfg.encode.kill_grace_s
    assert plan.total_s + MARGIN_S <= timeout_stop_sec(), (plan.total_s, timeout_stop_sec())


def test_the_built_in_defaults_fit_too() -> None:
    plan = shutdown.plan(config_mod.Config())
    assert plan.total_s + MARGIN_S <= timeout_stop_sec()


async def test_a_stage_that_runs_out_of_time_is_left_behind() -> None:
    stage = shutdown.Stage("slow", 0.05)
    assert await shutdown.run(stage, asyncio.sleep(10)) is False
    assert await shutdown.run(stage, asyncio.sleep(0)) is True
