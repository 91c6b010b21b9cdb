"""A pass-through HandBrakeCLI for the fanout case: it runs the real HandBrakeCLI with the
same arguments, forwards its output line by line, and notes in $VIDD_BENCH_STAMPS when
each WORKING Progress block left it (CLOCK_MONOTONIC, which every process shares).

The encode, its CPU load and its progress are the real ones; only the publish times are
added. The bench copies this file next to its config with a `#!` line for this Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REAL = os.environ.get("VIDD_BENCH_REAL_HANDBRAKE", "/usr/bin/HandBrakeCLI")


def main() -> int:
    stamps_path = os.environ.get("VIDD_BENCH_STAMPS")
    # stderr is inherited. stdbuf's environment (set by vidd) reaches the real one too,
    # so its stdout is line-buffered into our pipe.
    proc = subprocess.Popen([REAL, *sys.argv[1:]], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = sys.stdout.buffer
    stamps = open(stamps_path, "a", buffering=1) if stamps_path else None  # noqa: SIM115
    block: list[bytes] | None = None
    for line in proc.stdout:
        out.write(line)
        out.flush()
        text = line.rstrip(b"\r\n")
        if text == b"Progress: {":
            block = [b"{"]
            continue
        if block is None:
            continue
        block.append(text)
        if text != b"}":
            continue
        sent = time.monotonic()  # the block is now in vidd's pipe
        try:
            value = json.loads(b"\n".join(block))
        except ValueError:
            value = {}
        block = None
        working = value.get("Working") if value.get("State") == "WORKING" else None
        if stamps is not None and isinstance(working, dict):
            progress = working.get("Progress")
            if isinstance(progress, int | float):
                stamps.write(f"{round(float(progress), 4)!r} {sent!r}\n")
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
