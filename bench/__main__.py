"""`python -m bench [--case NAME]`: run the cases, print the table, write results/latest.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import (
    batch,
    cli_submit,
    drop,
    fanout,
    lone_job,
    playback,
    repackage,
    slow_clients,
    status_scale,
    tus,
    upload,
    workers,
)
from .harness import HANDBRAKE, Context, Result

RESULTS = Path(__file__).resolve().parent / "results"
CASE_TIMEOUT_S = 240.0  # a case is meant to take under 3 minutes; this is the backstop
FD_LIMIT = 8192  # fanout holds 1,000 sockets in this process (and vidd inherits the limit)

Case = Callable[[Context], Awaitable[list[Result]]]
CASES: dict[str, Case] = {
    # batch first: first_result and memory reuse its run.
    "batch": batch.case_batch,
    "first_result": batch.case_first_result,
    "memory": batch.case_memory,
    "drop_latency": drop.case_drop_latency,
    "lone_job": lone_job.case_lone_job,
    "upload": upload.case_upload,
    "playback": playback.case_playback,
    "fanout": fanout.case_fanout,
    "status_scale": status_scale.case_status_scale,
    "slow_clients": slow_clients.case_slow_clients,
    "repackage": repackage.case_repackage,
    "cli_submit": cli_submit.case_cli_submit,
    "tus": tus.case_tus,
    "workers": workers.case_workers,
}
COLUMNS = ("case", "figure", "measured", "reference", "ratio", "target", "result")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="run only this")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    names = [n for n in CASES if not args.case or n in args.case]

    _raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="vidd-bench-"))
    ctx = Context(workdir)
    report: dict[str, Any] = {"started_at": _now(), "machine": _machine(), "cases": {}}
    results: list[Result] = []
    try:
        for name in names:
            print(f"--- {name}", flush=True)
            entry = _run_case(name, CASES[name], ctx)
            results += entry["results"]
            report["cases"][name] = {**entry, "results": [r.to_json() for r in entry["results"]]}
            for r in entry["results"]:
                print(f"    {r.figure}: {r.measured} ({r.verdict})", flush=True)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["finished_at"] = _now()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(results))
    print(f"\nresults: {out}")
    return 0


def _run_case(name: str, case: Case, ctx: Context) -> dict[str, Any]:
    load_before = os.getloadavg()
    t0 = time.monotonic()
    try:
        results = asyncio.run(_bounded(case, ctx))
    except Exception as e:
        traceback.print_exc()
        results = [Result(name, "(failed to run)", f"error: {e}".splitlines()[0][:200])]
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "results": results,
    }


async def _bounded(case: Case, ctx: Context) -> list[Result]:
    async with asyncio.timeout(CASE_TIMEOUT_S):
        return await case(ctx)


def table(results: list[Result]) -> str:
    rows = [COLUMNS] + [
        (
            r.case,
            r.figure,
            r.measured,
            r.reference,
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            r.target,
            r.verdict,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    notes = [f"  {r.case} / {r.figure}: {r.note}" for r in results if r.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(line.rstrip() for line in lines)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _machine() -> dict[str, Any]:
    try:
        hb = subprocess.run(
            [HANDBRAKE, "--version"], capture_output=True, text=True, timeout=15
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        hb = "unknown"
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "handbrake": hb.splitlines()[-1] if hb else "unknown",
        "loadavg_at_start": os.getloadavg(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
