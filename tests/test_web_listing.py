"""GET /api/jobs at scale: several states at once, a name search (literal, any case, any
script), keyset paging through everything a filter matches, and `total`; against the real
app over a real SQLite file holding a few hundred jobs."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from testkit.jobs import make_job
from vidd.job import Job, JobError, Status, now
from vidd.store import MIGRATIONS, Store
from vidd.web.app import create_app
from vidd.web.keys import SERVICES
from vidd.web.page_cache import PageCache

# Names a search must take literally: FTS5 syntax, LIKE wildcards, quotes, other scripts.
ODD_NAMES = (
    'say "hi".mkv',
    "star * gazing.avi",
    "this AND that.mov",
    "NEAR(the sea).mp4",
    "col:umn ^caret -minus.avi",
    "100% _done_.mkv",
    "back\\slash.avi",
    "Über Straße.MOV",
    "über allen gipfeln.mkv",
    "東京 夜景.mp4",
    "ab.avi",
)
ENDED = (Status.DONE, Status.FAILED, Status.REJECTED, Status.CANCELLED)
COUNT = 300


def fill(count: int) -> list[Job]:
    """`count` jobs, oldest first, in every state a page shows, among them ODD_NAMES."""
    start = now() - timedelta(days=1)
    jobs = []
    for i in range(count):
        status = ENDED[i % len(ENDED)] if i % 10 else Status.QUEUED
        name = (
            ODD_NAMES[i]
            if i < len(ODD_NAMES)
            else f"{('Holiday', 'trip', 'HOLIDAY')[i % 3]} {i:04d}.mp4"
        )
        error = JobError("exit_code", "HandBrake failed") if status is Status.FAILED else None
        jobs.append(
            make_job(name=name, status=status, created_at=start + timedelta(seconds=i), error=error)
        )
    return jobs


@pytest.fixture
async def listing(aiohttp_client, make_config):
    """A client of an app whose store holds COUNT jobs, and those jobs, newest first."""
    client = await aiohttp_client(create_app(make_config(watch={"enabled": False})))
    svc = client.app[SERVICES]
    # The queued jobs stay queued (they have no files): the pool takes none of them.
    await svc.pool.drain(0)
    jobs = fill(COUNT)
    # Before any request: add_many tells no listener, so no page may be cached yet.
    await svc.store.add_many(jobs)
    return client, jobs[::-1]


async def get(client, **query: str | int) -> dict:
    resp = await client.get("/api/jobs?" + urlencode(query))
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def every_page(client, **query: str | int) -> tuple[list[dict], list[int]]:
    """All jobs a filter matches, following next_before; and each page's total."""
    seen: list[dict] = []
    totals: list[int] = []
    before: str | None = None
    while True:
        page = await get(client, **query, **({"before": before} if before else {}))
        seen += page["jobs"]
        totals.append(page["total"])
        before = page["next_before"]
        if before is None:
            return seen, totals
        assert len(seen) <= COUNT, "paging does not end"


def matching(jobs: list[Job], text: str = "", statuses: tuple[Status, ...] = ()) -> list[str]:
    """What a search should find: ids, newest first."""
    return [
        j.id
        for j in jobs
        if text.lower() in j.name.lower() and (not statuses or j.status in statuses)
    ]


async def test_several_states_at_once(listing):
    client, jobs = listing
    wanted = (Status.FAILED, Status.REJECTED)
    page = await get(client, status="failed,rejected", limit=500)
    assert [j["id"] for j in page["jobs"]] == matching(jobs, statuses=wanted)
    assert page["total"] == len(page["jobs"]) > 0
    assert page["next_before"] is None
    # The same as the parameter repeated, and order and spaces do not matter.
    resp = await client.get("/api/jobs?status=rejected&status=failed&limit=500")
    assert (await resp.json()) == page
    assert (await get(client, status=" rejected , failed", limit=500)) == page


async def test_total_counts_every_match_not_the_page(listing):
    client, jobs = listing
    page = await get(client, limit=5)
    assert len(page["jobs"]) == 5 and page["total"] == len(jobs)
    for status in Status:
        assert (await get(client, status=str(status), limit=1))["total"] == len(
            matching(jobs, statuses=(status,))
        )


SEARCHES = (
    "holiday",  # many, in three cases
    "HOLIDAY 012",
    "trip 0",
    '"hi"',
    '"h',  # short: no trigram
    "* g",
    "r *",
    "AND",
    "NEAR(",
    "^caret -minus",
    "col:",
    "0%",
    "% _",
    "_done_",
    "k\\",
    "über",
    "ÜBER",
    "üb",  # short: no trigram
    "ÜB",
    "straße",
    "東京",
    "京 夜",
    "ab",
    "zz",  # nothing
    "no such name at all",
)


async def test_a_search_is_literal_in_any_case(listing):
    client, jobs = listing
    for text in SEARCHES:
        expected = matching(jobs, text.strip())
        found, totals = await every_page(client, q=text, limit=50)
        assert [j["id"] for j in found] == expected, text
        assert set(totals) == {len(expected)}, text


async def test_paging_through_a_search_within_states(listing):
    client, jobs = listing
    wanted = (Status.DONE, Status.FAILED, Status.QUEUED)
    expected = matching(jobs, "holiday", wanted)
    assert len(expected) > 3 * 7  # several pages
    found, totals = await every_page(client, q="Holiday", status="done,failed,queued", limit=7)
    ids = [j["id"] for j in found]
    assert ids == expected  # newest first, none twice, none left out
    assert all(j["status"] in wanted and "holiday" in j["name"].lower() for j in found)
    assert set(totals) == {len(expected)}
    # A short search pages the same way.
    found, totals = await every_page(client, q="ip", status="cancelled", limit=3)
    assert [j["id"] for j in found] == matching(jobs, "ip", (Status.CANCELLED,))
    assert set(totals) == {len(found)} and len(found) > 3


async def test_queue_positions_in_a_search(listing):
    """A search skips queued jobs, but each one shows its own place in the whole queue."""
    client, jobs = listing
    queued = matching(jobs[::-1], statuses=(Status.QUEUED,))  # oldest first: the queue
    page = await get(client, q="trip", status="queued", limit=500)
    assert page["jobs"]
    for job in page["jobs"]:
        assert job["queue_position"] == queued.index(job["id"])


async def test_total_follows_changes(listing):
    client, jobs = listing
    store = client.app[SERVICES].store
    before = (await get(client, q="holiday", status="cancelled"))["total"]
    queued = next(j for j in jobs if j.status is Status.QUEUED and "oliday" in j.name)
    await store.cancel(queued.id, was=Status.QUEUED)
    assert (await get(client, q="holiday", status="cancelled"))["total"] == before + 1
    await store.delete(queued.id)
    assert (await get(client, q="holiday", status="cancelled"))["total"] == before
    added = await store.add(make_job(name="one more holiday.avi", status=Status.QUEUED))
    page = await get(client, q="MORE HOLI")
    assert [j["id"] for j in page["jobs"]] == [added.id] and page["total"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "status=",
        "status=done,,failed",
        "status=done,",
        "q=a",
        "q=%20a%20",
        "q=" + "x" * 101,
        "q=ab%00cd",
        "q=tab%09here",
        "q=one&q=two",
        "before=nosuchjob",
        "before=../../etc",
        "limit=0",
        "limit=501",
        "limit=ten",
    ],
)
async def test_bad_input_is_400(listing, query):
    client, _ = listing
    resp = await client.get(f"/api/jobs?{query}")
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "bad_request" and body["error"]["message"]


async def test_an_empty_search_is_no_search(listing):
    client, jobs = listing
    for text in ("", "   "):
        assert (await get(client, q=text, limit=1))["total"] == len(jobs)


async def test_a_database_from_before_the_index_is_searchable(tmp_path):
    """Version 3 had no name index: the migration builds it from the jobs already there."""
    db = tmp_path / "vidd.db"
    with sqlite3.connect(db) as conn:
        for version, script in enumerate(MIGRATIONS[:3], start=1):
            conn.executescript(f"{script}; PRAGMA user_version = {version};")
        conn.execute(
            "INSERT INTO jobs (id, name, status, profile, origin, source_ext, created_at) "
            "VALUES ('oldjob', 'Old Holiday.avi', 'queued', 'web', 'inbox', '.avi', ?)",
            (now().isoformat(),),
        )
    conn.close()
    async with Store(db) as store:
        assert [j.id for j in await store.find_jobs(name="old holi")] == ["oldjob"]
        assert await store.count_jobs(name="HOLIDAY") == 1
        await store.delete("oldjob")  # the triggers keep the index in step from now on
        assert await store.count_jobs(name="HOLIDAY") == 0


async def test_status_counts_every_state(listing):
    """/api/status names every state, failures and rejections included, and agrees with
    the list's totals."""
    client, jobs = listing
    counts = (await (await client.get("/api/status")).json())["jobs"]
    assert set(counts) == {str(s) for s in Status}
    for status in Status:
        assert counts[str(status)] == len(matching(jobs, statuses=(status,))), status
    assert counts["failed"] > 0 and counts["rejected"] > 0 and counts["cancelled"] > 0
    assert sum(counts.values()) == (await get(client, limit=1))["total"] == len(jobs)
    store = client.app[SERVICES].store
    failed = next(j for j in jobs if j.status is Status.FAILED)
    await store.retry(failed.id)
    after = (await (await client.get("/api/status")).json())["jobs"]
    assert after["failed"] == counts["failed"] - 1 and after["queued"] == counts["queued"] + 1


def test_progress_keeps_totals_but_not_pages():
    """Progress changes a page's JSON but never how many jobs match; anything else may."""
    cache = PageCache()
    cache.put("page", b"{}", cache.generation)
    cache.put_total("filter", 7, cache.counted)
    job = make_job()
    cache.job_changed(job, progress_only=True)
    assert cache.get("page") is None and cache.total("filter") == 7
    counted = cache.counted
    cache.job_changed(job, progress_only=False)
    assert cache.total("filter") is None
    cache.put_total("filter", 8, counted)  # counted across the change: not kept
    assert cache.total("filter") is None
    cache.put_total("filter", 8, cache.counted)
    cache.job_deleted(job.id)
    assert cache.total("filter") is None


async def test_the_index_keeps_up_with_every_change(listing):
    """States change, jobs come and go: the name index (which holds states too) still
    agrees with the jobs table, by FTS5's own check and by what searches find."""
    client, jobs = listing
    store = client.app[SERVICES].store
    for job in jobs:
        if job.status is Status.FAILED:
            await store.retry(job.id)
        elif job.status is Status.QUEUED and "trip" in job.name:
            await store.cancel(job.id, was=Status.QUEUED)
        elif job.status is Status.REJECTED and "HOLIDAY" in job.name:
            await store.delete(job.id)
    with sqlite3.connect(store.path) as conn:
        # rank 1: compare the index with the content it was built from (the jobs table).
        conn.execute("INSERT INTO job_names (job_names, rank) VALUES ('integrity-check', 1)")
        now_jobs = {
            row[0]: (row[1], Status(row[2]))
            for row in conn.execute("SELECT id, name, status FROM jobs ORDER BY seq DESC")
        }
    conn.close()
    for text in ("holiday", "trip", "HOLIDAY 00", "ip"):
        for wanted in ((Status.QUEUED,), (Status.CANCELLED, Status.REJECTED), ()):
            expected = [
                i
                for i, (name, status) in now_jobs.items()
                if text.lower() in name.lower() and (not wanted or status in wanted)
            ]
            query = {"q": text, "limit": 500}
            if wanted:
                query["status"] = ",".join(str(s) for s in wanted)
            page = await get(client, **query)
            assert [j["id"] for j in page["jobs"]] == expected, (text, wanted)
            assert page["total"] == len(expected), (text, wanted)
