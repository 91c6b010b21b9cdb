"""Repackaging: a source that is already what browsers play (H.264 video, AAC audio or
none) is copied into an MP4 with the index first by ffmpeg (`-c copy -movflags
+faststart`) instead of being encoded again: seconds instead of minutes, and no loss.

Only for profiles with `repackage = true`. The copy is verified like an encode (the
encoder checks the duration) and more: H.264 in a profile every browser decodes
(Baseline, Main or High: 8-bit 4:2:0), AAC audio, the index before the media. Any
failure is a `Failed` and the encoder encodes instead.
"""

from __future__ import annotations

import struct
from pathlib import Path

from . import children, mp4
from .job import MediaInfo

# Containers ffmpeg copies H.264/AAC out of without re-timing surprises.
CONTAINERS = frozenset({".mp4", ".mov", ".m4v", ".mkv"})
# avcC's AVCProfileIndication: Baseline, Main, High. High 10, 4:2:2 and 4:4:4 are H.264
# too, but browsers don't play them.
PLAYABLE_PROFILES = {66: "Baseline", 77: "Main", 100: "High"}
TIMEOUT_MIN_S = 60.0
TIMEOUT_PER_MEDIA_S = 0.5  # a copy reads at disk speed: far faster than real time
MAX_INDEX_BYTES = 64 << 20


class Failed(Exception):
    """The copy could not be made or is not a web MP4; the message says why."""


def why_not(source: MediaInfo | None, ext: str) -> str | None:
    """Why a source can't be repackaged, in words; None when it can be tried."""
    if source is None:
        return "its codecs are unknown"
    if ext.lower() not in CONTAINERS:
        return f"its container ({ext or 'no extension'}) is not MP4, MOV, M4V or MKV"
    if source.video_codec != "h264":
        return f"its video is {source.video_codec or 'unknown'}, not H.264"
    others = sorted({a for a in source.audio_codecs if a != "aac"})
    if others:
        return f"its audio is {', '.join(others)}, not AAC"
    return None


def ffmpeg_args(ffmpeg: str, source: Path, out: Path) -> list[str]:
    """The first video stream and every audio stream, copied; the index moved first."""
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        "-map",
        "0:v:0",
        "-map",
        "0:a?",
        "-c",
        "copy",
        "-map_metadata",
        "-1",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(out),
    ]


async def run(
    ffmpeg: str,
    source: Path,
    out: Path,
    duration: float,
    *,
    nice: int = 0,
    box: children.Box | None = None,
) -> tuple[MediaInfo, str]:
    """Copy `source` into the MP4 `out` and check it: (what it holds, ffmpeg's words).
    Raises Failed; `out` may then be left for the caller's cleanup."""
    timeout = TIMEOUT_MIN_S + TIMEOUT_PER_MEDIA_S * duration
    try:
        code, _, err = await children.run(
            ffmpeg_args(ffmpeg, source, out), timeout_s=timeout, nice=nice, box=box
        )
    except TimeoutError:
        raise Failed(f"ffmpeg took more than {timeout:.0f} s") from None
    except OSError as e:
        raise Failed(f"ffmpeg could not start: {e}") from None
    words = err.strip()
    if code != 0:
        last = words.splitlines()[-1][:200] if words else "no output"
        raise Failed(f"ffmpeg exit code {code}: {last}")
    return check(out), words


def check(path: Path) -> MediaInfo:
    """What makes a copy a web MP4 (the duration is the encoder's check). Raises Failed."""
    try:
        info = mp4.inspect(path)
    except (mp4.NotAnMp4, OSError, struct.error) as e:
        raise Failed(f"the copy is not an MP4: {e}") from None
    media = info.media
    if media.video_codec != "h264":
        raise Failed(f"the copy's video is {media.video_codec or 'missing'}, not H.264")
    if any(a != "aac" for a in media.audio_codecs):
        raise Failed(f"the copy's audio is {', '.join(media.audio_codecs)}, not AAC")
    if not info.moov_first:
        raise Failed("the copy's index is not at the front")
    profile = avc_profile(path)
    if profile not in PLAYABLE_PROFILES:
        raise Failed(f"the H.264 profile ({profile}) is not one browsers play")
    return media


def avc_profile(path: Path) -> int | None:
    """The AVCProfileIndication of the first avcC in the MP4's index."""
    moov = _moov(path)
    at = moov.find(b"avcC") if moov else -1
    # size(4) 'avcC', then configurationVersion (1) and AVCProfileIndication
    if at < 4 or at + 6 > len(moov) or moov[at + 4] != 1:
        return None
    return moov[at + 5]


def _moov(path: Path) -> bytes:
    """The index box's payload ("" if there is none or it is implausibly large)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        pos = 0
        for _ in range(mp4.MAX_TOP_BOXES):
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return b""
            length, kind = struct.unpack(">I4s", head[:8])
            header = 8
            if length == 1 and len(head) == 16:
                (length,) = struct.unpack(">Q", head[8:])
                header = 16
            elif length == 0:
                length = size - pos
            if length < header:
                return b""
            if kind == b"moov":
                if length > MAX_INDEX_BYTES:
                    return b""
                f.seek(pos + header)
                return f.read(length - header)
            pos += length
    return b""
