"""The OpenAPI document: it names every route the app registers and nothing else, it is
valid OpenAPI 3.1, and a live vidd keeps to it under schemathesis' fuzzing, with and
without a token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from testkit.daemon import Daemon, start_daemon, wait_for, write_config
from vidd.web import openapi
from vidd.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# 256 bits, as `openssl rand -hex 32` makes (the config refuses short ones)
TOKEN = "3c9e1f5a7b2d4e6f8a0c1e3b5d7f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3f"


def daemon_env() -> dict[str, str]:
    """`python -m vidd` runs from the test's folder: make sure it finds this checkout."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def registered(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, as the document spells them."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        found.add((route.method.lower(), resource.canonical))
    # add_get adds a HEAD beside each GET: HEAD is GET without the body (RFC 9110 9.3.2),
    # so the document's GET stands for both.
    return {(m, p) for m, p in found if not (m == "head" and ("get", p) in found)}


def documented(doc: dict) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def test_every_route_is_documented_and_nothing_else(make_config):
    routes = registered(create_app(make_config()))
    doc = documented(openapi.build())
    assert routes - doc == set(), "registered but not in the document"
    assert doc - routes == set(), "in the document but not registered"


def test_the_document_is_valid_openapi_3_1():
    doc = openapi.build()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


async def test_served_behind_the_token(aiohttp_client, make_config):
    client = await aiohttp_client(create_app(make_config(web={"token": TOKEN})))
    resp = await client.get("/api/openapi.json")
    assert resp.status == 401
    resp = await client.get("/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == openapi.build()


# --- schemathesis against a live vidd ---------------------------------------------------


@dataclass(frozen=True)
class Mode:
    token: str  # the daemon's
    bearer: str | None  # what the client sends
    seed: bool  # jobs in every state for the fuzzer's ids to find (pointless without access)


MODES = {
    "anonymous": Mode(token="", bearer=None, seed=True),
    "token": Mode(token=TOKEN, bearer=TOKEN, seed=True),
    "no_credentials": Mode(token=TOKEN, bearer=None, seed=False),
}
PROFILES = """
[encode.profiles.web]
args = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O"]

# Stops after 1 s of a 3 s clip: the output is too short, so the job fails.
[encode.profiles.cut]
args = ["-e", "x264", "-q", "22", "-r", "15", "-B", "96", "-O", "--stop-at", "seconds:1"]
"""


@dataclass
class Live:
    """A running vidd, what one fuzzing run's client sends it, and the ids of its jobs."""

    name: str
    daemon: Daemon
    headers: dict[str, str]
    # operation label -> ids of real jobs worth naming there (see `seed`)
    ids: dict[str, list[str]] = field(default_factory=dict)


# The live vidd of the running mode, for the generation hooks below (they run while the
# test runs, inside Hypothesis, where fixtures can't reach).
CURRENT: list[Live] = []


@pytest.fixture(scope="module", params=list(MODES))
def live(request, tmp_path_factory, clip, clip_h264) -> Iterator[Live]:
    mode = MODES[request.param]
    folder = tmp_path_factory.mktemp(f"openapi-{request.param}")
    path = write_config(folder, PROFILES, watch={"enabled": False}, web={"token": mode.token})
    daemon = start_daemon(path, daemon_env())
    try:
        run = Live(
            request.param, daemon, {"Authorization": f"Bearer {mode.bearer}"} if mode.bearer else {}
        )
        if mode.seed:
            seed(
                run,
                clip,
                clip_h264,
                {"Authorization": f"Bearer {mode.token}"} if mode.token else {},
            )
        CURRENT[:] = [run]
        yield run
    finally:
        CURRENT.clear()
        daemon.stop()


def seed(live: Live, clip: Path, clip_h264: Path, headers: dict[str, str]) -> None:
    """A done job (video and poster), a failed one, a cancelled one and rejected ones."""
    http = requests.Session()
    http.headers.update(headers)
    url = live.daemon.url

    def upload(data: bytes, name: str, status: int, profile: str = "web") -> dict:
        r = http.post(f"{url}/api/jobs", files={"file": (name, data)}, data={"profile": profile})
        assert r.status_code == status, r.text
        return r.json()

    done = upload(clip.read_bytes(), "clip.avi", 201)["id"]
    failed = upload(clip_h264.read_bytes(), "cut.mp4", 201, profile="cut")["id"]
    cancelled = upload(clip.read_bytes(), "cancelled.avi", 201)["id"]
    # Sent at once: the encode takes far longer than this request.
    assert http.post(f"{url}/api/jobs/{cancelled}/cancel").status_code == 200
    for _ in range(2):
        upload(b"just some notes\n" * 64, "notes.txt", 422)
    rejected = [j["id"] for j in http.get(f"{url}/api/jobs?status=rejected").json()["jobs"]]

    def settled() -> bool:
        states = {http.get(f"{url}/api/jobs/{i}").json()["status"] for i in (done, failed)}
        # the poster follows the done record a moment later
        poster = (http.get(f"{url}/api/jobs/{done}").json()["output"] or {}).get("poster_url")
        return states == {"done", "failed"} and bool(poster)

    wait_for(settled, timeout=60)
    some = [done, failed, cancelled, rejected[0]]
    live.ids = {
        "GET /api/jobs/{id}": some,
        "GET /api/jobs": some,  # as `before`
        "GET /watch/{id}": some,
        "GET /videos/{id}.{ext}": [done, done, failed],  # only a done job has files
        "POST /api/jobs/{id}/cancel": some,
        "POST /api/jobs/{id}/retry": some,
        "DELETE /api/jobs/{id}": [rejected[1]],  # the others keep their jobs
    }


def secured(case) -> bool:
    """Whether the request is the operation's own (not a probe with another method) and
    the document says that it needs the token."""
    op = case.operation
    if case.method.lower() != op.method.lower():
        return False
    return DOC["paths"][op.path][op.method.lower()].get("security") != []


# Built from the same data the server serves (test_served_behind_the_token checks they are
# one): the tests are made per operation when this module is collected, before any vidd
# runs. (schemathesis.pytest.from_fixture would load it from the live vidd, but with
# pytest 9 it fails on `Function._nodeid`, which pytest no longer has.)
DOC = openapi.build()
SCHEMA = schemathesis.openapi.from_dict(DOC)
# tus PATCH bodies: raw bytes under tus's own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


def error_shape(ctx, response, case):
    """Every error, documented or not (the probes with undocumented methods, say), is
    `{"error": {"code", "message"}}`."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return None
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"not JSON: {response.headers.get('Content-Type')}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(v, str) and v for v in body["error"].values()), body
    return None


# Whether each answer is one the document allows. Not the data-acceptance checks: they
# want 400 where HTTP says 416 (a bad Range) or 412 (a failed If-Match), and a 2xx for
# a `before` that is well formed but names no job.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
    error_shape,
]


def real_ids(context) -> list[str]:
    return CURRENT[0].ids.get(context.operation.label, []) if CURRENT else []


def with_real_ids(context, values, key: str):
    """`values` as generated, or with `key` set to one of the daemon's real job ids."""
    if not values or key not in values or not (ids := real_ids(context)):
        return st.just(values)
    return st.sampled_from([*ids, None]).map(lambda i: values if i is None else {**values, key: i})


@SCHEMA.hook
def flatmap_path_parameters(context, path_parameters):
    """Most ids name real jobs: else every job route would only ever answer 404."""
    return with_real_ids(context, path_parameters, "id")


@SCHEMA.hook
def flatmap_query(context, query):
    """Most pages start `before` a real job."""
    return with_real_ids(context, query, "before")


@SCHEMA.parametrize()
@settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_a_live_vidd_keeps_to_the_document(case, live: Live):
    """Every operation, /ws and the media included: without Upgrade headers (the document
    names none) /ws answers 400, and a file's bytes are only checked for their type."""
    if live.name == "token" and case.operation.label == "POST /login":
        # A wrong token at the form makes this address back off, and then even the right
        # bearer is refused (429) for a while: by design. The no_credentials run fuzzes it.
        pytest.skip("fuzzed in the no_credentials run")
    response = case.call_and_validate(base_url=live.daemon.url, headers=live.headers, checks=CHECKS)
    if live.name == "no_credentials" and secured(case):
        # Whatever the fuzzer sent as a bearer or a cookie, it was not the token.
        assert response.status_code in (303, 401, 429), response.text
