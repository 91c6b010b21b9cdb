"""What the `vidd` command shows on a terminal: one progress line per file, redrawn in
place (several files at once), plain milestone lines when the output is not a terminal,
and text from outside made harmless to print."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any, TextIO

REDRAW_S = 0.1  # at most 10 redraws a second
NAME_CHARS = 24


def clean(text: str) -> str:
    """Text from outside (a file name, a message) with control characters made visible, so it
    can't move the cursor or recolour the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns


def duration(s: float) -> str:
    s = int(s)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{s:02d}s"
    return f"{minutes}m{s:02d}s" if minutes else f"{s}s"


class Board:
    """The progress lines of several files, shared by the threads that send them.

    On a terminal each file owns one line, redrawn in place (the cursor goes back up to
    the board's first line and rewrites them all). Elsewhere (a pipe, a log) each change
    of phase is one line of its own, never a carriage return.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._lines: list[Progress] = []
        self._drawn = 0  # lines of the board on the screen
        self._drawn_at = 0.0
        self._lock = threading.Lock()

    def line(self, name: str) -> Progress:
        with self._lock:
            progress = Progress(self, clean(name))
            self._lines.append(progress)
        return progress

    def changed(self, *, force: bool = False) -> None:
        if not self.tty:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._drawn_at < REDRAW_S:
                return
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        columns = shutil.get_terminal_size().columns
        out = [f"\x1b[{self._drawn}A"] if self._drawn else []
        for progress in self._lines:
            out.append("\r\x1b[K" + progress.text(columns)[: columns - 1] + "\n")
        self._drawn = len(self._lines)
        self.stream.write("".join(out))
        self.stream.flush()

    def above(self, text: str, stream: TextIO) -> None:
        """A line of output (a result on stdout) printed above the board, which is then
        drawn again below it: on one terminal, the board's lines would otherwise be
        counted wrong and the result overwritten."""
        with self._lock:
            if self.tty and self._drawn:
                self.stream.write(f"\x1b[{self._drawn}A\r\x1b[J")  # up, and clear below
                self.stream.flush()
                self._drawn = 0
            stream.write(text + "\n")
            stream.flush()
            if self.tty:
                self._draw(time.monotonic())

    def say(self, text: str) -> None:
        """A milestone line (not on a terminal, where the board shows it)."""
        if self.tty:
            return
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.changed(force=True)

    def stop(self) -> None:
        """Ctrl-C: every line's work stops at its next step (see Progress.check)."""
        for progress in self._lines:
            progress.stopped = True


class Stopped(Exception):
    """The command was interrupted; the thread working on a line gives up."""


class Progress:
    """One file's line: its upload, then its conversion."""

    def __init__(self, board: Board, name: str) -> None:
        self.board = board
        self.name = name
        self.phase = "waiting"
        self.fraction = 0.0
        self.detail = ""
        self.stopped = False
        self._last_status: str | None = None

    def check(self) -> None:
        if self.stopped:
            raise Stopped(self.name)

    def text(self, columns: int) -> str:
        width = max(10, min(30, columns - 70))
        filled = int(max(0.0, min(1.0, self.fraction)) * width)
        bar = "#" * filled + "-" * (width - filled)
        name = f"{self.name[:NAME_CHARS]:<{NAME_CHARS}}"
        return f"{name} {self.phase:<8} [{bar}] {self.fraction * 100:5.1f}%  {self.detail}"

    def upload(self, sent: int, total: int) -> None:
        self.check()
        self.phase = "upload"
        self.fraction = sent / total if total else 1.0
        self.detail = f"{size(sent)} of {size(total)}"
        self.board.changed(force=sent >= total)

    def uploaded(self, job: dict[str, Any]) -> None:
        self.board.say(f"{self.name}: uploaded as {clean(str(job.get('id')))}")

    def convert(self, job: dict[str, Any]) -> None:
        status = str(job.get("status"))
        forced = status != self._last_status
        if forced:
            self.board.say(f"{self.name}: {clean(status)}")
        self._last_status = status
        self.phase = "convert"
        detail = clean(status)
        if status == "queued" and job.get("queue_position") is not None:
            detail = f"queued, {job['queue_position']} ahead"  # jobs ahead in the queue
        elif status == "running":
            fps, eta = job.get("fps"), job.get("eta_s")
            detail = f"{fps:.0f} fps" if isinstance(fps, int | float) else "running"
            if isinstance(eta, int | float) and eta >= 0:
                detail += f", ETA {duration(eta)}"
        self.detail = detail
        self.fraction = 1.0 if status == "done" else float(job.get("progress") or 0)
        self.board.changed(force=forced)

    def ended(self, phase: str, detail: str) -> None:
        """The file's outcome, shown on its line (its own line on stdout says the same)."""
        self.phase = phase
        self.detail = clean(detail)
        self.board.changed(force=True)
