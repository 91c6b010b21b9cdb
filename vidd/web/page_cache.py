"""Ready-made bodies of GET /api/jobs pages, dropped on any change the store reports,
and the pages' totals, dropped on any change but progress.

Turning fifty rows into job JSON costs milliseconds; a busy page or dashboard asks for the
same first page over and over between changes, so it is built once per change, not per
request. Counting the jobs a search matches can cost tens of milliseconds at 100k jobs,
and progress (several times a second while encodes run) never changes how many match.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from ..job import Job

MAX_ENTRIES = 64


class PageCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.generation = 0  # bumped by every change; a page built across one is not kept
        self.hits = 0
        self.misses = 0
        self._bodies: OrderedDict[Hashable, bytes] = OrderedDict()
        self.counted = 0  # bumped by every change but progress; guards totals like generation
        self._totals: OrderedDict[Hashable, int] = OrderedDict()

    def __repr__(self) -> str:
        return f"<PageCache pages={len(self._bodies)} hits={self.hits} misses={self.misses}>"

    def get(self, key: Hashable) -> bytes | None:
        body = self._bodies.get(key)
        if body is None:
            self.misses += 1
            return None
        self._bodies.move_to_end(key)
        self.hits += 1
        return body

    def put(self, key: Hashable, body: bytes, generation: int) -> None:
        """Keep `body` if nothing changed since `generation` was read."""
        if generation != self.generation:
            return
        self._keep(self._bodies, key, body)

    def total(self, key: Hashable) -> int | None:
        """How many jobs match a filter (a page's `total`), if known since the last change."""
        total = self._totals.get(key)
        if total is not None:
            self._totals.move_to_end(key)
        return total

    def put_total(self, key: Hashable, total: int, counted: int) -> None:
        """Keep `total` if no job changed state, arrived or left since `counted` was read."""
        if counted != self.counted:
            return
        self._keep(self._totals, key, total)

    def _keep(self, entries: OrderedDict[Hashable, Any], key: Hashable, value: object) -> None:
        """Put `value` in `entries` as the newest, dropping the oldest past max_entries."""
        entries[key] = value
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    # The store calls these: any change may move a job between pages or change its JSON.
    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        self._invalidate()
        if not progress_only:
            self._recount()

    def job_deleted(self, job_id: str) -> None:
        self._invalidate()
        self._recount()

    def _recount(self) -> None:
        self.counted += 1
        self._totals.clear()

    def _invalidate(self) -> None:
        self.generation += 1
        self._bodies.clear()
