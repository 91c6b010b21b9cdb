"""File names vidd writes that a person chose: a user's name made safe to be one path
component (no separators, no controls, bounded), and the "holiday (2).mp4" numbering that
never overwrites. Nothing here touches the disk."""

from __future__ import annotations

import unicodedata

# Bytes, not characters: Linux filesystems bound a name at 255 bytes. Room is left for
# " (9999)" and an extension.
MAX_NAME_BYTES = 200
MAX_FOLDER_PARTS = 32
# Controls, format characters (bidi overrides make "gpj.exe" look like "exe.jpg") and
# lone surrogates from undecodable bytes.
DROPPED_CATEGORIES = {"Cc", "Cf", "Cs"}
# Path separators and characters other systems (a Samba share of output_dir) refuse.
REPLACED = set('/\\:*?"<>|')
FALLBACK = "untitled"


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that is at most `max_bytes` of UTF-8."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def file_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """`name` as one safe path component: never empty, ".", ".." or hidden, no separators
    or control characters, at most `max_bytes` of UTF-8 (the extension kept when cut)."""
    if len(name) > max_bytes * 4:  # bound the work on hostile input, keeping the extension
        base, dot, ext = name.rpartition(".")
        name = (
            base[: max_bytes * 4] + "." + ext if dot and len(ext) <= 10 else name[: max_bytes * 4]
        )
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        "_" if c in REPLACED else c
        for c in name
        if unicodedata.category(c) not in DROPPED_CATEGORIES
    )
    # Leading dots would hide the file (and make "." or ".."); trailing dots and spaces
    # are refused by other systems.
    name = name.strip().lstrip(".").rstrip(". ").strip()
    if not name:
        return FALLBACK
    if len(name.encode("utf-8")) > max_bytes:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext.encode("utf-8")) <= 10:
            name = _cut(stem, max_bytes - len(ext.encode("utf-8")) - 1).rstrip() + "." + ext
        else:
            name = _cut(name, max_bytes).rstrip()
    return name or FALLBACK


def stem(name: str) -> str:
    """The name without its extension ("holiday.mov" -> "holiday"; ".mov" stays)."""
    base, dot, _ext = name.rpartition(".")
    return base if dot and base else name


def result_name(original: str) -> str:
    """The published name of a result: the original's stem, cleaned, with ".mp4"."""
    return file_name(stem(file_name(original)) + ".mp4")


def numbered(name: str, n: int) -> str:
    """The n-th choice for `name`: itself, then "holiday (2).mp4", "holiday (3).mp4"..."""
    if n <= 1:
        return name
    base, dot, ext = name.rpartition(".")
    if not dot or not base:
        return f"{name} ({n})"
    return f"{base} ({n}).{ext}"


def folder_parts(folder: str) -> list[str]:
    """A job's inbox subfolder ("sub/deeper") as cleaned path components; "" is none.
    Empty, "." and ".." parts are dropped, never followed."""
    parts = [p for p in folder.replace("\\", "/").split("/") if p.strip(" .")]
    return [file_name(p) for p in parts[:MAX_FOLDER_PARTS]]
