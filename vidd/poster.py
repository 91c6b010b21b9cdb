"""The poster: one JPEG frame from a finished video, made with ffmpeg, for the player page."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from . import children

log = logging.getLogger(__name__)

POSTER_WIDTH = 480
POSTER_TIMEOUT_S = 60.0


def ffmpeg_args(ffmpeg: str, video: Path, out: Path, duration: float) -> list[str]:
    """A frame at a third of the way in (past black openings and titles), at most
    POSTER_WIDTH wide: a smaller video is not blown up."""
    at = max(0.0, duration / 3.0)
    return [
        ffmpeg,
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-ss",
        f"{at:.3f}",
        "-i",
        str(video),
        "-frames:v",
        "1",
        "-an",
        "-vf",
        f"scale='min({POSTER_WIDTH},iw)':-2",
        "-q:v",
        "4",
        "-f",
        "image2",
        "-update",
        "1",
        str(out),
    ]


async def make(
    ffmpeg: str,
    video: Path,
    tmp: Path,
    dest: Path,
    duration: float,
    *,
    nice: int = 0,
    box: children.Box | None = None,
) -> bool:
    """Write a poster of `video` to `tmp`, then rename it to `dest`. False if that failed
    (logged): a missing poster never fails a job."""
    if not ffmpeg:
        return False
    try:
        code, _, err = await children.run(
            ffmpeg_args(ffmpeg, video, tmp, duration),
            timeout_s=POSTER_TIMEOUT_S,
            nice=nice,
            box=box,
        )
        if code != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
            lines = err.strip().splitlines()
            log.warning(
                "poster for %s: ffmpeg exit code %d: %s",
                video.name,
                code,
                lines[-1][:200] if lines else "no output",
            )
            return False
        os.replace(tmp, dest)
        return True
    except (OSError, TimeoutError) as e:
        log.warning("poster for %s: %s", video.name, e)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
