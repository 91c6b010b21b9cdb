"""The job-list page cache: built once per change, never served stale."""

from __future__ import annotations

from testkit.jobs import add_rejected
from vidd.web.app import create_app
from vidd.web.keys import PAGES
from vidd.web.page_cache import PageCache


def test_a_page_built_across_a_change_is_not_kept() -> None:
    cache = PageCache(max_entries=2)
    generation = cache.generation
    cache.job_deleted("x")  # a change lands while the page is being built
    cache.put("k", b"stale", generation)
    assert cache.get("k") is None
    cache.put("k", b"fresh", cache.generation)
    assert cache.get("k") == b"fresh"


def test_the_oldest_page_goes_first() -> None:
    cache = PageCache(max_entries=2)
    for key in ("a", "b"):
        cache.put(key, key.encode(), cache.generation)
    assert cache.get("a") == b"a"  # now the most recent
    cache.put("c", b"c", cache.generation)
    assert cache.get("b") is None and cache.get("a") == b"a" and cache.get("c") == b"c"


async def test_the_list_is_cached_until_the_store_changes(aiohttp_client, make_config) -> None:
    client = await aiohttp_client(create_app(make_config(watch={"enabled": False})))
    cache = client.app[PAGES]
    first = await add_rejected(client, "one.txt")
    r1 = await (await client.get("/api/jobs")).json()
    r2 = await (await client.get("/api/jobs")).json()
    assert r1 == r2 and [j["id"] for j in r1["jobs"]] == [first.id]
    assert cache.hits == 1
    second = await add_rejected(client, "two.txt")
    r3 = await (await client.get("/api/jobs")).json()
    assert [j["id"] for j in r3["jobs"]] == [second.id, first.id]
    await client.delete(f"/api/jobs/{first.id}")
    r4 = await (await client.get("/api/jobs?status=rejected")).json()
    assert [j["id"] for j in r4["jobs"]] == [second.id]
