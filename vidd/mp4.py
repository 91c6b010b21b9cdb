"""Reads what vidd checks in an MP4 it made: the duration, the tracks and their codecs, and
whether the index (moov) comes before the media (mdat). Pure Python and instant, so an
encode is verified without running another HandBrake scan.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .job import MediaInfo

MAX_MOOV_BYTES = 64 << 20  # an index this large is not one HandBrake wrote
MAX_TOP_BOXES = 1000

# Sample entry four-character codes, as the names ffmpeg and HandBrake's scan use.
CODECS = {
    b"avc1": "h264",
    b"avc3": "h264",
    b"hvc1": "hevc",
    b"hev1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"mp4a": "aac",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
    b"Opus": "opus",
    b"fLaC": "flac",
}


class NotAnMp4(ValueError):
    pass


@dataclass(frozen=True)
class Mp4Info:
    media: MediaInfo
    moov_first: bool


def inspect(path: Path) -> Mp4Info:
    """The duration, geometry and codecs of an MP4, from its moov box. Raises NotAnMp4."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        moov: bytes | None = None
        moov_first = False
        seen_mdat = False
        for _ in range(MAX_TOP_BOXES):
            header = _box_header(f, size)
            if header is None:
                break
            kind, start, end = header
            if kind == b"moov":
                if end - start > MAX_MOOV_BYTES:
                    raise NotAnMp4("the index (moov) is implausibly large")
                moov = f.read(end - start)
                moov_first = not seen_mdat
            elif kind == b"mdat":
                seen_mdat = True
            f.seek(end)
        if moov is None:
            raise NotAnMp4("no index (moov box): not a complete MP4")
    return Mp4Info(media=_media(moov, size), moov_first=moov_first)


def _box_header(f: BinaryIO, file_size: int) -> tuple[bytes, int, int] | None:
    """(type, payload start, box end) of the box at the current offset, or None at the end."""
    offset = f.tell()
    head = f.read(8)
    if len(head) < 8:
        return None
    length, kind = struct.unpack(">I4s", head)
    start = offset + 8
    if length == 1:
        large = f.read(8)
        if len(large) < 8:
            raise NotAnMp4("cut off in a box header")
        (length,) = struct.unpack(">Q", large)
        start += 8
    elif length == 0:  # the box runs to the end of the file
        length = file_size - offset
    end = offset + length
    if length < start - offset or end > file_size:
        raise NotAnMp4(f"box {kind!r} runs past the end of the file: it is cut off")
    return kind, start, end


def _children(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, list[bytes]]:
    """The boxes directly inside `data[start:end]`, by type."""
    end = len(data) if end is None else end
    found: dict[bytes, list[bytes]] = {}
    pos = start
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:
            if pos + 16 > end:
                break
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif length == 0:
            length = end - pos
        if length < header or pos + length > end:
            raise NotAnMp4(f"box {kind!r} inside the index is damaged")
        found.setdefault(kind, []).append(data[pos + header : pos + length])
        pos += length
    return found


def _one(boxes: dict[bytes, list[bytes]], kind: bytes) -> bytes:
    try:
        return boxes[kind][0]
    except (KeyError, IndexError):
        raise NotAnMp4(f"the index has no {kind.decode()} box") from None


def _media(moov: bytes, file_size: int) -> MediaInfo:
    boxes = _children(moov)
    mvhd = _one(boxes, b"mvhd")
    if mvhd[0] == 1:
        timescale, duration = struct.unpack_from(">IQ", mvhd, 20)
    else:
        timescale, duration = struct.unpack_from(">II", mvhd, 12)
    if timescale == 0:
        raise NotAnMp4("the index has no time scale")
    width = height = 0
    video = ""
    audio: list[str] = []
    for trak in boxes.get(b"trak", []):
        parts = _children(trak)
        mdia = _children(_one(parts, b"mdia"))
        handler = _one(mdia, b"hdlr")[8:12]
        stbl = _children(_one(_children(_one(mdia, b"minf")), b"stbl"))
        stsd = _one(stbl, b"stsd")
        fourcc = stsd[12:16] if len(stsd) >= 16 else b""
        codec = CODECS.get(fourcc, fourcc.decode("latin-1").strip())
        if handler == b"vide" and not video:
            video = codec
            tkhd = _one(parts, b"tkhd")
            w, h = struct.unpack_from(">II", tkhd, len(tkhd) - 8)
            width, height = w >> 16, h >> 16
        elif handler == b"soun":
            audio.append(codec)
    return MediaInfo(
        size=file_size,
        duration=duration / timescale,
        width=width,
        height=height,
        video_codec=video,
        audio_codecs=tuple(audio),
    )
