"""Which of HandBrake's log lines matter: its errors and the reason it stopped first, then
how the encode went, without the disc-library chatter every run prints (libdvdnav,
libbluray, udfread, hb_init...). The whole log stays available beside the highlights."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HIGHLIGHTS = 30
MAX_LINE_CHARS = 500
TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*")
# Without --json, progress is "\rEncoding: task 1 of 1, 96.08 % (...)" with no newline, so
# a line HandBrake writes next to the other stream may come glued to it.
PROGRESS = re.compile(
    r"^(?:(?:Encoding: task \d+ of \d+, [\d.]+ %(?: \([^)]*\))?|Muxing: [^.[]*\.*)\s*)+"
)

# Printed by every run, whatever the file: the probing of disc formats before HandBrake
# opens a plain file, hardware checks, thread starts, the libdvdread CSS banner.
NOISE = re.compile(
    r"libdvd|udfread|^disc\.c:|bluray|\bbd: not a bd|dvd: not a dvd|hb_init|"
    r"thread [0-9a-f]+ started|qsv:|libnvidia|nvenc|quick sync|compile-time hardening|"
    r"^cpu:|logical processor count|cpus detected|css library|^\*+$|^\*\*|"
    r"libdvdread4/readme|encrypted dvd support|video_ts|"
    r'^"\w+":|^[{}\[\]],?$',  # the job's settings, printed as JSON
    re.IGNORECASE,
)
# Why it stopped, and errors: shown first.
TROUBLE = re.compile(
    r"\berror|\bfail|invalid|corrupt|unrecognized file type|no title found|"
    r"found 0 valid title|no space left|permission denied|cannot|can't|unable to|"
    r"not supported|unsupported|segmentation fault|abort|killed|interrupt|"
    r"truncat|missing|exited with|work result = [1-9]",
    re.IGNORECASE,
)
# Counts that are fine: "0 decoder errors".
NOT_TROUBLE = re.compile(r"\b0 decoder errors|work result = 0", re.IGNORECASE)
# How the run went: the end of a good encode.
OUTCOME = re.compile(
    r"work result = |encode done|average encoding speed|^mux: track|kb/s:|"
    r"finished work at|scan thread found|^opening |frames output",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LogView:
    highlights: list[str]
    lines: list[str]

    def to_json(self) -> dict[str, list[str]]:
        return {"highlights": self.highlights, "lines": self.lines}


def view(log: str, verdict: str | None = None) -> LogView:
    """The log as lines, and the lines that matter: trouble first, then the outcome, each
    in the log's order, without their timestamps, once each; then vidd's `verdict` (why it
    did not keep the result), which HandBrake's log may not show at all."""
    lines = [line[:MAX_LINE_CHARS] for line in log.splitlines() if line.strip()]
    trouble: list[str] = []
    outcome: list[str] = []
    for line in lines:
        text = TIMESTAMP.sub("", PROGRESS.sub("", line.strip())).strip()
        if NOISE.search(text):
            continue
        if TROUBLE.search(text) and not NOT_TROUBLE.search(text):
            trouble.append(text)
        elif OUTCOME.search(text):
            outcome.append(text)
    highlights = list(dict.fromkeys(trouble + outcome))[:MAX_HIGHLIGHTS]
    if verdict:
        highlights.append(f"vidd: {verdict}")
    return LogView(highlights=highlights, lines=lines)
