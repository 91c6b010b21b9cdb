"""GET /api/profiles: the profiles people choose between, in the config's order, each
with its one-line description."""

from __future__ import annotations

from aiohttp import web

from .keys import SERVICES


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/profiles", list_profiles)


async def list_profiles(request: web.Request) -> web.Response:
    encode = request.app[SERVICES].config.encode
    return web.json_response(
        {
            "profiles": [
                {
                    "name": name,
                    "description": profile.description,
                    "repackage": profile.repackage,
                    "default": name == encode.default_profile,
                }
                for name, profile in encode.profiles.items()
            ]
        }
    )
