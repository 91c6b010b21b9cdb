"""The one place that knows Celery: the app both sides build, the task's name and the
message it carries. The front (dispatch) sends it; `vidd worker` runs it.

Celery delivers work and manages worker processes; vidd's SQLite stays the record of
truth. A message names one *attempt* at a job: the worker claims it from the front
over HTTP with the attempt's token and from then on talks only to the front. So the
message carries what a worker cannot get elsewhere: the attempt, its token, the front's
URL and the resolved HandBrakeCLI arguments of the job's profile.

Celery and redis-py are the optional `workers` extra: import this module only when
`workers.mode = "celery"` or in `vidd worker`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TASK_NAME = "vidd.encode"
QUEUE = "vidd"
MESSAGE_VERSION = 1
# Longest accepted field of a message; a longer one is not vidd's.
MAX_FIELD = 4096
MAX_ARGS = 200
# Redis redelivers an unacked message after this much more than the longest encode: a
# healthy worker must never see its task run again elsewhere (celery#5935). A dead host
# is noticed by the front's lease, not by this timeout.
VISIBILITY_MARGIN_S = 600.0


class BadMessage(ValueError):
    """A message that is not a vidd attempt: the worker drops it."""


@dataclass(frozen=True)
class Dispatch:
    """One attempt at a job, as the message carries it."""

    attempt: str  # the attempt id; also the Celery task id
    token: str  # the attempt's bearer token for the worker routes
    front: str  # the front's base URL as workers reach it (workers.public_url)
    args: tuple[str, ...]  # HandBrakeCLI arguments of the profile (no -i/-o/--json/--format)

    def to_kwargs(self) -> dict[str, Any]:
        kwargs = asdict(self)
        kwargs["args"] = list(self.args)
        kwargs["v"] = MESSAGE_VERSION
        return kwargs

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> Dispatch:
        if kwargs.get("v") != MESSAGE_VERSION:
            raise BadMessage(f"unknown message version {kwargs.get('v')!r}")
        fields = {}
        for name in ("attempt", "token", "front"):
            value = kwargs.get(name)
            if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
                raise BadMessage(f"bad {name!r}")
            fields[name] = value
        if not fields["front"].startswith(("http://", "https://")):
            raise BadMessage("'front' is not an http(s) URL")
        args = kwargs.get("args")
        if (
            not isinstance(args, list)
            or len(args) > MAX_ARGS
            or not all(isinstance(a, str) and len(a) <= MAX_FIELD for a in args)
        ):
            raise BadMessage("bad 'args'")
        return cls(args=tuple(args), **fields)


def make_app(broker_url: str, *, max_encode_s: float, name: str = "vidd") -> Any:
    """A Celery app for vidd's one task: late acks, no prefetch, no results stored."""
    from celery import Celery  # the optional extra

    app = Celery(name, broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2.0,
        broker_transport_options={"visibility_timeout": max_encode_s + VISIBILITY_MARGIN_S},
    )
    return app
