"""Attempt rows in a real SQLite store: tokens kept only as sha256, a claim taken once,
heartbeats only while claimed, ends only from a live state, a fresh attempt superseding
the live one, and which running jobs a restart adopts. Also the [workers] config checks."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from datetime import timedelta

import pytest

from testkit.jobs import make_job
from vidd import config
from vidd.attempts import Attempts, State, token_hash
from vidd.job import Status, now
from vidd.store import Store


@pytest.fixture
async def store(tmp_path):
    async with Store(tmp_path / "vidd.db") as s:
        yield s


async def running_job(store: Store) -> str:
    job = await store.add(make_job(status=Status.QUEUED))
    claimed = await store.claim_next()
    assert claimed is not None and claimed.id == job.id
    return job.id


async def test_only_the_tokens_hash_is_stored(store, tmp_path):
    attempts = Attempts(store)
    job_id = await running_job(store)
    attempt, token = await attempts.new(job_id)
    assert len(token) >= 43  # 256 bits
    assert attempt.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert attempt.token_matches(token) and not attempt.token_matches(token[:-1] + "x")
    raw = sqlite3.connect(tmp_path / "vidd.db").execute("SELECT * FROM attempts").fetchall()
    assert raw and all(token not in str(row) for row in raw)
    assert attempt.number == 1 and attempt.state is State.DISPATCHED


async def test_a_claim_is_taken_once(store):
    attempts = Attempts(store)
    attempt, _ = await attempts.new(await running_job(store))
    first = await attempts.claim(attempt.id, "w1")
    assert first is not None and first.state is State.CLAIMED and first.worker == "w1"
    assert first.claimed_at is not None and first.heartbeat_at is not None
    assert await attempts.claim(attempt.id, "w2") is None
    again = await attempts.get(attempt.id)
    assert again is not None and again.worker == "w1"


async def test_heartbeats_and_ends_only_while_live(store):
    attempts = Attempts(store)
    attempt, _ = await attempts.new(await running_job(store))
    assert not await attempts.heartbeat(attempt.id)  # not claimed yet
    await attempts.claim(attempt.id, "w1")
    assert await attempts.heartbeat(attempt.id)
    assert await attempts.end(attempt.id, State.LOST, was=(State.CLAIMED,))
    assert not await attempts.heartbeat(attempt.id)
    assert not await attempts.end(attempt.id, State.DONE)  # lost is an end
    ended = await attempts.get(attempt.id)
    assert ended is not None and ended.state is State.LOST and ended.ended_at is not None


async def test_a_fresh_attempt_supersedes_the_live_one_and_counts_on(store):
    attempts = Attempts(store)
    job_id = await running_job(store)
    one, _ = await attempts.new(job_id)
    two, _ = await attempts.new(job_id)
    assert two.number == 2
    old = await attempts.get(one.id)
    assert old is not None and old.state is State.SUPERSEDED
    live = await attempts.live_of(job_id)
    assert live is not None and live.id == two.id


async def test_a_restart_adopts_only_claimed_attempts_heard_from_within_the_lease(store):
    attempts = Attempts(store)
    fresh_job, stale_job, unclaimed_job = [await running_job(store) for _ in range(3)]
    fresh, _ = await attempts.new(fresh_job)
    stale, _ = await attempts.new(stale_job)
    await attempts.new(unclaimed_job)
    await attempts.claim(fresh.id, "w1")
    await attempts.claim(stale.id, "w2")
    old = (now() - timedelta(seconds=120)).isoformat()
    await store.writer.execute(
        "UPDATE attempts SET heartbeat_at = ?, claimed_at = ? WHERE id = ?", (old, old, stale.id)
    )
    adopted = await attempts.adoptable(lease_s=60)
    assert set(adopted) == {fresh_job}
    assert await attempts.supersede_all_except(set(adopted)) == 2
    states = {a: (await attempts.get(a)).state for a in (fresh.id, stale.id)}
    assert states == {fresh.id: State.CLAIMED, stale.id: State.LOST}
    assert await attempts.live_of(unclaimed_job) is None
    assert await store.requeue_interrupted(keep=adopted) == [stale_job, unclaimed_job]
    assert (await store.get(fresh_job)).status is Status.RUNNING


async def test_the_worker_is_on_the_job_until_it_runs_again(store):
    job_id = await running_job(store)
    job = await store.set_worker(job_id, "w1")
    assert job is not None and job.worker == "w1" and job.to_json()["worker"] == "w1"
    await store.requeue(job_id)
    assert await store.set_worker(job_id, "w2") is None  # only a running job
    again = await store.claim_next()
    assert again is not None and again.worker is None


async def test_workers_seen_names_their_live_job(store):
    attempts = Attempts(store)
    a_job, b_job = await running_job(store), await running_job(store)
    a, _ = await attempts.new(a_job)
    b, _ = await attempts.new(b_job)
    await attempts.claim(a.id, "busy")
    await attempts.claim(b.id, "idle")
    await attempts.end(b.id, State.DONE, was=(State.CLAIMED,))
    seen = {name: job for name, job, _ in await attempts.workers_seen(now() - timedelta(hours=1))}
    assert seen == {"busy": a_job, "idle": None}


def test_token_hash_is_sha256():
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()


# --- [workers] in the config ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "words"),
    [
        ({"mode": "kubernetes"}, "workers.mode"),
        ({"mode": "celery", "public_url": "http://10.0.0.5:8080"}, "workers.broker_url"),
        ({"mode": "celery", "broker_url": "redis://:pw@h:6379/0"}, "workers.public_url"),
        (
            {"mode": "celery", "broker_url": "redis://:pw@h:6379/0", "public_url": "10.0.0.5"},
            "workers.public_url",
        ),
        (
            {
                "mode": "celery",
                "broker_url": "redis://:pw@h:6379/0",
                "public_url": "http://vidd.lan",
            },
            "web.allowed_hosts",
        ),
        ({"lease_s": 0.2}, "workers.lease_s"),
        ({"lease_s": 100.0, "max_encode_s": 50.0}, "workers.max_encode_s"),
        ({"max_attempts": 0}, "workers.max_attempts"),
        ({"max_attempts": 1000}, "workers.max_attempts"),
    ],
)
def test_workers_config_is_checked(make_config, workers, words):
    with pytest.raises(config.ConfigError, match=words):
        make_config(workers=workers)


def test_the_broker_url_is_never_shown(make_config):
    cfg = make_config(
        workers={
            "mode": "celery",
            "broker_url": "redis://:s3cret-pass@10.0.0.2:6379/0",
            "public_url": "http://10.0.0.5:8080",
        }
    )
    assert cfg.workers.broker_url.endswith("6379/0")
    assert "s3cret-pass" not in repr(cfg)
    with pytest.raises(config.ConfigError) as e:
        make_config(workers={"mode": "celery", "broker_url": "amqp://:s3cret@h/", "public_url": ""})
    assert "s3cret" not in str(e.value)


def test_a_public_host_name_in_allowed_hosts_is_fine(make_config):
    cfg = make_config(
        web={"allowed_hosts": ["vidd.lan"]},
        workers={
            "mode": "celery",
            "broker_url": "redis://:pw@h:6379/0",
            "public_url": "http://vidd.lan:8080",
        },
    )
    assert cfg.workers.public_url == "http://vidd.lan:8080"


def test_local_is_the_default(make_config):
    cfg = make_config()
    assert cfg.workers.mode == "local" and cfg.workers.lease_s == 60.0
    assert cfg.workers.max_attempts == 3


def test_celery_mode_without_the_extra_says_how_to_get_it(make_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)  # as if not installed
    with pytest.raises(config.ConfigError, match=r"vidd\[workers\]"):
        make_config(
            workers={
                "mode": "celery",
                "broker_url": "redis://:pw@10.0.0.2:6379/0",
                "public_url": "http://10.0.0.5:8080",
            }
        )
