"""HandBrakeCLI and ffmpeg parse untrusted media, so they run boxed (vidd/sandbox.py):
proven here on real processes, the way the encoder starts them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from vidd import children


def caps(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v, 16) for k, v in (x.split(":\t") for x in lines if x.startswith("Cap"))}


@pytest.fixture
def box(tmp_path: Path) -> children.Box:
    (tmp_path / "work").mkdir()
    (tmp_path / "source.avi").write_bytes(b"media")
    return children.Box(home=tmp_path / "work", reads=(tmp_path / "source.avi",))


async def test_a_boxed_child_cannot_read_the_config(box, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[web]\ntoken = "secret"\n')
    config.chmod(0o600)  # owned by this user: only the box stands in the way
    code, out, err = await children.run(["/bin/cat", str(config)], timeout_s=10, box=box)
    assert code != 0 and "secret" not in out
    assert "Permission denied" in err
    code, out, _ = await children.run(["/bin/cat", str(box.reads[0])], timeout_s=10, box=box)
    assert (code, out) == (0, "media")  # what it was given, it reads
    code, _, err = await children.run(
        ["/bin/cp", str(box.reads[0]), str(tmp_path / "elsewhere")], timeout_s=10, box=box
    )
    assert code != 0 and not (tmp_path / "elsewhere").exists()  # writes only in its home
    code, _, _ = await children.run(
        ["/bin/cp", str(box.reads[0]), str(box.home / "out")], timeout_s=10, box=box
    )
    assert code == 0 and (box.home / "out").read_bytes() == b"media"


async def test_a_boxed_child_has_no_capabilities_no_network_and_a_small_env(box, monkeypatch):
    monkeypatch.setenv("VIDD_TOKEN", "must not leak")
    proc = await children.spawn(["/bin/sleep", "30"], box=box)
    try:
        await asyncio.sleep(0.5)  # the launcher has exec'd sleep in the same process
        assert Path(f"/proc/{proc.pid}/exe").resolve().name == "sleep"
        got = caps(proc.pid)
        assert got["CapEff"] == got["CapPrm"] == got["CapAmb"] == got["CapInh"] == 0, got
        if os.geteuid() == 0:  # only a privileged vidd can empty the bounding set too
            assert got["CapBnd"] == 0
            mine = os.readlink("/proc/self/ns/net")
            assert os.readlink(f"/proc/{proc.pid}/ns/net") != mine  # a network of its own
        env = dict(
            x.split("=", 1)
            for x in Path(f"/proc/{proc.pid}/environ").read_text().split("\0")
            if "=" in x
        )
        assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG"}
        assert env["HOME"] == env["TMPDIR"] == str(box.home)
    finally:
        await children.stop(proc, 1.0)
