"""The probe: `HandBrakeCLI --scan --json` tells what a file holds, or why it is not a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import children
from .job import MediaInfo
from .progress import parse_blocks

# Video "codecs" that mean the file is not really a video: ffmpeg renders text files
# as ANSI art, and a lone picture scans as a one-frame title.
NOT_VIDEO_CODECS = {"ansi", "tty", "bintext", "xbin", "idf", "", "none"}
PROBE_TIMEOUT_S = 60.0
MIN_DURATION_S = 0.2


class NotAVideo(Exception):
    """The file can't be converted; the message is the reason, in plain words."""


class HandBrakeMissing(OSError):
    """HandBrakeCLI itself could not be run (gone, or not executable): vidd's problem,
    not the file's. The message says which path, in plain words."""


def media_info(title_set: dict[str, Any], size: int) -> MediaInfo:
    """The first title of a `JSON Title Set`, as MediaInfo. Raises NotAVideo."""
    titles = title_set.get("TitleList") or []
    if not titles:
        raise NotAVideo("HandBrake found no video title in this file")
    title = titles[0]
    codec = str(title.get("VideoCodec") or "").lower()
    duration = _seconds(title.get("Duration") or {})
    geometry = title.get("Geometry") or {}
    width, height = int(geometry.get("Width") or 0), int(geometry.get("Height") or 0)
    if codec in NOT_VIDEO_CODECS:
        raise NotAVideo(f"not a video: HandBrake reads it as {codec or 'no'} video (text?)")
    if width <= 0 or height <= 0:
        raise NotAVideo("not a video: it has no picture size")
    if duration < MIN_DURATION_S:
        raise NotAVideo("not a video: it is a still picture or has no duration")
    audio = tuple(str(a.get("CodecName") or "") for a in title.get("AudioList") or [])
    return MediaInfo(
        size=size,
        duration=duration,
        width=width,
        height=height,
        video_codec=codec,
        audio_codecs=audio,
    )


def _seconds(d: dict[str, Any]) -> float:
    ticks = d.get("Ticks")
    if isinstance(ticks, int | float) and ticks > 0:
        return float(ticks) / 90_000.0  # HandBrake's clock runs at 90 kHz
    return float(d.get("Hours", 0) * 3600 + d.get("Minutes", 0) * 60 + d.get("Seconds", 0))


async def probe(
    handbrake: str, path: Path, box: children.Box | None = None, *, nice: int = 0
) -> MediaInfo:
    """Scan a file (in `box`, if given, at `nice`). Returns what it holds, or raises
    NotAVideo with the reason."""
    size = path.stat().st_size
    if size == 0:
        raise NotAVideo("the file is empty")
    args = [handbrake, "--scan", "--json", "--previews", "1:0", "-i", str(path.resolve())]
    try:
        code, out, err = await children.run(args, timeout_s=PROBE_TIMEOUT_S, box=box, nice=nice)
    except TimeoutError:
        raise NotAVideo(f"HandBrake took more than {PROBE_TIMEOUT_S:.0f} s to read it") from None
    except (FileNotFoundError, PermissionError) as e:  # spawned without setpriv
        raise HandBrakeMissing(f"HandBrakeCLI ({handbrake}) can't be run: {e.strerror}") from None
    if code in (126, 127):  # what setpriv exits with when it can't run the tool
        reason = "it is not there" if code == 127 else "it is not executable"
        raise HandBrakeMissing(f"HandBrakeCLI ({handbrake}) can't be run: {reason}")
    title_set = parse_blocks(out).get("JSON Title Set")
    if code != 0 or title_set is None:
        raise NotAVideo(unreadable(code, err))
    return media_info(title_set, size)


def unreadable(code: int, stderr: str) -> str:
    """Why HandBrake could not read a file (it exited `code` without a title), in words."""
    if "No title found" in stderr or code == 2:
        return "not a video: HandBrake found no title in it"
    last = [line.strip() for line in stderr.splitlines() if line.strip()]
    tail = last[-1][:200] if last else "no output"
    return f"HandBrake could not read it (exit code {code}): {tail}"
