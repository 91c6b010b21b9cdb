#!/usr/bin/env python3
"""A stand-in HandBrakeCLI for what the real one can't do on demand: stall, crash, lie.

It speaks the same --json format. FAKE_HB_MODE picks the behaviour:
  ok                 delegate everything to the real HandBrakeCLI (the default)
  stall              progress up to 30 %, then the same block forever; a grandchild
                     `sleep` runs in the same process group
  crash              some progress, then die of SIGSEGV
  exit0_no_workdone  some progress, a partial output, exit 0 and no WorkDone
  workdone_error     some progress, a partial output, WorkDone Error 3, exit 0
  exitcode:N         some progress, a partial output, WorkDone Error N, exit N
  nospace            some progress, a partial output, "No space left on device" on
                     stderr, WorkDone Error 4, exit 4
  sleep[:S]          progress for S seconds (default 2) of sleeping, then a valid MP4 of
                     the source's duration (ffmpeg's stream copy of the source, index
                     first), WorkDone Error 0, exit 0: an encoder that costs no CPU, for
                     the bench that measures vidd's own overhead around encodes; also
                     chosen by the arguments `--fake-sleep S` (a profile's args reach a
                     remote worker's HandBrakeCLI where no environment does)
FAKE_HB_SHOW_ENV=1 prints the environment it got as a line `fake env: {json}` on stderr;
FAKE_HB_PIDS_OUT names a file (in the job's work folder: vidd's box lets it write only
there) that gets the pids of the process and its grandchild, also printed on stderr as
`fake pids: [pid, grandchild]`. vidd passes these on only when its config's
encode.child_env names them. `--scan` always goes to the real HandBrakeCLI.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

REAL = "/usr/bin/HandBrakeCLI"
FFMPEG = "/usr/bin/ffmpeg"


def block(name: str, value: dict) -> None:
    print(f"{name}: " + json.dumps(value, indent=4, sort_keys=True), flush=True)


def working(progress: float) -> None:
    block(
        "Progress",
        {
            "State": "WORKING",
            "Working": {
                "ETASeconds": 0,
                "Pass": 1,
                "PassCount": 1,
                "PassID": 0,
                "Paused": 0,
                "Progress": progress,
                "Rate": 0.0,
                "RateAvg": 0.0,
                "SequenceID": 1,
            },
        },
    )


def work_done(error: int) -> None:
    block("Progress", {"State": "WORKDONE", "WorkDone": {"Error": error, "SequenceID": 1}})


def some_progress(output: str | None) -> None:
    print("[00:00:00] hb_init: starting libhb thread", file=sys.stderr, flush=True)
    for i in range(1, 4):
        working(i / 10)
        time.sleep(0.05)
    if output:
        with open(output, "wb") as f:
            f.write(b"\0\0\0\x18ftypmp42" + b"\0" * 64)  # the start of an MP4, no more


def sleep_then_copy(source: str, output: str | None, seconds: float) -> int:
    """Report progress while sleeping `seconds`, then stream-copy the source into `output`."""
    block("Version", {"Name": "HandBrake", "VersionString": "1.6.1-fake"})
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        working(min(0.99, elapsed / seconds))
        time.sleep(min(0.2, max(0.0, seconds - elapsed)))
    if output is None:
        work_done(4)
        return 4
    copy = subprocess.run(  # noqa: S603 - a fixed argument list
        [FFMPEG, "-v", "error", "-y", "-i", source, "-map", "0:v:0", "-map", "0:a?",
         "-c", "copy", "-movflags", "+faststart", "-f", "mp4", output],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )  # fmt: skip
    if copy.returncode != 0:
        print(f"fake HandBrakeCLI: ffmpeg failed: {copy.stderr[-2000:]}", file=sys.stderr)
        work_done(3)
        return 3
    working(1.0)
    work_done(0)
    return 0


def main(argv: list[str]) -> int:
    if "--scan" in argv:
        os.execv(REAL, [REAL, *argv])
    if os.environ.get("FAKE_HB_SHOW_ENV"):
        print("fake env: " + json.dumps(dict(os.environ)), file=sys.stderr, flush=True)
    mode = os.environ.get("FAKE_HB_MODE", "ok")
    if "--fake-sleep" in argv:
        mode = "sleep:" + argv[argv.index("--fake-sleep") + 1]
    if mode == "ok":
        os.execv(REAL, [REAL, *argv])
    output = argv[argv.index("-o") + 1] if "-o" in argv else None
    if mode == "sleep" or mode.startswith("sleep:"):
        source = argv[argv.index("-i") + 1]
        return sleep_then_copy(source, output, float(mode.partition(":")[2] or 2.0))
    block("Version", {"Name": "HandBrake", "VersionString": "1.6.1-fake"})
    some_progress(output)
    if mode == "stall":
        # A second thread, as HandBrake has many: vidd's priorities must reach them all.
        threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
        grandchild = subprocess.Popen(["sleep", "1000"])  # noqa: S603, S607
        pids = [os.getpid(), grandchild.pid]
        print(f"fake pids: {json.dumps(pids)}", file=sys.stderr, flush=True)
        if path := os.environ.get("FAKE_HB_PIDS_OUT"):
            with open(path, "w") as f:
                json.dump(pids, f)
        while True:
            working(0.3)
            print("[00:00:01] still thinking", file=sys.stderr, flush=True)
            time.sleep(0.1)
    if mode == "crash":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test folder
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "exit0_no_workdone":
        return 0
    if mode == "workdone_error":
        work_done(3)
        return 0
    if mode == "nospace":
        print(
            "[00:00:01] mux: failed to write the output: No space left on device",
            file=sys.stderr,
            flush=True,
        )
        work_done(4)
        return 4
    if mode.startswith("exitcode:"):
        code = int(mode.split(":", 1)[1])
        work_done(code)
        return code
    print(f"fake HandBrakeCLI: unknown FAKE_HB_MODE {mode!r}", file=sys.stderr)
    return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
