"""Browser sessions after a login: a random id in a cookie, kept server-side (only its
hash, in SQLite) with an expiry; ended by logout, and all of them by a new token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from ..job import now
from ..store import Store

MAX_AGE_S = 30 * 24 * 3600
COOKIE = "vidd_session"
# Over HTTPS the cookie takes the __Host- prefix: the browser then only accepts it
# Secure, for this host and path /, so a sibling subdomain can't plant or read one.
SECURE_COOKIE = "__Host-vidd_session"
MAX_COOKIE_CHARS = 100


def token_fingerprint(token: str) -> str:
    """Which token a session was opened with, without storing anything that helps guess it."""
    return hmac.new(token.encode(), b"vidd-session-token-v2", hashlib.sha256).hexdigest()[:32]


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self, store: Store, token: str, max_age_s: int = MAX_AGE_S) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self._fp = token_fingerprint(token) if token else ""

    def __repr__(self) -> str:
        return f"<Sessions max_age={self.max_age_s}s>"

    async def forget_other_tokens(self) -> int:
        """At start-up: sessions opened with another token (or expired) end here."""
        return await self.store.close_sessions_except(self._fp)

    async def open(self, address: str) -> str:
        """A new session; returns the cookie value (never stored as such)."""
        session_id = secrets.token_urlsafe(32)
        expires = now() + timedelta(seconds=self.max_age_s)
        await self.store.open_session(_hash(session_id), self._fp, expires, address)
        return session_id

    async def valid(self, session_id: str) -> bool:
        if not session_id or len(session_id) > MAX_COOKIE_CHARS or not self._fp:
            return False
        return await self.store.session_open(_hash(session_id), self._fp)

    async def close(self, session_id: str) -> None:
        if session_id and len(session_id) <= MAX_COOKIE_CHARS:
            await self.store.close_session(_hash(session_id))
