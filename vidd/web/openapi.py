"""The HTTP contract: an OpenAPI 3.1 document for every route the app registers, built as
plain data and served at GET /api/openapi.json. tests/test_openapi.py keeps it true: it
compares it with the router and fuzzes a live vidd against it."""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from .. import __version__
from ..job import Status

Schema = dict[str, Any]

ID_PATTERN = "^[A-Za-z0-9_-]{1,32}$"
TOKEN_NOTE = "Only when `web.token` is set; without one every route is open."


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object whose properties are all present, except the `optional` ones."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
    }


INT: Schema = {"type": "integer", "minimum": 0}
NUM: Schema = {"type": "number", "minimum": 0}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}

MEDIA_INFO: dict[str, Schema] = {
    "size": {**INT, "description": "bytes"},
    "duration": {**NUM, "description": "seconds"},
    "width": INT,
    "height": INT,
    "video_codec": STR,
    "audio_codecs": {"type": "array", "items": STR},
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        **_obj({"error": _obj({"code": STR, "message": STR})}),
        "description": "Every error answer, whatever the route.",
    },
    "Status": {"type": "string", "enum": [s.value for s in Status]},
    "MediaInfo": _obj(MEDIA_INFO),
    "Output": _obj(
        {
            "url": STR,
            "poster_url": _nullable(STR),
            "watch_url": STR,
            **MEDIA_INFO,
        }
    ),
    "JobError": _obj(
        {
            "code": STR,
            "message": {**STR, "description": "what went wrong, in plain words"},
            "detail": {**STR, "description": "the technical text vidd recorded"},
        }
    ),
    "Job": _obj(
        {
            "id": {"type": "string", "pattern": ID_PATTERN},
            "name": {**STR, "description": "the original file name, for display only"},
            "status": _ref("schemas", "Status"),
            "profile": STR,
            "origin": {"type": "string", "enum": ["inbox", "upload"]},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "fps": _nullable(NUM),
            "eta_s": _nullable(INT),
            "queue_position": {**_nullable(INT), "description": "queued jobs ahead of it"},
            "created_at": TIME,
            "started_at": _nullable(TIME),
            "finished_at": _nullable(TIME),
            "source": _nullable(_ref("schemas", "MediaInfo")),
            "output": {
                **_nullable(_ref("schemas", "Output")),
                "description": "null until the job is done",
            },
            "error": _nullable(_ref("schemas", "JobError")),
            "log_tail": {**STR, "description": "HandBrakeCLI's last lines; GET of one job only"},
            # The inbox helper's fields (see vidd/publish.py).
            "folder": {**STR, "description": "the inbox subfolder it came from; '' for the top"},
            "rejected_as": {**_nullable(STR), "description": "its file name in rejected/"},
            "repackaged": {**BOOL, "description": "the result is a stream copy, not an encode"},
            "published_as": {
                **_nullable(STR),
                "description": "where the result was published, under storage.output_dir",
            },
            "publish_note": {
                **_nullable(STR),
                "description": "a plain sentence when publishing failed or renamed the result",
            },
            "worker": {
                **_nullable(STR),
                "description": "the remote worker that runs or ran it; null for a local encode",
            },
        },
        optional=("log_tail",),
    ),
    "JobPage": _obj(
        {
            "jobs": {"type": "array", "items": _ref("schemas", "Job")},
            "next_before": {
                **_nullable(STR),
                "description": "pass as `before` for the next page; null on the last one",
            },
            "total": {**INT, "description": "how many jobs match `status` and `q`, all pages"},
        }
    ),
    "JobLog": _obj(
        {
            "highlights": {
                "type": "array",
                "items": STR,
                "description": "errors and why it stopped first, then how the encode went "
                "(no disc-library noise); last, `vidd: ...` when vidd did not keep the result",
            },
            "lines": {"type": "array", "items": STR, "description": "the log's tail, in order"},
        }
    ),
    "ServerStatus": _obj(
        {
            "version": STR,
            "handbrake": _obj({"path": STR, "version": STR}),
            "uptime_s": NUM,
            "workers": _obj({"max": INT, "busy": INT}),
            "jobs": _obj({s.value: INT for s in Status}),
            "disk": _obj({"free_bytes": INT, "min_free_bytes": INT, "reserved_bytes": INT}),
            "watching": BOOL,
            "health": _obj({"ok": BOOL, "problems": {"type": "array", "items": STR}}),
            "paused": {
                **_nullable(STR),
                "description": "why new encodes wait, if they do (the disk guard; with remote "
                "workers, the broker)",
            },
            "inbox_troubles": {
                "type": "array",
                "items": _obj({"name": STR, "reason": STR, "retry_in_s": _nullable(NUM)}),
            },
            "profiles": {"type": "array", "items": STR},
            "default_profile": STR,
            "max_upload_bytes": INT,
            "login": {**BOOL, "description": "whether a token is required"},
            "websocket_clients": INT,
        }
    ),
}


def _error(description: str, *, retry_after: bool = False) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": _ref("schemas", "Error")}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {"required": True, "schema": INT, "description": "seconds"}
        }
    return response


RESPONSES: dict[str, Schema] = {
    "BadRequest": _error("The request is malformed (`bad_request` and others)."),
    "Unauthorized": _error(f"No valid token or session (`unauthorized`). {TOKEN_NOTE}"),
    "Forbidden": _error(
        "The Host header does not name this server (`unknown_host`), or a request that "
        "changes state or opens a WebSocket came from another site (`foreign_origin`)."
    ),
    "NotFound": _error("No such job, or it has no such file (`not_found`)."),
    "Conflict": _error("The job's state does not allow this (`conflict`)."),
    "TooManyAttempts": _error(
        "Too many wrong tokens from this address: wait (`too_many_attempts`).",
        retry_after=True,
    ),
    "SeeOther": {
        "description": "A redirect.",
        "headers": {"Location": {"required": True, "schema": STR}},
    },
}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str, responses: dict[str, Schema], *, secured: bool = True, **extra: Any
) -> Schema:
    """An operation, with the answers the guard gives before any handler runs."""
    guard: dict[str, Schema] = {"403": _ref("responses", "Forbidden")}
    if secured:
        guard |= {
            "401": _ref("responses", "Unauthorized"),
            "429": _ref("responses", "TooManyAttempts"),
        }
    op: Schema = {"summary": summary, **extra, "responses": guard | responses}
    if not secured:
        op["security"] = []
    return op


ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ID_PATTERN},
}
# Files answered by aiohttp's FileResponse: conditional GET and byte ranges.
FILE_PARAMS = [
    {
        "name": "Range",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^bytes=([0-9]+-[0-9]*|-[0-9]+)$"},
        "description": "one range of bytes; anything else is answered 416",
    },
    *(
        {"name": name, "in": "header", "required": False, "schema": STR}
        for name in (
            "If-Range",
            "If-Match",
            "If-None-Match",
            "If-Modified-Since",
            "If-Unmodified-Since",
        )
    ),
]


def _file(content_types: tuple[str, ...], description: str) -> dict[str, Schema]:
    body = {t: {"schema": {"type": "string", "contentMediaType": t}} for t in content_types}
    content_range = {"Content-Range": {"required": True, "schema": STR}}
    return {
        "200": {"description": description, "content": body},
        "206": {
            "description": "The byte range asked for.",
            "headers": content_range,
            "content": body,
        },
        "304": {"description": "Not modified since the copy the client holds."},
        "412": _error("If-Match or If-Unmodified-Since failed (`precondition_failed`)."),
        "416": {
            **_error("The range lies outside the file (`range_not_satisfiable`)."),
            "headers": content_range,
        },
    }


def _see_other(where: str) -> Schema:
    return {**RESPONSES["SeeOther"], "description": where}


NOT_FOUND = _ref("responses", "NotFound")
CONFLICT = _ref("responses", "Conflict")
JOB = _ref("schemas", "Job")
PAGE = {
    **_file(("text/html",), "The page (a static file: it carries no user data)."),
    "303": _see_other("To /login: a token is set and the request has neither it nor a session."),
}
# pages.ASSET_TYPES, and what any other file is sent as
ASSETS = ("text/html", "text/css", "text/javascript", "image/svg+xml", "application/octet-stream")


# The id of the job an upload created, on the 201 and on the 422 (a rejected file is a job).
JOB_ID_HEADER: Schema = {
    "Vidd-Job-Id": {"required": True, "schema": STR, "description": "the new job's id"}
}


def _upload() -> Schema:
    form = _obj(
        {"file": {"type": "string", "format": "binary"}, "profile": STR}, optional=("profile",)
    )
    return _op(
        "Upload a video: streamed to disk, then probed and queued.",
        {
            "201": {**_json(JOB, "Queued."), "headers": JOB_ID_HEADER},
            "400": _ref("responses", "BadRequest"),
            "408": _error("The body stopped coming, or came too slowly (`too_slow`)."),
            "413": _error("Over `web.max_upload_bytes` (`too_large`)."),
            "422": {
                **_error("Not a video; the message says why (`not_video` and others)."),
                "headers": JOB_ID_HEADER,
            },
            "429": _error(
                "Too many uploads at once (`busy`), the queue is full (`queue_full`), or too "
                "many wrong tokens (`too_many_attempts`).",
                retry_after=True,
            ),
            "507": _error("The disk guard tripped (`disk_full`)."),
        },
        tags=["jobs"],
        requestBody={
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": form,
                    "encoding": {"file": {"contentType": "application/octet-stream"}},
                }
            },
        },
    )


STATES = "|".join(s.value for s in Status)


def _list_jobs() -> Schema:
    def query(name: str, schema: Schema, description: str) -> Schema:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    return _op(
        "A page of jobs, newest first.",
        {
            "200": _json(_ref("schemas", "JobPage"), "The page."),
            "400": _ref("responses", "BadRequest"),
        },
        tags=["jobs"],
        parameters=[
            query(
                "status",
                {
                    "type": "string",
                    "pattern": "^(" + STATES + ")(,(" + STATES + "))*$",
                    "example": "failed,rejected",
                },
                "only jobs in these states: one, or several separated by commas",
            ),
            query(
                "q",
                {"type": "string", "maxLength": 100, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"},
                "only jobs whose name holds this text, in any case, taken literally: 2 to "
                "100 characters, no control characters, spaces around it ignored (empty or "
                "only spaces: no search)",
            ),
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                "jobs per page",
            ),
            query(
                "before",
                {"type": "string", "pattern": ID_PATTERN},
                "`next_before` of the previous page",
            ),
        ],
    )


def _paths() -> dict[str, Schema]:
    def change(summary: str) -> Schema:
        return _op(
            summary,
            {"200": _json(JOB, "The job now."), "404": NOT_FOUND, "409": CONFLICT},
            tags=["jobs"],
        )

    return {
        "/": {
            "get": _op(
                "The page: uploads, the job list, live progress.",
                PAGE,
                tags=["pages"],
                parameters=FILE_PARAMS,
            )
        },
        "/watch/{id}": {
            "get": _op(
                "The player page of a job.",
                PAGE | {"404": NOT_FOUND},
                tags=["pages"],
                parameters=[ID_PARAM, *FILE_PARAMS],
            )
        },
        "/login": {
            "get": _op(
                "The login form.",
                _file(("text/html",), "The form."),
                secured=False,
                tags=["pages"],
                parameters=FILE_PARAMS,
            ),
            "post": _op(
                "Sign in with the token: a session cookie.",
                {
                    "303": _see_other(
                        "To / with a session cookie for the right token (or when no token "
                        "is set); back to /login?failed=1 for a wrong one, or "
                        "/login?wait=<s> while this address backs off."
                    ),
                    "400": _ref("responses", "BadRequest"),
                    "413": _error("The form is over 64 KiB (`too_large`)."),
                },
                secured=False,
                tags=["pages"],
                requestBody={
                    "required": False,  # no token is a wrong token
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": _obj({"token": STR}, optional=("token",))
                        }
                    },
                },
            ),
        },
        "/logout": {
            "post": _op(
                "End this browser's session.",
                {"303": _see_other("To /login, the cookie cleared.")},
                secured=False,
                tags=["pages"],
            )
        },
        "/static/{filename}": {
            "get": _op(
                "The page's scripts, styles and icon.",
                _file(ASSETS, "The file.") | {"404": NOT_FOUND},
                secured=False,
                tags=["pages"],
                parameters=[
                    {
                        "name": "filename",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$",
                        },
                        "example": "app.js",
                    },
                    *FILE_PARAMS,
                ],
            )
        },
        "/api/openapi.json": {
            "get": _op(
                "This document.",
                {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
                tags=["status"],
            )
        },
        "/api/jobs": {"get": _list_jobs(), "post": _upload()},
        "/api/jobs/{id}": {
            "parameters": [ID_PARAM],
            "get": _op(
                "One job, with the tail of HandBrakeCLI's log.",
                {"200": _json(JOB, "The job."), "404": NOT_FOUND},
                tags=["jobs"],
            ),
            "delete": _op(
                "Cancel the job if it runs, then remove it and its files.",
                {
                    "200": _json(
                        _obj({"deleted": {"type": "string", "pattern": ID_PATTERN}}), "Gone."
                    ),
                    "404": NOT_FOUND,
                    "409": CONFLICT,
                },
                tags=["jobs"],
            ),
        },
        "/api/jobs/{id}/log": {
            "parameters": [ID_PARAM],
            "get": _op(
                "HandBrake's log of the job: the lines that matter, then all of its tail.",
                {"200": _json(_ref("schemas", "JobLog"), "The log."), "404": NOT_FOUND},
                tags=["jobs"],
            ),
        },
        "/api/jobs/{id}/cancel": {
            "parameters": [ID_PARAM],
            "post": change("Cancel a queued or running job."),
        },
        "/api/jobs/{id}/retry": {
            "parameters": [ID_PARAM],
            "post": _op(
                "Queue a failed or cancelled job again, with another profile if one is named.",
                {
                    "200": _json(JOB, "The job now."),
                    "400": _error("Not JSON, or no such profile (`unknown_profile`)."),
                    "404": NOT_FOUND,
                    "409": CONFLICT,
                    "413": _error("The body is over 1024 bytes (`too_large`)."),
                },
                tags=["jobs"],
                requestBody={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"profile": STR},
                                "additionalProperties": False,
                            }
                        }
                    },
                },
            ),
        },
        "/api/profiles": {
            "get": _op(
                "The profiles to choose between, in the config's order.",
                {
                    "200": _json(
                        _obj(
                            {
                                "profiles": {
                                    "type": "array",
                                    "items": _obj(
                                        {
                                            "name": STR,
                                            "description": STR,
                                            "repackage": {"type": "boolean"},
                                            "default": {"type": "boolean"},
                                        }
                                    ),
                                }
                            }
                        ),
                        "The profiles.",
                    )
                },
                tags=["status"],
            )
        },
        "/api/status": {
            "get": _op(
                "What vidd says about itself.",
                {"200": _json(_ref("schemas", "ServerStatus"), "The status.")},
                tags=["status"],
            )
        },
        "/healthz": {
            "get": _op(
                "Whether vidd can do its work.",
                {
                    "200": _json(_obj({"status": {"const": "ok"}}), "Healthy."),
                    "503": _error("What stops it, in words (`unavailable`)."),
                },
                secured=False,
                tags=["status"],
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus text format.",
                {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                tags=["status"],
            )
        },
        "/videos/{id}.{ext}": {
            "get": _op(
                "A finished job's video or poster, by job id only.",
                _file(("video/mp4", "image/jpeg"), "The file.") | {"404": NOT_FOUND},
                tags=["media"],
                parameters=[
                    ID_PARAM,
                    {
                        "name": "ext",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["mp4", "jpg"]},
                    },
                    {
                        "name": "download",
                        "in": "query",
                        "required": False,
                        "schema": STR,
                        "description": "present: answer as an attachment named after the upload",
                    },
                    *FILE_PARAMS,
                ],
            )
        },
        "/ws": {
            "get": _op(
                "Live events: a WebSocket (101 Switching Protocols). Text frames of JSON: "
                '`{"type": "snapshot", "jobs": [...]}` first, then `{"type": "job", "job": {...}}` '
                'and `{"type": "deleted", "id": "..."}`.',
                {
                    "101": {"description": "The WebSocket handshake succeeded."},
                    "400": _error("Not a WebSocket handshake (`not_websocket`)."),
                    "503": _error("Too many live connections (`too_many_clients`)."),
                },
                tags=["live"],
            )
        },
    }


# --- resumable uploads (tus 1.0, vidd/web/tus.py) ------------------------------------------

SCHEMAS["Upload"] = _obj(
    {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "offset": {**INT, "description": "bytes received and kept"},
        "length": {**INT, "description": "the declared Upload-Length"},
        "name": STR,
        "profile": _nullable(STR),
        "expires_at": {**TIME, "description": "rolling: each PATCH moves it on"},
        "job_id": {
            **_nullable({"type": "string", "pattern": ID_PATTERN}),
            "description": "the job the complete upload became; null before",
        },
        "job_status": _nullable(_ref("schemas", "Status")),
    }
)


def _tus_header(name: str, schema: Schema, description: str, *, required: bool) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _tus_paths() -> dict[str, Schema]:
    """tus 1.0 with creation, creation-with-upload, termination, expiration and checksum.
    A complete upload is handed to the intake; the final answer names the job in
    `Vidd-Job-Id` and `Vidd-Job-Status`, a file that is not a video included (status
    `rejected`, still 204: the upload itself succeeded, and tus clients retry errors)."""
    version = _tus_header(
        "Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}, "the protocol", required=True
    )
    digits: Schema = {"type": "string", "pattern": "^[0-9]{1,19}$"}
    tus_headers: dict[str, Schema] = {
        "Tus-Resumable": {"required": True, "schema": {"const": "1.0.0"}},
    }
    expires = {"required": True, "schema": STR, "description": "an HTTP date"}
    offset_headers = {
        **tus_headers,
        "Upload-Offset": {"required": True, "schema": digits},
        "Upload-Expires": expires,
    }
    job_headers = {
        "Vidd-Job-Id": {
            "required": False,
            "schema": {"type": "string", "pattern": ID_PATTERN},
            "description": "once the upload is complete: the job it became",
        },
        "Vidd-Job-Status": {
            "required": False,
            "schema": _ref("schemas", "Status"),
            "description": "`queued`, or `rejected` for a file that is not a video",
        },
    }
    octets = {"application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    errors = {
        "400": _ref("responses", "BadRequest"),
        "408": _error("The body stopped coming, or came too slowly (`too_slow`)."),
        "412": _error("Tus-Resumable is not 1.0.0 (`unsupported_version`)."),
        "415": _error(
            "The body is not `application/offset+octet-stream` (`unsupported_media_type`)."
        ),
        "429": _error(
            "Too many incomplete uploads (`too_many_uploads`), the queue is full "
            "(`queue_full`), or too many wrong tokens (`too_many_attempts`).",
            retry_after=True,
        ),
        "503": _error("HandBrakeCLI is missing, so the file can't be taken now."),
        "507": _error("The disk guard tripped (`disk_full`)."),
    }
    return {
        "/api/uploads": {
            "options": _op(
                "What this tus server supports.",
                {
                    "204": {
                        "description": "Tus-Version, Tus-Extension, Tus-Max-Size, "
                        "Tus-Checksum-Algorithm.",
                        "headers": {
                            "Tus-Version": {"required": True, "schema": STR},
                            "Tus-Extension": {"required": True, "schema": STR},
                            "Tus-Max-Size": {"required": True, "schema": digits},
                            "Tus-Checksum-Algorithm": {"required": True, "schema": STR},
                        },
                    }
                },
                tags=["uploads"],
            ),
            "post": _op(
                "Create a resumable upload; the profile and the size are checked before any "
                "byte is stored, and the declared length is reserved on the disk. With a "
                "body (creation-with-upload), its first bytes too.",
                {
                    "201": {
                        "description": "Created: Location names it.",
                        "headers": {
                            **tus_headers,
                            "Location": {"required": True, "schema": STR},
                            "Upload-Expires": expires,
                            "Upload-Offset": {"required": False, "schema": digits},
                            **job_headers,
                        },
                    },
                    **errors,
                    "413": _error("Over `web.max_upload_bytes` (`too_large`)."),
                },
                tags=["uploads"],
                parameters=[
                    version,
                    _tus_header("Upload-Length", digits, "the file's size", required=True),
                    _tus_header(
                        "Upload-Metadata",
                        STR,
                        "`key base64,...`: `filename` (for display only) and `profile`",
                        required=False,
                    ),
                ],
                requestBody={"required": False, "content": octets},
            ),
        },
        "/api/uploads/{id}": {
            "parameters": [ID_PARAM],
            "get": _op(
                "The upload's state as JSON, with its job once it became one (for a client "
                "whose final answer was lost). HEAD is tus's: the same as headers "
                "(Upload-Offset, Upload-Length, Upload-Expires).",
                {
                    "200": {
                        **_json(_ref("schemas", "Upload"), "The upload."),
                        "headers": {
                            **offset_headers,
                            "Upload-Length": {"required": True, "schema": digits},
                        },
                    },
                    "404": _error("No such upload: deleted or expired (`not_found`)."),
                },
                tags=["uploads"],
            ),
            "patch": _op(
                "Append bytes at Upload-Offset. A PATCH cut off keeps what arrived; a new one "
                "takes over from one still open. The last one hands the file to the intake.",
                {
                    "204": {
                        "description": "Stored and fsynced; Upload-Offset is the new offset.",
                        "headers": {**offset_headers, **job_headers},
                    },
                    **errors,
                    "404": _error("No such upload: deleted or expired (`not_found`)."),
                    "409": _error(
                        "Upload-Offset is not the upload's (`offset_mismatch`); the answer's "
                        "Upload-Offset header says what is."
                    ),
                    "460": _error(
                        "The bytes do not match Upload-Checksum (`checksum_mismatch`); they "
                        "were dropped."
                    ),
                },
                tags=["uploads"],
                parameters=[
                    version,
                    _tus_header("Upload-Offset", digits, "where these bytes go", required=True),
                    _tus_header(
                        "Upload-Checksum",
                        {"type": "string", "pattern": "^(sha1|sha256|md5) [A-Za-z0-9+/=]+$"},
                        "the algorithm and the base64 digest of this PATCH's bytes",
                        required=False,
                    ),
                ],
                requestBody={"required": True, "content": octets},
            ),
            "delete": _op(
                "Terminate: the partial file goes (a job it became stays).",
                {
                    "204": {"description": "Gone.", "headers": tus_headers},
                    "404": _error("No such upload (`not_found`)."),
                    "412": errors["412"],
                },
                tags=["uploads"],
                parameters=[version],
            ),
        },
    }


# --- remote workers (vidd/web/workers.py; contracts of issue 13) ---------------------------

SCHEMAS["Workers"] = _obj(
    {
        "mode": {"type": "string", "enum": ["local", "celery"]},
        "broker": {
            **_nullable({"type": "string", "enum": ["up", "down"]}),
            "description": "the broker's last ping; null in local mode or before the first",
        },
        "workers": {
            "type": "array",
            "description": "workers heard from within the last hour, most recent first",
            "items": _obj(
                {
                    "name": STR,
                    "job": {**_nullable(STR), "description": "the job it runs now, if any"},
                    "last_seen_s": NUM,
                }
            ),
        },
    }
)
SCHEMAS["Claim"] = _obj(
    {
        "job": {"type": "string", "pattern": ID_PATTERN},
        "source": _obj({**MEDIA_INFO, "ext": STR}),
        "args": {"type": "array", "items": STR, "description": "HandBrakeCLI arguments"},
        "lease_s": NUM,
        "progress_interval_s": NUM,
        "max_output_bytes": INT,
    }
)


def _worker_op(summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    """A worker route: its credential is the attempt's token, never web.token."""
    refusals: dict[str, Schema] = {
        "401": _error("Unknown attempt or wrong token (`unauthorized`): the same answer."),
        "403": _error(
            "A browser's request (Origin or Sec-Fetch-Site present), or a Host this server "
            "does not answer to (`forbidden`, `unknown_host`)."
        ),
    }
    return {
        "summary": summary,
        **extra,
        "tags": ["workers"],
        "security": [{"attempt": []}],
        "responses": refusals | responses,
    }


def _json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


NOT_LIVE = _error(
    "The attempt is not (or no longer) its job's live one: `superseded`, `cancelled`, or "
    "`claimed` (already); the worker drops the task."
)
BAD_JSON = _error("The body is not the JSON object described (`bad_request`).")
TOO_LARGE_JSON = _error("The body is over 64 KiB (`too_large`).")
ATTEMPT_PARAM = {
    "name": "attempt",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}


def _workers_paths() -> dict[str, Schema]:
    base = "/api/workers/attempts/{attempt}"
    no_content = {"204": {"description": "Taken."}}
    opt_num = _nullable({"type": "number", "minimum": 0})
    return {
        "/api/workers": {
            "get": _op(
                "Remote workers: the mode, the broker's state, workers seen in the last hour.",
                {"200": _json(_ref("schemas", "Workers"), "The workers.")},
                tags=["workers"],
            )
        },
        f"{base}/claim": {
            "parameters": [ATTEMPT_PARAM],
            "post": _worker_op(
                "Claim an attempt, once: what the worker needs to encode it.",
                {
                    "200": _json(_ref("schemas", "Claim"), "Claimed."),
                    "400": BAD_JSON,
                    "409": NOT_LIVE,
                    "413": TOO_LARGE_JSON,
                },
                requestBody=_json_body(
                    _obj(
                        {
                            "worker": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 100,
                                "description": "the worker's name: printable, shown on the page",
                            }
                        }
                    )
                ),
            ),
        },
        f"{base}/source": {
            "parameters": [ATTEMPT_PARAM],
            "get": _worker_op(
                "The job's source file (Range: bytes=N- resumes a download).",
                {
                    **_file(("application/octet-stream",), "The source."),
                    "404": _error("The source file is missing (`not_found`)."),
                    "409": NOT_LIVE,
                },
                parameters=FILE_PARAMS,
            ),
        },
        f"{base}/progress": {
            "parameters": [ATTEMPT_PARAM],
            "post": _worker_op(
                "Progress, and the lease's heartbeat (at most 4 a second).",
                {
                    **no_content,
                    "400": BAD_JSON,
                    "410": _error(
                        "Stop now (`stop`): the attempt was superseded, cancelled or its lease "
                        "lapsed."
                    ),
                    "413": TOO_LARGE_JSON,
                },
                requestBody=_json_body(
                    _obj(
                        {
                            "progress": {"type": "number", "minimum": 0, "maximum": 1},
                            "fps": opt_num,
                            "eta_s": opt_num,
                        },
                        optional=("fps", "eta_s"),
                    )
                ),
            ),
        },
        f"{base}/log": {
            "parameters": [ATTEMPT_PARAM],
            "post": _worker_op(
                "HandBrake's log tail, before the output.",
                {**no_content, "400": BAD_JSON, "409": NOT_LIVE, "413": TOO_LARGE_JSON},
                requestBody=_json_body(_obj({"tail": {"type": "string", "maxLength": 65536}})),
            ),
        },
        f"{base}/output": {
            "parameters": [ATTEMPT_PARAM],
            "put": _worker_op(
                "The encoded MP4: verified like a local encode's, moved to videos/, the job "
                "recorded done before the answer.",
                {
                    "200": _json(_obj({"status": _ref("schemas", "Status")}), "Done."),
                    "400": _error("The body did not arrive whole (`aborted`, `bad_request`)."),
                    "408": _error("The body stopped coming, or came too slowly (`too_slow`)."),
                    "409": NOT_LIVE,
                    "411": _error("No Content-Length (`length_required`)."),
                    "413": _error("Over the claim's `max_output_bytes` (`too_large`)."),
                    "422": _error(
                        "Not a good video (`bad_output`, `duration_mismatch`): the job fails."
                    ),
                    "503": _error("Verified, but the record is late (`unavailable`)."),
                    "507": _error("The disk guard tripped (`disk_full`)."),
                },
                requestBody={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
            ),
        },
        f"{base}/fail": {
            "parameters": [ATTEMPT_PARAM],
            "post": _worker_op(
                "The encode failed on the worker: the job fails with this code and message.",
                {**no_content, "400": BAD_JSON, "409": NOT_LIVE, "413": TOO_LARGE_JSON},
                requestBody=_json_body(
                    _obj(
                        {
                            "code": {
                                "type": "string",
                                "pattern": "^[A-Za-z0-9_.-]{1,40}$",
                            },
                            "message": {"type": "string", "maxLength": 1000},
                            "log_tail": {"type": "string", "maxLength": 65536},
                        },
                        optional=("message", "log_tail"),
                    )
                ),
            ),
        },
        f"{base}/release": {
            "parameters": [ATTEMPT_PARAM],
            "post": _worker_op(
                "The worker is stopping and hands its claimed attempt back: it ends as lost "
                "and the job is dispatched again at once, not after the lease.",
                {**no_content, "409": NOT_LIVE},
            ),
        },
    }


def build() -> Schema:
    """The whole document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vidd",
            "version": __version__,
            "description": "Video conversion daemon. Every error is "
            '`{"error": {"code": "...", "message": "..."}}`, also for a method a path does '
            "not have (405, with Allow), a request that can't be parsed (400), and a "
            "connection over the caps (503 `too_many_connections`, before any route is read). "
            "Outside /api/, a request whose Accept names text/html (a browser opening a page) "
            "gets its error as a small HTML page instead, the same for every request.",
        },
        "paths": _paths() | _tus_paths() | _workers_paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": TOKEN_NOTE},
                "attempt": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A remote worker's attempt token (from the Celery message); "
                    "only the /api/workers/attempts/ routes take it.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "vidd_session",
                    "description": "A browser session from POST /login (`__Host-vidd_session` "
                    f"behind a TLS proxy). {TOKEN_NOTE}",
                },
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


@functools.cache
def _body() -> bytes:
    return json.dumps(build(), indent=1).encode()


async def document(request: web.Request) -> web.Response:
    """GET /api/openapi.json. Behind the token like the rest of /api: the contract is no
    secret, but it names this vidd's version, which a stranger has no need to know."""
    return web.Response(body=_body(), content_type="application/json")
