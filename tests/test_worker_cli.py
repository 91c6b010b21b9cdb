"""`vidd worker`'s command line (worker_cli.py): what it needs before it starts, and the
words it says when something is missing. A running worker is test_worker.py's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vidd import cli

ROOT = Path(__file__).resolve().parent.parent
BROKER = "redis://:s3cret-password@127.0.0.1:9/0"


def vidd_worker(*args: str, env: dict[str, str] | None = None, prelude: str = ""):
    """Run `vidd worker ARGS` in a fresh interpreter; `prelude` runs first (in it)."""
    code = f"{prelude}\nimport sys\nfrom vidd.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_without_a_broker_it_says_how_to_give_one(capsys, monkeypatch):
    monkeypatch.delenv("VIDD_BROKER_URL", raising=False)
    assert cli.main(["worker"]) == cli.USAGE
    err = capsys.readouterr().err
    assert "--broker" in err and "VIDD_BROKER_URL" in err and "redis://" in err


def test_a_broker_that_is_not_redis_is_refused_without_echoing_it(capsys, monkeypatch):
    monkeypatch.setenv("VIDD_BROKER_URL", "amqp://user:s3cret-password@host//")
    assert cli.main(["worker"]) == cli.USAGE
    assert "s3cret-password" not in capsys.readouterr().err


def test_a_missing_handbrake_is_named(capsys, tmp_path):
    code = cli.main(["worker", "--broker", BROKER, "--handbrake", str(tmp_path / "nope")])
    assert code == cli.USAGE
    assert "HandBrakeCLI" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--concurrency", "0"],
        ["--concurrency", "65"],
        ["--max-encode-s", "-1"],
        ["--name", ""],  # the front refuses a claim without a name: nothing would run
        ["--name", "  "],
        ["--name", "x" * 101],
        ["--name", "a\nb"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(args, capsys):
    assert cli.main(["worker", "--broker", BROKER, *args]) == cli.USAGE
    assert "expected" in capsys.readouterr().err


def test_without_the_workers_extra_it_says_what_to_install(tmp_path):
    # `celery` unimportable, as in a default install without vidd[workers].
    r = vidd_worker(
        "--work-dir",
        str(tmp_path / "work"),
        env={"VIDD_BROKER_URL": BROKER},
        prelude="import sys; sys.modules['celery'] = None",
    )
    assert r.returncode == 2, r.stderr
    assert "pip install 'vidd[workers]'" in r.stderr
    assert "Traceback" not in r.stderr and "s3cret-password" not in r.stderr + r.stdout


def test_the_help_names_the_environment_and_the_stop(capsys):
    assert cli.main(["worker", "--help"]) == 0
    out = capsys.readouterr().out
    assert "VIDD_BROKER_URL" in out and "SIGTERM" in out and "--work-dir" in out


def test_a_work_folder_is_one_workers_own_and_its_leftovers_go(tmp_path, capsys):
    import os

    from vidd.worker import take_work_dir

    work = tmp_path / "work"
    (work / "attempt-abc" / "tmp").mkdir(parents=True)  # what a killed run left
    (work / "keep.txt").write_text("not an attempt")
    fd, removed = take_work_dir(work)
    try:
        assert removed == 1 and not (work / "attempt-abc").exists()
        assert (work / "keep.txt").exists()
        # A second worker on the same folder is refused, before it touches anything.
        assert cli.main(["worker", "--broker", BROKER, "--work-dir", str(work)]) == cli.USAGE
        assert f"another vidd worker uses {work}" in capsys.readouterr().err
        assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]  # no lock file
    finally:
        os.close(fd)
    fd, removed = take_work_dir(work)  # free again once the first one is gone
    os.close(fd)
    assert removed == 0
