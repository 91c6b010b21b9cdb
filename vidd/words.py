"""Plain words for what went wrong: the sentence a person reads about a job's error (or a
refused upload), made from the code and the technical message vidd records. The record
stays technical; this is only how it is told."""

from __future__ import annotations

import re

NOT_VIDEO = "This file isn't a video vidd can read."
DAMAGED = "HandBrake stopped: the file seems damaged."
DISK_FULL = "The disk is full. Free some space, then retry."
NO_VIDEO_MADE = "HandBrake finished without making a video that plays."
FAILED = "The conversion failed."

# HandBrake's own words in a message say more than the code that carried them: lowercase
# text to look for, and what it means. The first that appears wins.
BY_TEXT: tuple[tuple[str, str], ...] = (
    ("no space left on device", DISK_FULL),
    ("disk is full", DISK_FULL),
    ("unrecognized file type", NOT_VIDEO),
    ("no title found", NOT_VIDEO),
    ("found no title", NOT_VIDEO),
    ("found no video title", NOT_VIDEO),
    ("file is empty", "The file is empty."),
    ("still picture", "This is a still picture, not a video."),
    ("no picture size", NOT_VIDEO),
    ("took more than", "HandBrake took too long to read this file; it may be damaged."),
    ("invalid data found", DAMAGED),
    ("could not read the source", DAMAGED),
    ("could not read it", "HandBrake couldn't read this file: it may be damaged, or not a video."),
)

# HandBrakeCLI's exit codes (and WorkDone errors), as vidd's messages end them: "(exit
# code 5)", "(error 5)".
BY_HANDBRAKE_CODE: dict[int, str] = {
    1: "HandBrake stopped before the end.",
    2: "HandBrake found no video in this file.",
    3: "HandBrake couldn't set up this conversion; the profile's settings may be wrong.",
    4: "HandBrake stopped with an error it didn't explain.",
    5: DAMAGED,
}
HANDBRAKE_CODE = re.compile(r"\((?:exit code|error) (\d+)\)")

BY_CODE: dict[str, str] = {
    "not_video": NOT_VIDEO,
    "not_a_video": NOT_VIDEO,  # the source, probed again before its encode
    "cancelled": "Cancelled.",
    "crashed": "HandBrake crashed during the conversion.",
    "killed": "The conversion was cut short when vidd was stopped; retry it.",
    "stalled": "HandBrake stopped making progress, so vidd stopped it.",
    "disk_full": DISK_FULL,
    "no_output": NO_VIDEO_MADE,
    "no_workdone": NO_VIDEO_MADE,
    "bad_output": NO_VIDEO_MADE,
    "duration_mismatch": "The converted video is not as long as the original, so vidd didn't "
    "keep it.",
    "source_missing": "The original file is gone, so it can't be converted.",
    "unknown_profile": "This job's profile no longer exists; retry it with another one.",
    "spawn_failed": "HandBrake isn't installed, or can't start on this machine.",
    "handbrake_missing": "HandBrake isn't installed, or can't start on this machine.",
    "internal": "vidd ran into a problem of its own; its log says more.",
    "workers_lost": "The machines converting this video stopped answering, one after "
    "another; retry it when they are back.",
    # The codes a remote worker reports with its failure (web/workers.py: fail).
    "source_unreadable": "The worker couldn't fetch the original file; retry it.",
    "too_long": "The conversion took longer than the worker allows.",
    "output_too_large": "The converted video is larger than vidd accepts.",
}


def plain(code: str, detail: str) -> str:
    """The sentence for an error with this `code` and technical `detail`."""
    text = detail.lower()
    if code in ("exit_code", "workdone_error") and (m := HANDBRAKE_CODE.search(text)):
        return BY_HANDBRAKE_CODE.get(int(m.group(1)), FAILED)
    if code not in ("cancelled", "unknown_profile", "internal"):
        for needle, sentence in BY_TEXT:
            if needle in text:
                return sentence
    return BY_CODE.get(code, FAILED)
