"""Sessions, backoff and the proxy setting, through a real app on a real socket and a
real SQLite store (the browser flow itself is in test_browser_login.py)."""

from __future__ import annotations

import pytest

from vidd.config import ConfigError
from vidd.store import Store
from vidd.web.app import create_app
from vidd.web.backoff import MAX_S, Backoff
from vidd.web.keys import GUARD
from vidd.web.sessions import Sessions

TOKEN = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"


async def login(client, headers=None):
    return await client.post(
        "/login", data={"token": TOKEN}, headers=headers or {}, allow_redirects=False
    )


async def test_behind_a_trusted_tls_proxy_the_cookie_is_secure_and_host_bound(
    aiohttp_client, make_config
):
    cfg = make_config(watch={"enabled": False}, web={"token": TOKEN, "trust_proxy": True})
    client = await aiohttp_client(create_app(cfg))
    resp = await login(client, {"X-Forwarded-Proto": "https"})
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.cookies["__Host-vidd_session"]
    assert cookie["secure"] and cookie["path"] == "/" and not cookie["domain"]
    back = {"Cookie": f"__Host-vidd_session={cookie.value}"}
    assert (await client.get("/api/status", headers=back)).status == 200


async def test_without_trust_the_proxys_headers_are_ignored(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"token": TOKEN})
    client = await aiohttp_client(create_app(cfg))
    resp = await login(client, {"X-Forwarded-Proto": "https"})
    assert "vidd_session" in resp.cookies and "__Host-vidd_session" not in resp.cookies
    assert not resp.cookies["vidd_session"]["secure"]
    # X-Forwarded-For can't buy a fresh address: the backoff sees the peer
    bad = {"Authorization": "Bearer wrong"}
    assert (await client.get("/api/status", headers=bad)).status == 401
    spoofed = {**bad, "X-Forwarded-For": "203.0.113.9"}
    assert (await client.get("/api/status", headers=spoofed)).status == 429


async def test_backoff_is_per_client_address_behind_a_trusted_proxy(aiohttp_client, make_config):
    cfg = make_config(watch={"enabled": False}, web={"token": TOKEN, "trust_proxy": True})
    client = await aiohttp_client(create_app(cfg))
    one = {"Authorization": "Bearer wrong", "X-Forwarded-For": "198.51.100.1"}
    two = {"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": "198.51.100.2"}
    assert (await client.get("/api/status", headers=one)).status == 401
    assert (await client.get("/api/status", headers=one)).status == 429
    assert (await client.get("/api/status", headers=two)).status == 200  # someone else
    assert client.app[GUARD].backoff.wait_s("198.51.100.1") > 0


def test_guessing_slows_to_a_crawl() -> None:
    """Before: 5,000 wrong guesses in 1.6 s. Now each wrong one doubles the wait."""
    now = [0.0]
    backoff = Backoff(clock=lambda: now[0])
    guesses = 0
    while now[0] < 3600:  # an hour of guessing as fast as allowed
        now[0] += backoff.wait_s("attacker")
        backoff.failed("attacker")
        guesses += 1
    assert guesses < 80, guesses  # at most one a minute once the cap is reached
    assert backoff.failed("attacker")[1] == MAX_S
    backoff.succeeded("attacker")
    assert backoff.wait_s("attacker") == 0


async def test_a_new_token_ends_every_session(tmp_path) -> None:
    async with Store(tmp_path / "vidd.db") as store:
        old = Sessions(store, TOKEN)
        session = await old.open("127.0.0.1")
        assert await old.valid(session)
        assert not await old.valid(session + "x") and not await old.valid("")
        new = Sessions(store, OTHER)  # vidd restarted with another token
        assert await new.forget_other_tokens() == 1
        assert not await new.valid(session)
        assert await store.session_count() == 0


async def test_an_expired_session_is_refused(tmp_path) -> None:
    async with Store(tmp_path / "vidd.db") as store:
        sessions = Sessions(store, TOKEN, max_age_s=-1)
        session = await sessions.open("127.0.0.1")
        assert not await sessions.valid(session)
        assert await sessions.forget_other_tokens() == 1  # expired ones go too


@pytest.mark.parametrize(
    ("web", "words"),
    [
        ({"token": "s3cret"}, "too short"),
        ({"token": "ab" * 15}, "too short"),  # 120 bits of hex
        ({"host": "0.0.0.0"}, "anyone who can reach the port"),
    ],
)
def test_config_refuses_weak_or_missing_tokens(make_config, web, words) -> None:
    with pytest.raises(ConfigError, match=words):
        make_config(web=web)


def test_config_takes_a_strong_token_or_an_explicit_anonymous(make_config) -> None:
    assert make_config(web={"token": "ab" * 16}).web.token == "ab" * 16  # 128 bits
    assert make_config(web={"host": "0.0.0.0", "allow_anonymous": True}).web.allow_anonymous
    assert make_config(web={"host": "0.0.0.0", "token": TOKEN}).web.host == "0.0.0.0"


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary="],
)
async def test_a_login_form_that_cannot_be_read_is_a_400(aiohttp_client, make_config, content_type):
    cfg = make_config(watch={"enabled": False}, web={"token": TOKEN})
    client = await aiohttp_client(create_app(cfg))
    resp = await client.post(
        "/login",
        data=b"token=whatever",
        headers={"Content-Type": content_type},
        allow_redirects=False,
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "bad_request"
