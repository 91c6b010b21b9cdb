"""A real redis-server (Debian's) for the remote-worker tests: its own port, password, folder
and append-only file, no system config; stopped, killed and started again on the same port
with the same data for the broker-down cases.

Never the system one on 6379: each RedisServer picks a free port on its bind address.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import BinaryIO, Self

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server in `folder` (its config, append-only file and log live there),
    listening on `host`:`port` (a free one unless given) with a random password.

    `start()` returns once it answers PING; `stop()` shuts it down (SIGTERM, which writes
    the append-only file), `kill()` is SIGKILL; `start()` again serves the same port and data.
    """

    def __init__(self, folder: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.folder = folder
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.password = secrets.token_hex(16)
        self.log_path = folder / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL Celery and redis-py take: redis://:PASSWORD@HOST:PORT/0."""
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("this redis-server has not been started")
        return self._proc.pid

    def config_text(self) -> str:
        """The whole config, written to a file so the password is not in `ps`."""
        return "\n".join(
            [
                f"bind {self.host}",
                f"port {self.port}",
                "protected-mode yes",
                f'requirepass "{self.password}"',
                f'dir "{self.folder}"',
                "appendonly yes",
                'appendfilename "appendonly.aof"',
                'dbfilename "dump.rdb"',
                'save ""',
                "daemonize no",
                'logfile ""',
                "loglevel notice",
                "databases 4",
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> Self:
        """Start it (again: same port, same data) and wait until it answers PING."""
        if self.running:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.write_text(self.config_text(), encoding="utf-8")
        conf.chmod(0o600)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [REDIS_SERVER, str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                start_new_session=True,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with {self._proc.returncode}:\n{self.log()}"
                )
            try:
                if self.command("PING", timeout=0.5) == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer within {timeout} s:\n{self.log()}")

    def command(self, *words: str, timeout: float = 2.0) -> str | list[str] | None:
        """Send one command (after AUTH) over a plain socket and return its reply: a string,
        a list (an array), or None (a nil). Raises OSError when the server does not answer,
        ConnectionError when it answers with an error."""
        request = b""
        for cmd in (("AUTH", self.password), words):
            request += f"*{len(cmd)}\r\n".encode()
            for word in cmd:
                data = word.encode()
                request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(request)
            reader = s.makefile("rb")
            if _reply(reader) != "OK":
                raise ConnectionError("redis refused AUTH")
            return _reply(reader)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut it down cleanly (SIGTERM); SIGKILL if it takes longer than `timeout`."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the broker is gone at once, as when its host dies."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 10.0) -> Self:
        self.stop()
        return self.start(timeout)

    def _end(self, sig: int, timeout: float) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reply(reader: BinaryIO) -> str | list[str] | None:
    """One RESP reply from `reader` (the few types these tests meet)."""
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection")
    kind, body = line[:1], line[1:-2].decode(errors="replace")
    if kind in (b"+", b":"):
        return body
    if kind == b"-":
        raise ConnectionError(f"redis: {body}")
    if kind == b"$":
        if int(body) < 0:
            return None
        data = reader.read(int(body) + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        items = [_reply(reader) for _ in range(max(int(body), 0))]
        return [str(item) for item in items]
    raise ConnectionError(f"redis: unexpected reply {line!r}")
