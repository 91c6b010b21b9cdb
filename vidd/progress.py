"""HandBrakeCLI's `--json` output: the parser for its `Name: {` ... `}` blocks, and the
Progress vidd reports, with fps and ETA computed here when HandBrake leaves them at 0.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

# A block opens with a line `Name: {` (the name is capitalised words: "Progress",
# "Version", "JSON Title Set"). Log text without a newline (libdvdread does this) may
# stand in front of it, so the name is looked for at the end of the line.
_HEADER = re.compile(r"(?:^|(?<=[^A-Za-z]))([A-Z][A-Za-z]*(?: [A-Z][A-Za-z]*)*): \{$")
# Limits against a runaway block: a scan of a disc with many titles is large, but not this.
MAX_BLOCK_LINES = 100_000
MAX_BLOCK_CHARS = 16 << 20


class BlockParser:
    """Reassembles blocks from lines, fed one at a time as they arrive.

    A block that is cut off (a new block starts, or it grows past the limits) or that
    is not valid JSON is dropped; lines outside any block are plain text, and
    `outside` tells the caller whether the last line fed was one.
    """

    def __init__(self) -> None:
        self._name: str | None = None
        self._lines: list[str] = []
        self._chars = 0
        self.outside = True

    def feed(self, line: str) -> tuple[str, dict[str, Any]] | None:
        line = line.rstrip("\r\n")
        header = _HEADER.search(line) if line.endswith(": {") else None
        if header is not None:
            self._name, self._lines, self._chars = header.group(1), ["{"], 2
            self.outside = False
            return None
        if self._name is None:
            self.outside = True
            return None
        self.outside = False
        self._lines.append(line)
        self._chars += len(line) + 1
        if line != "}":
            if len(self._lines) > MAX_BLOCK_LINES or self._chars > MAX_BLOCK_CHARS:
                self._reset()
            return None
        name, text = self._name, "\n".join(self._lines)
        self._reset()
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return (name, value) if isinstance(value, dict) else None

    def _reset(self) -> None:
        self._name, self._lines, self._chars = None, [], 0


def parse_blocks(text: str) -> dict[str, dict[str, Any]]:
    """Every complete block in `text`, by name (the last one wins)."""
    parser = BlockParser()
    blocks: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        block = parser.feed(line)
        if block is not None:
            blocks[block[0]] = block[1]
    return blocks


@dataclass(frozen=True)
class Progress:
    """Where an encode is: phase, overall progress 0..1, frames per second, seconds left."""

    phase: str
    progress: float
    fps: float | None
    eta_s: float | None


PHASES = {
    "SCANNING": "scanning",
    "SEARCHING": "seeking",  # reading up to --start-at before encoding starts
    "WORKING": "encoding",
    "PAUSED": "paused",
    "MUXING": "muxing",
    "WORKDONE": "done",
}
# Debian's 1.6.1 reports Rate as 0 or ~2e-7 throughout; anything below this is noise.
MIN_RATE = 0.5


def _number(d: dict[str, Any], key: str, default: float = 0.0) -> float:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def pass_count(block: dict[str, Any]) -> int:
    working = block.get("Working")
    if not isinstance(working, dict):
        return 1
    return max(1, min(16, int(_number(working, "PassCount", 1))))


def from_block(block: dict[str, Any]) -> Progress | None:
    """A Progress block as HandBrake states it; None when it is not a progress block.

    Progress is overall: with several passes, pass k of n covers ((k-1)/n, k/n). Once
    muxing starts every frame is encoded, so muxing counts as 1. fps and ETA are None
    where HandBrake gives no usable value.
    """
    state = block.get("State")
    if not isinstance(state, str) or not state:
        return None
    phase = PHASES.get(state, state.lower()[:20])
    if state in ("MUXING", "WORKDONE"):
        return Progress(phase, 1.0, None, 0.0)
    working = block.get("Working")
    if state not in ("WORKING", "PAUSED") or not isinstance(working, dict):
        return Progress(phase, 0.0, None, None)
    passes = pass_count(block)
    done_passes = min(passes, max(1, int(_number(working, "Pass", 1)))) - 1
    progress = _clamp((done_passes + _clamp(_number(working, "Progress"))) / passes)
    rate = _number(working, "Rate")
    eta = _number(working, "ETASeconds")
    # HandBrake's ETA covers the current pass only, so it is used for one pass alone.
    return Progress(
        phase,
        progress,
        rate if rate >= MIN_RATE else None,
        eta if eta > 0 and passes == 1 else None,
    )


class ProgressMeter:
    """Turns an encode's successive blocks into Progress that never goes backwards.

    When HandBrake's Rate or ETA are unusable they are derived from how fast overall
    progress moved over the last `window_s` seconds: fps = d(progress)/dt x passes x
    `frames_total` (source duration x output frame rate, None when the rate is unknown),
    ETA = (1 - progress) / (d(progress)/dt).
    """

    def __init__(self, frames_total: float | None, window_s: float = 10.0) -> None:
        self.frames_total = frames_total
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=1000)
        self._best = 0.0

    def update(self, block: dict[str, Any], now: float) -> Progress | None:
        stated = from_block(block)
        if stated is None:
            return None
        progress = max(self._best, stated.progress)
        self._best = progress
        if stated.phase != "encoding":
            return Progress(stated.phase, progress, stated.fps, stated.eta_s)
        self._samples.append((now, progress))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        speed = self._speed()
        fps, eta = stated.fps, stated.eta_s
        if fps is None and speed is not None and self.frames_total:
            fps = speed * pass_count(block) * self.frames_total
        if eta is None and speed:
            eta = (1.0 - progress) / speed
        return Progress(stated.phase, progress, fps, eta)

    def _speed(self) -> float | None:
        """Overall progress per second, or None until there is enough to tell."""
        (t0, p0), (t1, p1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 0.5:
            return None
        return (p1 - p0) / (t1 - t0)
