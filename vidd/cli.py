"""The `vidd` command: `serve` runs the daemon, `check-config` checks a config file, and
`submit`, `status`, `jobs`, `show`, `logs`, `wait`, `cancel`, `retry`, `delete` talk to a
running daemon over its HTTP API. Every command that prints takes `--json`."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import __version__, config, tus_client, worker_cli
from .client import Client, FileChanged, Refused, Unreachable
from .config_location import Location, NoConfig, find_config
from .job import Status, is_valid_id
from .terminal import Board, Progress, Stopped, clean, duration, size

OK, JOB_FAILED, USAGE, UNREACHABLE, REFUSED = 0, 1, 2, 3, 4
INTERRUPTED = 130
FINAL = {"done", "failed", "rejected", "cancelled"}
POLL_S = 0.5
MAX_LIMIT = 500  # the API's cap on a page (vidd/web/api.py MAX_LIMIT; a test keeps them equal)
DEFAULT_URL = "http://127.0.0.1:8080"
PARALLEL_UPLOADS = 3  # files sent at once by `submit` (the daemon takes web.max_uploads)
MAX_PARALLEL_UPLOADS = 16

EPILOG = """\
exit codes:
  0  ok; for submit and wait: every job is done
  1  a job failed, was rejected (not a video) or was cancelled
  2  usage or config error (bad arguments, unreadable file, invalid config.toml)
  3  the daemon cannot be reached (refused, timed out, wrong host)
  4  the daemon refused the request (HTTP 4xx/5xx: bad token, unknown job,
     a state that does not allow it, upload too large, disk full)
  With several files, submit exits with the highest code; after a 3 it starts no more.

environment:
  VIDD_URL     the daemon's address (default: the config's web.host and web.port,
               else http://127.0.0.1:8080)
  VIDD_TOKEN   the API token (default: the config's web.token); safer than --token,
               which `ps` shows
  VIDD_CONFIG  the config file, when --config is not given; then /etc/vidd/config.toml,
               then ./config.toml
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else USAGE
    if args.command in ("serve", "check-config"):
        return _local(args)
    if args.command == "worker":  # a remote encode worker (worker_cli.py)
        return worker_cli.main(args)
    try:
        client = _client(args)
    except (ValueError, config.ConfigError) as e:
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
    config_help = "path to config.toml (default: $VIDD_CONFIG, /etc/vidd/, ./)"

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", help=config_help)
    serve.add_argument("--verbose", action="store_true", help="log debug output")
    check = sub.add_parser("check-config", help="check a config file, the tools and folders")
    check.add_argument("--config", help=config_help)
    check.add_argument("--json", action="store_true", help="machine output")

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="the daemon's address (env VIDD_URL)")
    remote.add_argument("--token", help="API token (env VIDD_TOKEN)")
    remote.add_argument("--config", help=f"{config_help}; gives the address and token")
    remote.add_argument("--json", action="store_true", help="machine output (JSON)")

    def command(name: str, help: str, run: Callable[[Client, argparse.Namespace], int]) -> Any:
        p = sub.add_parser(
            name,
            help=help,
            parents=[remote],
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(run=run)
        return p

    submit = command("submit", "upload files and follow their conversion", _submit)
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--profile", help="an encode profile from the daemon's config")
    submit.add_argument("--no-wait", action="store_true", help="return once uploaded")
    submit.add_argument(
        "--parallel",
        type=_bounded(1, MAX_PARALLEL_UPLOADS),
        default=PARALLEL_UPLOADS,
        help=f"files sent at once (default {PARALLEL_UPLOADS})",
    )

    command("status", "show the daemon's state", _status)

    jobs = command("jobs", "list jobs, newest first", _jobs)
    jobs.add_argument("--status", type=_statuses, help="only jobs in these states (a,b)")
    jobs.add_argument(
        "--limit",
        type=_bounded(1, MAX_LIMIT),
        default=50,
        help=f"at most N jobs, 1-{MAX_LIMIT} (default 50)",
    )
    jobs.add_argument("--search", metavar="TEXT", help="only jobs whose name holds TEXT")
    jobs.add_argument("--before", type=_job_id, metavar="ID", help="the page after job ID")

    for name, help, run in (
        ("show", "show one job", _show),
        ("logs", "show a job's encode log, the lines that matter first", _logs),
        ("cancel", "cancel a queued or running job", _cancel),
        ("delete", "delete a job and its files (a running one is stopped)", _delete),
    ):
        command(name, help, run).add_argument("id", type=_job_id, metavar="ID")
    retry = command("retry", "requeue a failed or cancelled job", _retry)
    retry.add_argument("id", type=_job_id, metavar="ID")
    retry.add_argument("--profile", help="run it with this profile instead")
    wait = command("wait", "follow jobs until each has ended", _wait)
    wait.add_argument("ids", nargs="+", type=_job_id, metavar="ID")
    worker_cli.add_parser(sub)
    return parser


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        n = int(value) if value.isdigit() else 0
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"expected {low}-{high}, got {value!r}")
        return n

    return parse


def _statuses(value: str) -> str:
    known = [str(s) for s in Status]
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    wrong = [v for v in wanted if v not in known]
    if not wanted or wrong:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(known)}, got {value!r}")
    return ",".join(wanted)


def _job_id(value: str) -> str:
    if not is_valid_id(value):
        raise argparse.ArgumentTypeError(f"not a job id: {value!r}")
    return value


def _client(args: argparse.Namespace) -> Client:
    """--url and --token, else VIDD_URL and VIDD_TOKEN, else the config file's web section."""
    url = args.url or os.environ.get("VIDD_URL") or ""
    token = args.token if args.token is not None else os.environ.get("VIDD_TOKEN")
    if not url or token is None:
        web = _config_web(args.config)
        if web is not None:
            url = url or _url_of(web.host, web.port)
            token = token if token is not None else web.token
    return Client(url or DEFAULT_URL, token or "")


def _config_web(given: str | None) -> config.Web | None:
    try:
        where = find_config(given)
    except NoConfig:
        return None
    try:
        return config.load(where.path, require_tools=False).web
    except (config.ConfigError, OSError) as e:
        if where.explicit:
            raise _config_error(where, e) from None
        return None  # a system config this user can't read: the defaults, then a 401 hint


def _config_error(where: Location, e: Exception) -> config.ConfigError:
    if isinstance(e, config.ConfigError):
        return e
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return config.ConfigError(f"{where.path}: cannot read it: {reason}")


def _url_of(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - listening everywhere: ask on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _json_error(code: str, message: str, **more: Any) -> str:
    """One line of JSON for a file or job that could not be followed (submit, wait)."""
    return json.dumps({**more, "error": {"code": code, "message": message}}, ensure_ascii=False)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


# -- serve and check-config: the local commands ------------------------------------------------


def _local(args: argparse.Namespace) -> int:
    try:
        where = find_config(args.config)
    except NoConfig as e:
        print(f"vidd: {e}", file=sys.stderr)
        return USAGE
    if args.command == "check-config":
        return _check_config(where, as_json=args.json)
    try:
        cfg = config.load(where.path)
    except (config.ConfigError, OSError) as e:
        from .checks import unknown_keys_of

        # A misspelt key: every one, each with the nearest real key.
        for line in unknown_keys_of(where.path) or [str(_config_error(where, e))]:
            print(f"vidd: {line}", file=sys.stderr)
        return USAGE
    from . import daemon

    return daemon.serve(cfg, verbose=args.verbose, source=str(where))


def _check_config(where: Location, *, as_json: bool) -> int:
    from .checks import check

    report = check(where.path)
    if as_json:
        _print_json({**report.to_json(), "source": where.source})
    else:
        for problem in report.problems:
            print(f"vidd: {problem}", file=sys.stderr)
        if report.ok:
            print(f"{report.path}: ok")
    return OK if report.ok else USAGE


# -- submit and wait: following jobs ------------------------------------------------------------


class Batch:
    """Several files or jobs followed at once: one progress line each on stderr, one result
    line each on stdout in the order they were given, the worst exit code."""

    def __init__(self, names: Sequence[str], *, as_json: bool) -> None:
        self.board = Board(sys.stderr)
        self.lines = [self.board.line(name) for name in names]
        self.as_json = as_json
        self.unreachable = threading.Event()  # after a 3, start no more
        self._results: list[tuple[int, str] | None] = [None] * len(names)
        self._printed = 0
        self._lock = threading.Lock()

    def run(self, work: Callable[[int, Progress], tuple[int, str]], parallel: int) -> int:
        def one(i: int) -> None:
            if self.unreachable.is_set():
                return
            try:
                code, line = work(i, self.lines[i])
            except Unreachable as e:
                self.unreachable.set()
                code, line = UNREACHABLE, f"vidd: cannot reach the daemon: {e}"
                if self.as_json:
                    line = _json_error("unreachable", str(e))
            except Refused as e:
                code, line = REFUSED, f"vidd: the daemon refused: {_api_message(e)}"
                if self.as_json:
                    line = _json_error(e.code, e.message, status=e.status)
            except Stopped:
                return
            self._done(i, code, line)

        pool = ThreadPoolExecutor(parallel, thread_name_prefix="vidd-send")
        try:
            list(pool.map(one, range(len(self.lines))))
        except KeyboardInterrupt:
            self.board.stop()  # the threads give up at their next chunk or poll
            pool.shutdown(wait=True, cancel_futures=True)
            self.board.close()
            print("vidd: stopped following; the jobs already sent go on", file=sys.stderr)
            raise
        pool.shutdown()
        self.board.close()
        codes = [r[0] for r in self._results if r is not None]
        if self.unreachable.is_set():
            return UNREACHABLE
        return max(codes, default=OK)

    def _done(self, i: int, code: int, line: str) -> None:
        with self._lock:
            self._results[i] = (code, line)
            while self._printed < len(self._results):
                result = self._results[self._printed]
                if result is None:
                    break
                code, text = result
                # Refusals and unreachable daemons are errors: stderr, as for one command.
                error = code in (UNREACHABLE, REFUSED) and not self.as_json
                self.board.above(text, sys.stderr if error else sys.stdout)
                self._printed += 1


def _submit(client: Client, args: argparse.Namespace) -> int:
    files: list[Path] = args.files
    for path in files:
        if not path.is_file():
            print(f"vidd: {path}: not a readable file", file=sys.stderr)
            return USAGE
    batch = Batch([p.name for p in files], as_json=args.json)

    def send(i: int, progress: Progress) -> tuple[int, str]:
        return _submit_one(client, files[i], args, progress)

    return batch.run(send, args.parallel)


def _submit_one(
    client: Client, path: Path, args: argparse.Namespace, progress: Progress
) -> tuple[int, str]:
    try:
        job = _send(client, path, args.profile, progress)
    except (OSError, FileChanged) as e:
        progress.ended("error", str(e))
        if args.json:
            return USAGE, _json_error("unreadable", str(e), file=str(path))
        return USAGE, f"vidd: {clean(str(path))}: {clean(str(e))}"
    except Refused as e:
        if e.status == 422:  # not a video: the daemon recorded it as a rejected job
            progress.ended("rejected", e.message)
            rejected = {
                "id": "-",  # a daemon older than the Vidd-Job-Id header
                "name": path.name,
                "error": {"code": e.code, "message": e.message},
                **(e.job or {}),  # the whole job when the daemon sends it
                "status": "rejected",
            }
            return JOB_FAILED, _result(rejected, client, args.json)
        progress.ended("refused", e.message)
        raise
    progress.uploaded(job)
    if job.get("status") == "rejected":  # not a video (the resumable way answers 201)
        error = job.get("error") or {}
        progress.ended("rejected", str(error.get("message") or ""))
        return JOB_FAILED, _result({"name": path.name, **job}, client, args.json)
    if args.no_wait:
        progress.ended("uploaded", str(job.get("status")))
        return OK, _result(job, client, args.json, no_wait=True)
    job = _follow(client, job, progress)
    return (OK if job.get("status") == "done" else JOB_FAILED), _result(job, client, args.json)


def _send(client: Client, path: Path, profile: str | None, progress: Progress) -> dict[str, Any]:
    """The resumable way (tus: a dropped connection or a restarted daemon resumes, and so
    does a second `vidd submit` of the same file); one multipart POST for a daemon
    without it."""
    record = _resume_record(path)
    try:
        return tus_client.send(client, path, profile, progress.upload, resume_file=record)
    except Refused as e:
        if e.status not in (404, 405):
            raise  # a rejected file (422) too: its job comes with the refusal
        return client.upload(path, profile, on_progress=progress.upload)
    finally:
        with contextlib.suppress(OSError, ValueError):
            if not json.loads(record.read_text(encoding="utf-8")):
                record.unlink()  # nothing left to resume


def _resume_record(path: Path) -> Path:
    """Where an unfinished upload of `path` is remembered: one small file per source file,
    since the files of one `submit` are sent at once and would race over a shared one."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return tus_client.default_resume_file().parent / "uploads" / f"{digest}.json"


def _wait(client: Client, args: argparse.Namespace) -> int:
    ids: list[str] = args.ids
    batch = Batch(ids, as_json=args.json)

    def follow(i: int, progress: Progress) -> tuple[int, str]:
        job = _follow(client, client.job(ids[i]), progress)
        return (OK if job.get("status") == "done" else JOB_FAILED), _result(job, client, args.json)

    return batch.run(follow, min(len(ids), MAX_PARALLEL_UPLOADS))


def _follow(client: Client, job: dict[str, Any], progress: Progress) -> dict[str, Any]:
    job_id = str(job.get("id", ""))
    if not is_valid_id(job_id):
        raise Refused(201, "bad_response", "the job has no valid id")
    while job.get("status") not in FINAL:
        progress.convert(job)
        time.sleep(POLL_S)
        progress.check()
        job = client.job(job_id)
    progress.convert(job)
    return job


def _result(job: dict[str, Any], client: Client, as_json: bool, *, no_wait: bool = False) -> str:
    """A job's line on stdout: `ID<TAB>STATUS<TAB>where or why`, or its JSON on one line."""
    if as_json:
        return json.dumps(job, sort_keys=True, ensure_ascii=False)
    job_id, status = clean(str(job.get("id"))), clean(str(job.get("status")))
    name = clean(str(job.get("name") or ""))
    if no_wait:
        return f"{job_id}\t{status}\t{name}"
    if status == "done":
        output = job.get("output") or {}
        where = output.get("watch_url") or output.get("url") or ""
        return f"{job_id}\tdone\t{client.url}{where}" if where else f"{job_id}\tdone"
    error = job.get("error") or {}
    message = clean(str(error.get("message") or ""))
    if status == "rejected" and name:
        message = f"{name}: {message}"
    return f"{job_id}\t{status}\t{message}".rstrip()


# -- one-shot commands ------------------------------------------------------------------------


def _status(client: Client, args: argparse.Namespace) -> int:
    data = client.status()
    if args.json:
        _print_json(data)
        return OK
    print(f"vidd at {client.url}")
    for key, value in _flatten(data):
        print(f"  {key:<28} {_human(key, value)}")
    return OK


def _jobs(client: Client, args: argparse.Namespace) -> int:
    page = client.jobs_page(args.status, args.limit, args.before, args.search)
    jobs, next_before = page["jobs"], page.get("next_before")
    if args.json:
        _print_json(page)
    elif not jobs:
        print("no jobs")
    else:
        print(f"{'ID':<14} {'STATUS':<9} {'PROGRESS':>8}  {'CREATED':<20} NAME")
        for job in jobs:
            pct = f"{float(job.get('progress') or 0) * 100:.0f}%"
            created = str(job.get("created_at") or "")[:19].replace("T", " ")
            print(
                f"{clean(str(job.get('id'))):<14} {clean(str(job.get('status'))):<9} {pct:>8}  "
                f"{created:<20} {clean(str(job.get('name') or ''))}"
            )
    if next_before:
        total = page.get("total")
        of = f" of {total}" if isinstance(total, int) else ""
        print(
            f"vidd: showing {len(jobs)}{of}; more with --before {clean(str(next_before))}",
            file=sys.stderr,
        )
    return OK


def _show(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.id)
    if args.json:
        _print_json(job)
        return OK
    for key, value in _flatten({k: v for k, v in job.items() if k != "log_tail"}):
        print(f"{key:<28} {_human(key, value)}")
    return OK


def _logs(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.id)  # an unknown job is a 404 here, in words
    try:
        log = client.log(args.id)
    except Refused as e:
        if e.status != 404:
            raise
        # A daemon without GET /api/jobs/{id}/log: the job's own log tail.
        log = {"highlights": [], "lines": str(job.get("log_tail") or "").splitlines()}
    if args.json:
        _print_json(log)
        return OK
    highlights = [clean(str(x)) for x in log.get("highlights") or []]
    lines = [clean(str(x)) for x in log.get("lines") or []]
    if highlights:
        print("\n".join(highlights))
        if lines:
            print("--- the log's end:")
    if lines:
        print("\n".join(lines))
    elif not highlights:
        print("(no log)")
    return OK


def _cancel(client: Client, args: argparse.Namespace) -> int:
    return _answer(client.cancel(args.id), args)


def _retry(client: Client, args: argparse.Namespace) -> int:
    return _answer(client.retry(args.id, args.profile), args)


def _delete(client: Client, args: argparse.Namespace) -> int:
    answer = client.delete(args.id)
    if args.json:
        _print_json(answer)
    else:
        print(f"{clean(str(answer.get('deleted', args.id)))}\tdeleted")
    return OK


def _answer(job: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        _print_json(job)
    else:
        print(f"{clean(str(job.get('id', args.id)))}\t{clean(str(job.get('status')))}")
    return OK


# -- formatting ------------------------------------------------------------------------------


def _api_message(e: Refused) -> str:
    hint = " (set VIDD_TOKEN or --token)" if e.status == 401 else ""
    return f"HTTP {e.status} {clean(e.code)}: {clean(e.message)}{hint}"


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A JSON document as dotted keys, whatever its nesting."""
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
        if "bytes" in key or key.endswith(".size"):
            return size(float(value))
        if key.endswith("_s") or key.endswith("uptime"):
            return duration(float(value))
    if isinstance(value, list):
        return ", ".join(clean(str(v)) for v in value) or "-"
    return clean(str(value)) or "-"
