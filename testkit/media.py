"""Media made by ffmpeg at test time (no media files are committed), and readers that check
what an encode wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"


def make_clip(
    path: Path,
    seconds: float = 2.0,
    size: str = "320x240",
    vcodec: str = "mpeg4",
    acodec: str = "libmp3lame",
    rate: int = 25,
    timeout: float = 60.0,
) -> Path:
    """A test pattern with a tone, made by ffmpeg: by default a 2 s 320x240 MPEG-4/MP3 clip."""
    args = [
        FFMPEG,
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={rate}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        str(seconds),
        "-c:v",
        vcodec,
        "-c:a",
        acodec,
    ]
    if vcodec == "mpeg4":
        args += ["-q:v", "5"]
    subprocess.run([*args, str(path)], check=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return path


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's view of a file: its streams and its format, as JSON."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    return dict(json.loads(out))


def duration(path: Path) -> float:
    """A file's duration in seconds, as ffprobe reads its container."""
    return float(ffprobe(path)["format"]["duration"])


def mp4_top_boxes(path: Path) -> list[str]:
    """The names of an MP4's top-level boxes, in file order (to check moov before mdat)."""
    names = []
    with open(path, "rb") as f:
        while True:
            header = f.read(8)
            if len(header) < 8:
                break
            size = int.from_bytes(header[:4], "big")
            name = header[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
                f.seek(size - 16, 1)
            elif size == 0:
                names.append(name)
                break
            else:
                f.seek(size - 8, 1)
            names.append(name)
    return names
