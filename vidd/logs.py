"""Logging setup: one line per event, with syslog priority prefixes under journald and
timestamps everywhere else."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# sd-daemon(3) priorities, which journald reads from a '<N>' prefix on each line.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
LEVELS = ("debug", "info", "warning", "error")
# Libraries that are chatty at debug level (aiosqlite logs every statement).
_QUIET = ("aiosqlite", "asyncio")


def _priority(levelno: int) -> int:
    for threshold, prio in _PRIORITY.items():
        if levelno >= threshold:
            return prio
    return 7


def _one_line(text: str) -> str:
    # A user's file name may hold a newline; it must not forge a second log event.
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class JournalFormatter(logging.Formatter):
    """`<6>vidd.pool: message`: journald adds the time, the unit and the pid itself."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _priority(record.levelno)
        lines = [f"<{prio}>{record.name}: {_one_line(record.getMessage())}"]
        # A traceback keeps its lines, each with the same priority so journald keeps them
        # together at the right level.
        lines += [f"<{prio}>{line}" for line in _extra(self, record)]
        return "\n".join(lines)


class ConsoleFormatter(logging.Formatter):
    """`2024-05-01 12:00:00.123 INFO    vidd.pool: message`, for a terminal or a file."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        head = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        return "\n".join([head + _one_line(record.getMessage()), *_extra(self, record)])


def _extra(fmt: logging.Formatter, record: logging.LogRecord) -> list[str]:
    text = ""
    if record.exc_info:
        text = fmt.formatException(record.exc_info)
    if record.stack_info:
        text = (text + "\n" if text else "") + fmt.formatStack(record.stack_info)
    return text.splitlines()


def under_journald(stream: TextIO) -> bool:
    """True when `stream` is the journal stream systemd set up (systemd.exec(5) JOURNAL_STREAM).

    Matching device and inode (not just the variable's presence) keeps the prefixes out of a
    file or pipe that a child of some service redirected its output to.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so calling setup() twice replaces it."""


def setup(level: str = "info", *, verbose: bool = False, stream: TextIO | None = None) -> None:
    """Send every log record (vidd's and its libraries') to `stream` (stderr by default)."""
    out = stream if stream is not None else sys.stderr
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    handler = _Handler(out)
    handler.setFormatter(JournalFormatter() if under_journald(out) else ConsoleFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    chosen = logging.DEBUG if verbose else int(getattr(logging, level.upper()))
    root.setLevel(chosen)
    for name in _QUIET:
        # A child logger's own level decides what reaches root's handler, so never below ours.
        logging.getLogger(name).setLevel(max(logging.INFO, chosen))
