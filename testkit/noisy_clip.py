"""A clip of a few MB for the resumable-upload tests: ffmpeg's test pattern under noise,
so that it does not compress to almost nothing (a 2 s 640x360 clip is about 6 MB)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .media import FFMPEG


def make_noisy_clip(path: Path, seconds: float = 2.0, size: str = "640x360") -> Path:
    args = [
        FFMPEG, "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25,noise=alls=60:allf=t",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds), "-c:v", "mpeg4", "-q:v", "3", "-c:a", "libmp3lame", "-shortest",
        str(path),
    ]  # fmt: skip
    subprocess.run(args, check=True, timeout=60, capture_output=True)
    return path
