"""Ready-made bodies of GET /api/jobs pages, dropped on any change the store reports.

Turning fifty rows into job JSON costs milliseconds; a busy page or dashboard asks for the
same first page over and over between changes, so it is built once per change, not per
request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from ..job import Job

MAX_ENTRIES = 64


class PageCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.generation = 0  # bumped by every change; a page built across one is not kept
        self.hits = 0
        self.misses = 0
        self._bodies: OrderedDict[Hashable, bytes] = OrderedDict()

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
        self._bodies[key] = body
        self._bodies.move_to_end(key)
        while len(self._bodies) > self.max_entries:
            self._bodies.popitem(last=False)

    # The store calls these: any change may move a job between pages or change its JSON.
    def job_changed(self, job: Job, *, progress_only: bool) -> None:
        self._invalidate()

    def job_deleted(self, job_id: str) -> None:
        self._invalidate()

    def _invalidate(self) -> None:
        self.generation += 1
        self._bodies.clear()
