"""Remote encodes on one machine, for real: a redis-server and a vidd front on a bridge
(testkit/netns.py), and `vidd worker` processes each on a simulated host of its own that
cannot see the front's folder. Helpers wait on jobs and attempts and find the HandBrakeCLI
a host runs.

    with Cluster(tmp_path, workers=2, lease_s=4.0) as cluster:
        job = cluster.upload(clip)
        cluster.wait_job(job["id"], "done")
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from testkit.browser import daemon_env
from testkit.daemon import TEST_CONFIG, Daemon, write_config
from testkit.netns import Host, LocalHost, LocalNetwork, Network, unavailable
from testkit.redis import RedisServer, free_port
from vidd.client import Client

HANDBRAKE = "HandBrakeCLI"
ENDED = ("done", "failed", "cancelled", "rejected")


def require_hosts() -> None:
    """Skip the test, with the reason, where simulated hosts cannot be made."""
    if (why := unavailable()) is not None:
        import pytest  # the tests' only: the bench runs without namespaces

        pytest.skip(f"no simulated worker hosts: {why}")


@dataclass
class Worker:
    """One `vidd worker` on its own host, with its work folder and log."""

    name: str
    host: Host | LocalHost
    work_dir: Path
    log_path: Path
    args: list[str]
    env: dict[str, str]
    hide: tuple[Path, ...]
    proc: Any = None

    def start(self) -> Self:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = self.host.popen(
                self.args, hide=self.hide, env=self.env, log=log, cwd=self.work_dir
            )
        return self

    def kill(self) -> None:
        """Every process of the host, SIGKILL."""
        self.host.kill_all()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def handbrake_pids(self) -> list[int]:
        """The HandBrakeCLI processes running on this worker's host now."""
        return self.host.pids_named(HANDBRAKE)


class Cluster:
    """A front (vidd serve, workers.mode = "celery") and Redis on a bridge, and `workers`
    hosts each running `vidd worker`. The front's folder is hidden from every host.

    `front_sections` go over the front's config (a section name to keys); `worker_env`
    is added to each worker's environment; `handbrake` is the workers' HandBrakeCLI;
    `front_text` is TOML added to the front's config (tables such as profiles).
    `isolated=False` runs the workers as plain processes on 127.0.0.1 instead (no root
    needed, no partition, the front's folder not hidden): the bench's set-up.
    """

    def __init__(
        self,
        folder: Path,
        *,
        workers: int = 2,
        lease_s: float = 4.0,
        max_attempts: int = 3,
        front_sections: Mapping[str, Mapping[str, Any]] | None = None,
        worker_env: Mapping[str, str] | None = None,
        handbrake: str | None = None,
        isolated: bool = True,
        front_text: str = "",
    ) -> None:
        self.folder = folder
        self.front_dir = folder / "front"
        self.token = secrets.token_hex(32)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.worker_count = workers
        self.front_sections = {k: dict(v) for k, v in (front_sections or {}).items()}
        self.worker_env = dict(worker_env or {})
        self.handbrake = handbrake
        self.front_text = front_text
        self.isolated = isolated
        self.network: Network | LocalNetwork = Network() if isolated else LocalNetwork()
        self.redis: RedisServer | None = None
        self.front: Daemon | None = None
        self.config_path: Path | None = None
        self.workers: dict[str, Worker] = {}
        self.fronts: list[Daemon] = []

    # -- bring-up and tear-down ------------------------------------------------------------

    def up(self) -> Self:
        if self.isolated:
            require_hosts()
        self.network.up()
        self.redis = RedisServer(self.folder / "redis", host=self.network.ip).start()
        self.config_path = self.write_front_config()
        # The workers need only Redis to start: they boot while the front does.
        for i in range(1, self.worker_count + 1):
            self.add_worker(f"w{i}")
        self.start_front()
        return self

    def write_front_config(self) -> Path:
        assert self.redis is not None
        ip = self.network.ip
        port = free_port(ip)
        sections: dict[str, dict[str, Any]] = {
            "web": {"host": ip, "port": port, "token": self.token},
            "encode": {"max_parallel": max(1, self.worker_count)},
            "workers": {
                "mode": "celery",
                "broker_url": self.redis.url,
                "public_url": f"http://{ip}:{port}",
                "lease_s": self.lease_s,
                "max_attempts": self.max_attempts,
            },
        }
        for name, keys in self.front_sections.items():
            sections.setdefault(name, {}).update(keys)
        return write_config(self.front_dir, self.front_text, defaults=TEST_CONFIG, **sections)

    def start_front(self, timeout: float = 30.0) -> Daemon:
        """Start the front (again, after stop_front: same config, same data and port)."""
        assert self.config_path is not None
        self.front = Daemon(self.config_path, daemon_env())
        self.fronts.append(self.front)
        self.front.start(timeout)
        return self.front

    def stop_front(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the front with `sig` (SIGKILL: a crash); its exit code."""
        assert self.front is not None
        return self.front.stop(sig)

    def add_worker(self, name: str, *, start: bool = True) -> Worker:
        """A new host on the bridge running `vidd worker --name NAME` (the broker URL in
        its environment, so the password is not in `ps`)."""
        assert self.redis is not None
        host = self.network.add_host(name)
        work_dir = self.folder / "hosts" / name
        args = [sys.executable, "-m", "vidd", "worker", "--name", name, "--work-dir", str(work_dir)]
        if self.handbrake:
            args += ["--handbrake", self.handbrake]
        env = {**os.environ, **daemon_env(), "VIDD_BROKER_URL": self.redis.url, **self.worker_env}
        worker = Worker(
            name=name,
            host=host,
            work_dir=work_dir,
            log_path=self.folder / f"worker-{name}.log",
            args=args,
            env=env,
            hide=(self.front_dir,) if self.isolated else (),
        )
        self.workers[name] = worker
        return worker.start() if start else worker

    def close(self) -> None:
        # The hosts first, at once (SIGKILL: a clean stop proves nothing here and costs
        # seconds), then the front, then Redis; the network goes whatever failed before.
        try:
            for worker in self.workers.values():
                with contextlib.suppress(Exception):
                    worker.kill()
            for front in self.fronts:
                with contextlib.suppress(Exception):
                    front.stop()
            if self.redis is not None:
                self.redis.stop()
        finally:
            self.network.close()

    def __enter__(self) -> Self:
        try:
            return self.up()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- talking to the front ----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.front is not None
        return self.front.url

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.url, self.token, timeout=timeout)

    def upload(self, path: Path, profile: str | None = None) -> dict[str, Any]:
        return self.client().upload(path, profile)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client().job(job_id)

    def wait_job(
        self,
        job_id: str,
        predicate: str | Callable[[dict[str, Any]], bool] = "done",
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Poll the job until `predicate` holds (a status name, or a test of its JSON);
        fails early, with the logs, if it ends otherwise."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                job = self.job(job_id)
                if predicate(job) if callable(predicate) else job["status"] == predicate:
                    return job
                if isinstance(predicate, str) and job["status"] in ENDED:
                    break
            time.sleep(0.1)
        raise AssertionError(
            f"job {job_id} is {job.get('status')!r}, not {predicate!r}:\n{job}\n{self.logs()}"
        )

    def wait_running_on(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Until the job runs on a worker and has reported progress; its JSON."""
        return self.wait_job(
            job_id,
            lambda j: j["status"] == "running" and bool(j.get("worker")) and j["progress"] > 0,
            timeout,
        )

    def wait_workers_ready(self, timeout: float = 60.0) -> None:
        """Until every worker's Celery consumer waits on the queue: Redis has a connection
        blocked in BRPOP (the consumer's poll) from each host, one per worker where hosts
        share an address (the local set-up)."""
        assert self.redis is not None

        def ready() -> bool:
            clients = str(self.redis.command("CLIENT", "LIST"))  # type: ignore[union-attr]
            polling = Counter(
                line.split(" addr=", 1)[1].split(":", 1)[0]
                for line in clients.splitlines()
                if " addr=" in line and "cmd=brpop" in line
            )
            wanted = Counter(w.host.ip for w in self.workers.values() if w.proc is not None)
            return all(polling[ip] >= n for ip, n in wanted.items())

        deadline = time.monotonic() + timeout
        while not ready():
            for w in self.workers.values():
                if w.proc is not None and w.proc.poll() is not None:
                    raise AssertionError(f"worker {w.name} exited:\n{w.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not polling the queue:\n{self.logs()}")
            time.sleep(0.1)

    def attempts(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The front's attempt rows (read-only), oldest first."""
        assert self.front is not None
        uri = f"file:{self.front.config.storage.db_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            where, params = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
            rows = db.execute(
                f"SELECT * FROM attempts {where} ORDER BY dispatched_at, number",
                params,
            ).fetchall()
        return [dict(r) for r in rows]

    def unacked_messages(self) -> list[dict[str, Any]]:
        """The vidd messages Redis holds as delivered but not acked (a running task's, with
        acks_late): each one's kwargs (attempt, token, front, args), as the worker got them.
        Read from kombu's `unacked` hash: [payload, exchange, routing key] per delivery."""
        assert self.redis is not None
        raw = self.redis.command("HGETALL", "unacked")
        values = raw[1::2] if isinstance(raw, list) else []
        messages = []
        for value in values:
            payload = json.loads(value)[0]
            body = payload["body"]
            if payload["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            _args, kwargs, _embed = json.loads(body)
            messages.append(kwargs)
        return messages

    def logs(self, lines: int = 40) -> str:
        parts = []
        if self.front is not None:
            parts.append("--- front ---\n" + self.front.log_tail(lines))
        for w in self.workers.values():
            parts.append(f"--- worker {w.name} ---\n" + "\n".join(w.log().splitlines()[-lines:]))
        return "\n".join(parts)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "") -> float:
    """Poll `predicate` every 20 ms until it is truthy; the seconds it took, or fail."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what or predicate}")
        time.sleep(0.02)
    return time.monotonic() - started
