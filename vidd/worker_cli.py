"""The `vidd worker` command's arguments and start: a remote encode worker on this host,
taking attempts from the front's Redis broker (worker_process.py runs it)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from . import logs

USAGE, NO_EXTRA = 2, 2
BROKER_ENV = "VIDD_BROKER_URL"
MAX_CONCURRENCY = 64
MAX_NAME = 100  # the front's limit for a worker's name
MAX_ENCODE_S = 7 * 86400.0

EPILOG = f"""\
environment:
  {BROKER_ENV}  the broker URL when --broker is not given (redis://:PASSWORD@HOST:PORT/0);
                   safer than --broker, which `ps` shows (systemd: EnvironmentFile=)
  STATE_DIRECTORY  the default --work-dir (systemd's StateDirectory=)

Stop it with SIGTERM: a running encode is stopped and its task handed back to the queue.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run a remote encode worker (needs vidd[workers])",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--broker", metavar="URL", help=f"the Redis broker (env {BROKER_ENV})")
    p.add_argument(
        "--name",
        type=_worker_name,
        help=f"this worker's name as the front shows it, 1-{MAX_NAME} characters "
        "(default: hostname)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="a folder of its own for the attempts' files (default: $STATE_DIRECTORY, "
        "else ./var/worker); never the front's data folder",
    )
    p.add_argument(
        "--concurrency", type=_bounded_int, default=1, help="encodes at once (default 1)"
    )
    p.add_argument("--handbrake", default="HandBrakeCLI", metavar="PATH", help="HandBrakeCLI")
    p.add_argument(
        "--max-encode-s",
        type=_seconds,
        default=21600.0,
        metavar="S",
        help="the longest encode, as the front's workers.max_encode_s (default 21600)",
    )
    p.add_argument("--verbose", action="store_true", help="log debug output")


def _worker_name(value: str) -> str:
    # The front refuses a claim without a name (400): every attempt would be dropped.
    if not 1 <= len(value) <= MAX_NAME or not value.isprintable() or not value.strip():
        raise argparse.ArgumentTypeError(
            f"expected 1-{MAX_NAME} printable characters, got {value!r}"
        )
    return value


def _bounded_int(value: str) -> int:
    n = int(value) if value.isdigit() else 0
    if not 1 <= n <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"expected 1-{MAX_CONCURRENCY}, got {value!r}")
    return n


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        s = -1.0
    if not 0 < s <= MAX_ENCODE_S:
        raise argparse.ArgumentTypeError(f"expected seconds up to {MAX_ENCODE_S:g}, got {value!r}")
    return s


def main(args: argparse.Namespace) -> int:
    from .worker import Settings, WorkDirBusy, take_work_dir

    broker = args.broker or os.environ.get(BROKER_ENV, "")
    if not broker.startswith(("redis://", "rediss://")):
        print(
            f"vidd: worker: expected --broker or ${BROKER_ENV} as redis://:PASSWORD@HOST:PORT/0",
            file=sys.stderr,
        )
        return USAGE
    handbrake = shutil.which(args.handbrake)
    if handbrake is None:
        print(f"vidd: worker: HandBrakeCLI ({args.handbrake}) was not found", file=sys.stderr)
        return USAGE
    work_dir = args.work_dir or Path(os.environ.get("STATE_DIRECTORY") or "var/worker")
    try:
        _, leftovers = take_work_dir(work_dir)  # held until the process ends
    except WorkDirBusy as e:
        print(f"vidd: worker: {e}", file=sys.stderr)
        return USAGE
    except OSError as e:
        print(f"vidd: worker: cannot use {work_dir}: {e.strerror or e}", file=sys.stderr)
        return USAGE
    settings = Settings(
        name=(args.name or socket.gethostname())[:MAX_NAME],
        work_dir=work_dir.resolve(),
        handbrake=str(Path(handbrake).resolve()),
        max_encode_s=args.max_encode_s,
    )
    logs.setup("debug" if args.verbose else "info", verbose=args.verbose)
    if leftovers:
        logging.getLogger(__name__).info(
            "removed %d attempt folder(s) a previous run left in %s", leftovers, work_dir
        )
    from .worker_process import NoCelery, Options, run

    try:
        return run(Options(broker, settings, concurrency=args.concurrency))
    except NoCelery as e:
        print(f"vidd: {e}", file=sys.stderr)
        return NO_EXTRA
