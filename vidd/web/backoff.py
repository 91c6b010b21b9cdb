"""Backoff for wrong tokens, per client address: each failure doubles the wait before
that address may try again (capped), so guessing costs time. A success clears it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FIRST_S = 0.5
MAX_S = 60.0
FORGET_AFTER_S = 3600.0  # an address quiet this long starts again from nothing
MAX_ADDRESSES = 10_000  # the oldest are forgotten first: memory stays bounded


@dataclass
class _Record:
    failures: int
    until: float  # no attempt before this (monotonic)
    last: float


class Backoff:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_address: OrderedDict[str, _Record] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Backoff addresses={len(self._by_address)}>"

    def wait_s(self, address: str) -> float:
        """Seconds this address must still wait before its next try (0: it may try)."""
        record = self._by_address.get(address)
        if record is None:
            return 0.0
        now = self._clock()
        if now - record.last > FORGET_AFTER_S:
            del self._by_address[address]
            return 0.0
        return max(0.0, record.until - now)

    def failed(self, address: str) -> tuple[int, float]:
        """Count a failure; returns (failures in a row, seconds until the next try)."""
        now = self._clock()
        record = self._by_address.pop(address, None)
        if record is None or now - record.last > FORGET_AFTER_S:
            record = _Record(0, now, now)
        record.failures += 1
        delay = min(FIRST_S * 2 ** (record.failures - 1), MAX_S)
        record.until, record.last = now + delay, now
        self._by_address[address] = record
        while len(self._by_address) > MAX_ADDRESSES:
            self._by_address.popitem(last=False)
        return record.failures, delay

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)
