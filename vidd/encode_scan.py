"""What HandBrake's own scan at the start of an encode says about the source.

An encode scans its input before it starts, as `--scan` does, but with `--json` it prints
no `JSON Title Set` then (test/test.c prints that in scan-only mode); what it says goes to
stderr as log lines. From them this module rebuilds the part of a title set the probe
reads, so `probe.media_info` judges a source the same way, with the same reasons, whether
the intake probed it first or its encode scanned it:

- ffmpeg's dump of the input: `Stream #0:0: Video: mpeg4 (...)` (the video codec, named
  as the title set's `VideoCodec`);
- libhb's `scan: audio 0x1: mp3float, rate=...` (each audio track's decoder, named as the
  title set's `CodecName`);
- the CLI's title summary: `+ size: 320x240, ...` and `+ duration: 00:00:03`;
- the `json job:` dump libhb logs as the job is added: its chapters' `Ticks` (90 kHz) add
  up to the title's duration, to the tick;
- `No title found.`: HandBrake found nothing to encode (it exits with code 2).

The facts are complete once the job dump has ended: HandBrake then starts encoding.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Bounds against a runaway dump: a job's JSON is a few KB.
MAX_JOB_LINES = 5_000
MAX_JOB_CHARS = 1 << 20
MAX_AUDIO_TRACKS = 100
UNKNOWN_CODEC = "unknown"

_VIDEO_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: Video: ([A-Za-z0-9_]+)")
_AUDIO_SCAN = re.compile(r"scan: audio 0x[0-9A-Fa-f]+: ([A-Za-z0-9_]+)")
_SIZE = re.compile(r"^\s*\+ size: (\d+)x(\d+)")
_DURATION = re.compile(r"^\s*\+ duration: (\d+):(\d\d):(\d\d)\s*$")
_JOB_START = re.compile(r"json job:\s*$")


class EncodeScan:
    """Fed HandBrake's stderr lines one at a time; knows the source's facts once
    `complete`. Never raises on odd input: what it can't read stays unknown."""

    def __init__(self) -> None:
        self.video_codec: str | None = None
        self.width = 0
        self.height = 0
        self.seconds: float | None = None  # from the summary, whole seconds
        self.ticks: int | None = None  # from the job dump, exact
        self.audio: list[str] = []
        self.no_title = False
        self.complete = False
        self._job: list[str] | None = None  # the job dump's lines, while it is coming
        self._job_chars = 0

    def feed(self, line: str) -> bool:
        """Take one line; True when this line completed the facts."""
        line = line.rstrip("\r\n")
        if self._job is not None:
            return self._feed_job(line)
        if self.complete:
            return False
        if line.strip() == "No title found.":
            self.no_title = True
        elif _JOB_START.search(line):
            self._job, self._job_chars = [], 0
        elif (m := _VIDEO_STREAM.match(line)) is not None:
            if self.video_codec is None and "(attached pic)" not in line:
                self.video_codec = m.group(1).lower()
        elif (m := _AUDIO_SCAN.search(line)) is not None:
            if len(self.audio) < MAX_AUDIO_TRACKS:
                self.audio.append(m.group(1))
        elif (m := _SIZE.match(line)) is not None:
            self.width, self.height = int(m.group(1)), int(m.group(2))
        elif (m := _DURATION.match(line)) is not None:
            h, mi, s = (int(x) for x in m.groups())
            self.seconds = float(h * 3600 + mi * 60 + s)
        return False

    @property
    def seen(self) -> bool:
        """Whether any line this reads came by (else this HandBrake logs otherwise)."""
        return bool(
            self.no_title
            or self.complete
            or self.video_codec
            or self.width
            or self.audio
            or self.seconds is not None
        )

    def _feed_job(self, line: str) -> bool:
        assert self._job is not None
        self._job.append(line)
        self._job_chars += len(line) + 1
        if line != "}":
            if len(self._job) > MAX_JOB_LINES or self._job_chars > MAX_JOB_CHARS:
                self._job = None  # cut off: the summary's duration stands in
                return self._finish()
            return False
        text, self._job = "\n".join(self._job), None
        try:
            job = json.loads(text)
        except ValueError:
            job = None
        if isinstance(job, dict):
            self.ticks = _chapter_ticks(job)
        return self._finish()

    def _finish(self) -> bool:
        if self.complete:
            return False
        self.complete = True
        return True

    def title_set(self) -> dict[str, Any]:
        """What was seen, in the shape of a `JSON Title Set` (see probe.media_info): no
        title when HandBrake found none."""
        if self.no_title:
            return {"TitleList": []}
        duration: dict[str, Any] = {}
        if self.ticks is not None:
            duration["Ticks"] = self.ticks
        elif self.seconds is not None:
            duration["Seconds"] = self.seconds
        return {
            "TitleList": [
                {
                    # No ffmpeg dump (a disc image HandBrake reads itself): a title it
                    # found is a video, whatever its codec.
                    "VideoCodec": self.video_codec or UNKNOWN_CODEC,
                    "Duration": duration,
                    "Geometry": {"Width": self.width, "Height": self.height},
                    "AudioList": [{"CodecName": name} for name in self.audio],
                }
            ]
        }


def _chapter_ticks(job: dict[str, Any]) -> int | None:
    """The encoded range's length in 90 kHz ticks: its chapters' durations added up."""
    destination = job.get("Destination")
    chapters = destination.get("ChapterList") if isinstance(destination, dict) else None
    if not isinstance(chapters, list) or not chapters:
        return None
    total = 0
    for chapter in chapters:
        duration = chapter.get("Duration") if isinstance(chapter, dict) else None
        ticks = duration.get("Ticks") if isinstance(duration, dict) else None
        if isinstance(ticks, bool) or not isinstance(ticks, int) or ticks < 0:
            return None
        total += ticks
    return total
