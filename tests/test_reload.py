"""SIGHUP on a running vidd: the config file is read again, what can change safely changes
(max_parallel, the token, the log level, the profiles), other changes are named as needing
a restart, and a broken file leaves the running config in place."""

from __future__ import annotations

import http.client
import shutil
import signal
import urllib.error
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path

from testkit.daemon import Daemon, get_json, wait_for, write_config
from vidd import config as config_mod
from vidd.client import Client
from vidd.reload import RELOADABLE, changed_keys, merged

FAKE = Path(__file__).parent / "fake_handbrake.py"
TOKEN = "a" * 64


def fake_handbrake(folder: Path) -> str:
    path = folder / "fake_handbrake.py"
    shutil.copy(FAKE, path)
    path.chmod(0o755)
    return str(path)


def stalling(folder: Path, **encode: object) -> dict[str, object]:
    """Encodes that run until cancelled (the fake's stall mode)."""
    return {
        "handbrake": fake_handbrake(folder),
        "stall_timeout_s": 120.0,
        "child_env": ["FAKE_HB_MODE"],
        **encode,
    }


def status(d: Daemon, token: str = "") -> int:
    return _status_with(d, {"Authorization": f"Bearer {token}"} if token else {})


def _status_with(d: Daemon, headers: dict[str, str]) -> int:
    req = urllib.request.Request(d.url + "/api/status", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def summaries(d: Daemon) -> list[str]:
    """The reload's one line each time: it names the file (other lines may come first)."""
    return [x for x in d.log().splitlines() if "reload: " in x and "config.toml" in x]


def hangup(d: Daemon, expect: str) -> None:
    """SIGHUP, then wait for the reload's line in the log."""
    seen = len(summaries(d))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(summaries(d)) > seen, timeout=15)
    line = summaries(d)[-1]
    assert expect in line, line


def test_max_parallel_and_token_change_on_hangup(daemon_factory, clip, tmp_path):
    encode = stalling(tmp_path, max_parallel=1)
    d = daemon_factory(
        env={"FAKE_HB_MODE": "stall"}, encode=encode, daemon={"shutdown_timeout_s": 1.0}
    )
    client = Client(d.url)
    ids = [client.upload(clip)["id"], client.upload(clip)["id"]]

    def states() -> list[str]:
        return [client.job(i)["status"] for i in ids]

    wait_for(lambda: sorted(states()) == ["queued", "running"], timeout=30)
    assert get_json(d.url + "/api/status")["workers"]["max"] == 1

    write_config(
        tmp_path,
        web={"port": d.config.web.port, "token": TOKEN},
        encode={**encode, "max_parallel": 2},
        daemon={"shutdown_timeout_s": 1.0},
    )
    hangup(d, "applied encode.max_parallel = 2, web.token")
    client = Client(d.url, TOKEN)
    wait_for(lambda: states() == ["running", "running"], timeout=30)  # the second one started
    assert status(d) == 401  # the new token is required
    assert status(d, TOKEN) == 200
    assert get_json_with(d, "/api/status")["workers"] == {
        "max": 2,
        "busy": 2,
        "mode": "local",
        "broker": None,
    }


def get_json_with(d: Daemon, path: str) -> dict[str, object]:
    return Client(d.url, TOKEN).request("GET", path)  # type: ignore[no-any-return]


def test_broken_config_is_logged_and_the_running_one_kept(daemon_factory, tmp_path):
    d = daemon_factory(daemon={"shutdown_timeout_s": 1.0})
    path = d.config_path
    good = path.read_text()
    path.write_text(good + "\n[encode\nmax_parallel = 9\n")
    hangup(d, "not valid TOML")
    assert "the running config is kept" in d.log()
    assert d.proc.poll() is None  # still running, still answering
    assert get_json(d.url + "/api/status")["workers"]["max"] == 2

    # a restart-only key is named, the reloadable one beside it applied
    write_config(
        tmp_path,
        web={"port": d.config.web.port},
        storage={"keep_sources": False},
        encode={"max_parallel": 3},
        daemon={"shutdown_timeout_s": 1.0},
    )
    hangup(d, "applied encode.max_parallel = 3; needs a restart: storage.keep_sources")
    assert get_json(d.url + "/api/status")["workers"]["max"] == 3

    # the restart-only change is still pending; nothing else changed
    hangup(d, "config.toml: needs a restart: storage.keep_sources")


def test_new_profiles_and_log_level_apply(daemon_factory, clip, tmp_path):
    d = daemon_factory(daemon={"shutdown_timeout_s": 1.0})
    assert "fast" not in get_json(d.url + "/api/status")["profiles"]
    write_config(
        tmp_path,
        '[encode.profiles.fast]\nargs = ["-e", "x264", "-q", "30"]\n'
        '[encode.profiles.web]\nargs = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]\n',
        web={"port": d.config.web.port},
        daemon={"shutdown_timeout_s": 1.0, "log_level": "warning"},
    )
    hangup(d, "applied encode.profiles, daemon.log_level = 'warning'")
    assert "profile(s) web-full-rate removed" in d.log()
    assert "fast" in get_json(d.url + "/api/status")["profiles"]
    job = Client(d.url).upload(clip, "fast")
    assert job["profile"] == "fast"


def test_changed_keys_and_merge(make_config):
    old = make_config()
    new = make_config(web={"token": TOKEN, "port": old.web.port + 1}, encode={"max_parallel": 5})
    keys = changed_keys(old, new)
    assert keys == ["encode.max_parallel", "web.port", "web.token"]
    live = merged(old, new)
    assert live.encode.max_parallel == 5 and live.web.token == TOKEN
    assert live.web.port == old.web.port  # needs a restart: the running value stays
    assert set(changed_keys(old, live)) <= set(RELOADABLE)
    assert isinstance(live, config_mod.Config)


def login(d: Daemon, token: str) -> str:
    """POST the login form; the session cookie it sets ("" when refused)."""
    conn = http.client.HTTPConnection(d.config.web.host, d.config.web.port, timeout=10)
    body = urllib.parse.urlencode({"token": token})
    conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    cookie = SimpleCookie(resp.getheader("Set-Cookie") or "")
    return cookie["vidd_session"].value if "vidd_session" in cookie else ""


def with_cookie(d: Daemon, session: str) -> int:
    return _status_with(d, {"Cookie": f"vidd_session={session}"})


def test_a_new_token_ends_the_old_sessions(daemon_factory, tmp_path):
    old, new = "b" * 64, "c" * 64
    d = daemon_factory(web={"token": old}, daemon={"shutdown_timeout_s": 1.0})
    session = login(d, old)
    assert session and with_cookie(d, session) == 200

    write_config(
        tmp_path, web={"port": d.config.web.port, "token": new}, daemon={"shutdown_timeout_s": 1.0}
    )
    hangup(d, "applied web.token")
    assert "1 browser session(s) ended" in d.log()
    assert with_cookie(d, session) == 401  # logged in with the old token: no more
    assert status(d, new) == 200
    fresh = login(d, new)  # the login form takes the new token
    assert fresh and with_cookie(d, fresh) == 200
    assert status(d, old) == 401  # (last: a wrong token starts a backoff)
