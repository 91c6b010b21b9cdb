"""The `vidd` command: `serve` runs the daemon, `check-config` checks a config file, and
`submit`, `status`, `jobs`, `cancel`, `retry` talk to a running daemon over its HTTP API."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__, config
from .client import Client, FileChanged, Refused, Unreachable
from .job import Status, is_valid_id

OK, JOB_FAILED, USAGE, UNREACHABLE, REFUSED = 0, 1, 2, 3, 4
INTERRUPTED = 130
FINAL = {"done", "failed", "rejected", "cancelled"}
POLL_S = 0.5
MAX_LIMIT = 1000

EPILOG = """\
exit codes:
  0  ok; for submit: every job is done
  1  a job failed, was rejected (not a video) or was cancelled
  2  usage or config error (bad arguments, unreadable file, invalid config.toml)
  3  the daemon cannot be reached (refused, timed out, wrong host)
  4  the daemon refused the request (HTTP 4xx/5xx: bad token, unknown job,
     a state that does not allow it, upload too large, disk full)
  With several files, submit exits with the highest code; it stops at the first 3.

environment:
  VIDD_URL    the daemon's address (default http://127.0.0.1:8080)
  VIDD_TOKEN  the API token (web.token); safer than --token, which `ps` shows
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else USAGE
    if args.command in ("serve", "check-config"):
        return _local(args)
    try:
        client = Client(args.url, args.token)
    except ValueError as e:
        print(f"vidd: {e}", file=sys.stderr)
        return USAGE
    try:
        code: int = args.run(client, args)
        return code
    except Unreachable as e:
        print(f"vidd: cannot reach the daemon: {e}", file=sys.stderr)
        return UNREACHABLE
    except Refused as e:
        print(f"vidd: the daemon refused: {_api_message(e)}", file=sys.stderr)
        return REFUSED
    except KeyboardInterrupt:
        print("vidd: interrupted", file=sys.stderr)
        return INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidd",
        description="A video conversion daemon, and a command line to talk to it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vidd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", default="config.toml", help="path to config.toml")
    serve.add_argument("--verbose", action="store_true", help="log debug output")
    check = sub.add_parser("check-config", help="check a config file and exit")
    check.add_argument("--config", default="config.toml", help="path to config.toml")

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--url",
        default=os.environ.get("VIDD_URL") or "http://127.0.0.1:8080",
        help="the daemon's address (env VIDD_URL; default %(default)s)",
    )
    remote.add_argument(
        "--token", default=os.environ.get("VIDD_TOKEN", ""), help="API token (env VIDD_TOKEN)"
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            parents=[remote],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    submit = command("submit", "upload files and follow their conversion")
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--profile", help="an encode profile from the daemon's config")
    submit.add_argument("--no-wait", action="store_true", help="return once uploaded")
    submit.set_defaults(run=_submit)

    status = command("status", "show the daemon's state")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(run=_status)

    jobs = command("jobs", "list jobs, newest first")
    jobs.add_argument("--status", choices=[str(s) for s in Status], help="only jobs in this state")
    jobs.add_argument("--limit", type=_limit, default=50, help="at most N jobs (default 50)")
    jobs.add_argument("--json", action="store_true", help="print the raw JSON")
    jobs.set_defaults(run=_jobs)

    for name, verb in (("cancel", "cancel a queued or running job"), ("retry", "requeue a job")):
        p = command(name, verb)
        p.add_argument("id", type=_job_id, metavar="ID")
        p.set_defaults(run=_cancel if name == "cancel" else _retry)
    return parser


def _limit(value: str) -> int:
    n = int(value) if value.isdigit() else 0
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected 1-{MAX_LIMIT}, got {value!r}")
    return n


def _job_id(value: str) -> str:
    if not is_valid_id(value):
        raise argparse.ArgumentTypeError(f"not a job id: {value!r}")
    return value


# -- serve and check-config: the local commands ------------------------------------------------


def _local(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"vidd: {e}", file=sys.stderr)
        return USAGE
    if args.command == "check-config":
        for warning in cfg.warnings:
            print(f"vidd: warning: {warning}", file=sys.stderr)
        print(f"{cfg.path}: ok" + (" (with warnings)" if cfg.warnings else ""))
        return OK
    from . import daemon

    return daemon.serve(cfg, verbose=args.verbose)


# -- commands that talk to the daemon ---------------------------------------------------------


def _submit(client: Client, args: argparse.Namespace) -> int:
    files: list[Path] = args.files
    for path in files:
        if not path.is_file():
            print(f"vidd: {path}: not a readable file", file=sys.stderr)
            return USAGE
    worst = OK
    for path in files:
        code = _submit_one(client, path, args.profile, wait=not args.no_wait)
        worst = max(worst, code)
        if code == UNREACHABLE:
            break
    return worst


def _submit_one(client: Client, path: Path, profile: str | None, *, wait: bool) -> int:
    progress = ProgressBar(sys.stderr, clean(path.name))
    try:
        job = client.upload(path, profile, on_progress=progress.upload)
    except (OSError, FileChanged) as e:
        progress.finish()
        print(f"vidd: {path}: {e}", file=sys.stderr)
        return USAGE
    except Refused as e:
        progress.finish()
        if e.status == 422:  # not a video: the daemon recorded it as rejected
            print(f"-\trejected\t{clean(path.name)}: {clean(e.message)}")
            return JOB_FAILED
        raise
    except BaseException:
        progress.finish()
        raise
    progress.uploaded(job)
    if not wait:
        progress.finish()
        print(f"{job.get('id')}\t{job.get('status')}\t{clean(path.name)}")
        return OK
    try:
        job = _follow(client, job, progress)
    except KeyboardInterrupt:
        progress.finish()
        print(f"vidd: stopped following; job {job.get('id')} goes on", file=sys.stderr)
        raise
    finally:
        progress.finish()
    return _report(client, job)


def _follow(client: Client, job: dict[str, Any], progress: ProgressBar) -> dict[str, Any]:
    job_id = str(job.get("id", ""))
    if not is_valid_id(job_id):
        raise Refused(201, "bad_response", "the new job has no valid id")
    while job.get("status") not in FINAL:
        progress.convert(job)
        time.sleep(POLL_S)
        job = client.job(job_id)
    progress.convert(job)
    return job


def _report(client: Client, job: dict[str, Any]) -> int:
    status = job.get("status")
    if status == "done":
        output = job.get("output") or {}
        where = output.get("watch_url") or output.get("url") or ""
        print(f"{job['id']}\tdone\t{client.url}{where}" if where else f"{job['id']}\tdone")
        return OK
    error = job.get("error") or {}
    message = clean(str(error.get("message") or ""))
    print(f"{job['id']}\t{status}\t{message}".rstrip())
    return JOB_FAILED


def _status(client: Client, args: argparse.Namespace) -> int:
    data = client.status()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return OK
    print(f"vidd at {client.url}")
    for key, value in _flatten(data):
        print(f"  {key:<28} {_human(key, value)}")
    return OK


def _jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(args.status, args.limit)
    if args.json:
        print(json.dumps(jobs, indent=2, sort_keys=True))
        return OK
    if not jobs:
        print("no jobs")
        return OK
    print(f"{'ID':<14} {'STATUS':<9} {'PROGRESS':>8}  {'CREATED':<20} NAME")
    for job in jobs:
        pct = f"{float(job.get('progress') or 0) * 100:.0f}%"
        created = str(job.get("created_at") or "")[:19].replace("T", " ")
        print(
            f"{clean(str(job.get('id'))):<14} {clean(str(job.get('status'))):<9} {pct:>8}  "
            f"{created:<20} {clean(str(job.get('name') or ''))}"
        )
    return OK


def _cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    print(f"{job.get('id', args.id)}\t{job.get('status')}")
    return OK


def _retry(client: Client, args: argparse.Namespace) -> int:
    job = client.retry(args.id)
    print(f"{job.get('id', args.id)}\t{job.get('status')}")
    return OK


# -- progress on the terminal ----------------------------------------------------------------


class ProgressBar:
    """A one-line bar on a terminal (upload, then conversion); plain milestones elsewhere."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.tty = stream.isatty()
        self._drawn_at = 0.0
        self._on_line = False
        self._last_status: str | None = None

    def upload(self, sent: int, total: int) -> None:
        if not self.tty:
            return
        fraction = sent / total if total else 1.0
        self._draw("upload", fraction, f"{_size(sent)} of {_size(total)}", force=sent >= total)

    def uploaded(self, job: dict[str, Any]) -> None:
        if not self.tty:
            self._line(f"{self.name}: uploaded as {clean(str(job.get('id')))}")

    def convert(self, job: dict[str, Any]) -> None:
        status = str(job.get("status"))
        if not self.tty:
            if status != self._last_status:
                self._line(f"{self.name}: {clean(status)}")
            self._last_status = status
            return
        detail = clean(status)
        if status == "queued" and job.get("queue_position") is not None:
            detail = f"queued, {job['queue_position']} ahead"  # jobs ahead in the queue
        elif status == "running":
            fps, eta = job.get("fps"), job.get("eta_s")
            detail = f"{fps:.0f} fps" if isinstance(fps, int | float) else "running"
            if isinstance(eta, int | float) and eta >= 0:
                detail += f", ETA {_duration(eta)}"
        fraction = 1.0 if status == "done" else float(job.get("progress") or 0)
        self._draw("convert", fraction, detail, force=status != self._last_status)
        self._last_status = status

    def finish(self) -> None:
        if self._on_line:
            self.stream.write("\n")
            self.stream.flush()
            self._on_line = False

    def _draw(self, phase: str, fraction: float, detail: str, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._drawn_at < 0.1:  # at most 10 redraws a second
            return
        self._drawn_at = now
        fraction = max(0.0, min(1.0, fraction))
        columns = shutil.get_terminal_size().columns
        width = max(10, min(40, columns - 60))
        filled = int(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        text = f"{self.name[:24]:<24} {phase:<7} [{bar}] {fraction * 100:5.1f}%  {detail}"
        self.stream.write("\r" + text[: columns - 1].ljust(columns - 1))
        self.stream.flush()
        self._on_line = True

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


# -- formatting ------------------------------------------------------------------------------


def _api_message(e: Refused) -> str:
    hint = " (set VIDD_TOKEN or --token)" if e.status == 401 else ""
    return f"HTTP {e.status} {clean(e.code)}: {clean(e.message)}{hint}"


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The status document as dotted keys, whatever its nesting."""
    if isinstance(data, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in data.items():
            rows += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, data)]


def _human(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, int | float):
        if "bytes" in key:
            return _size(float(value))
        if key.endswith("_s") or key.endswith("uptime"):
            return _duration(float(value))
    if isinstance(value, list):
        return ", ".join(clean(str(v)) for v in value) or "-"
    return clean(str(value))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


def _duration(s: float) -> str:
    s = int(s)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{s:02d}s"
    return f"{minutes}m{s:02d}s" if minutes else f"{s}s"


def clean(text: str) -> str:
    """Text from outside (a file name, a message) with control characters made visible, so it
    can't move the cursor or recolour the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
