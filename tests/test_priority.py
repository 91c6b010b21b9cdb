"""Encodes behind the first run in the background (SCHED_IDLE) and move up when they come
first. Moving up needs a privilege: here vidd runs as root, but without CAP_SYS_NICE, as
systemd's unit runs it (its own user, LimitNICE=+0); and without the limit too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Started in the background at nice 15, then asked to move up to nice 5.
SCRIPT = """
import asyncio, json, os
from vidd import children

async def main():
    seen = {"can_move_up": children.can_move_up()}
    proc = await children.spawn(["sleep", "30"], nice=15, background=True, stdout=None)
    seen["started"] = [os.sched_getscheduler(proc.pid) == os.SCHED_IDLE,
                       os.getpriority(os.PRIO_PROCESS, proc.pid)]
    seen["moved"] = children.set_priority(proc, 5)
    seen["after"] = [os.sched_getscheduler(proc.pid) == os.SCHED_IDLE,
                     os.getpriority(os.PRIO_PROCESS, proc.pid)]
    await children.stop(proc, 1.0)
    print(json.dumps(seen))

asyncio.run(main())
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("prlimit") or not shutil.which("setpriv"),
    reason="needs root, and prlimit and setpriv (util-linux) to take privileges away",
)


def run_script(*, sys_nice: bool, nice_limit: int | None = None) -> dict[str, object]:
    """SCRIPT's findings in a vidd with or without CAP_SYS_NICE, at this RLIMIT_NICE
    (None: the one it has)."""
    argv = [sys.executable, "-c", SCRIPT]
    if not sys_nice:
        argv = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--", *argv]
    if nice_limit is not None:
        argv = ["prlimit", f"--nice={nice_limit}:{nice_limit}", *argv]
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def raising_rlimit_nice_is_allowed() -> bool:
    """Raising RLIMIT_NICE needs CAP_SYS_RESOURCE, which some machines' root lacks."""
    if not shutil.which("prlimit"):
        return False
    return subprocess.run(["prlimit", "--nice=20:20", "true"], capture_output=True).returncode == 0


def test_with_cap_sys_nice_an_encode_moves_up_out_of_the_background() -> None:
    seen = run_script(sys_nice=True)
    assert seen == {"can_move_up": True, "started": [True, 15], "moved": True, "after": [False, 5]}


def test_without_a_privilege_nothing_can_move_up_and_vidd_knows_before_it_tries() -> None:
    # The default RLIMIT_NICE (0): priority can only go down. The encoder then ranks by
    # nice alone rather than leave a job it can't move up in the background.
    seen = run_script(sys_nice=False, nice_limit=0)
    assert seen == {
        "can_move_up": False,
        "started": [True, 15],
        "moved": False,
        "after": [True, 15],
    }


@pytest.mark.skipif(
    not raising_rlimit_nice_is_allowed(),
    reason="raising RLIMIT_NICE needs CAP_SYS_RESOURCE, which root lacks on this machine",
)
def test_with_the_units_nice_limit_an_encode_moves_up_without_cap_sys_nice() -> None:
    # systemd's LimitNICE=+0 is RLIMIT_NICE 20: nice values down to 0, and out of SCHED_IDLE.
    seen = run_script(sys_nice=False, nice_limit=20)
    assert seen == {"can_move_up": True, "started": [True, 15], "moved": True, "after": [False, 5]}
