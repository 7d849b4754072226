"""The gallery: a read-only web page over the image library (Starlette).

Mounted under ``/gallery`` by ``serve --http`` (behind the same Host/Origin checks and
bearer tokens as ``/mcp``) and served alone by ``atelier-mcp gallery`` on 127.0.0.1.

- ``/gallery/`` the page; ``/gallery/app.js``, ``/gallery/app.css`` its code (shipped in the
  package, no CDN). Every response carries a strict Content-Security-Policy: only this
  origin's script, style, images and API; no frames, no forms, no inline script.
- ``/gallery/api/images`` search (the same filters as ``find_images``), ``/gallery/api/summary``
  (models, providers, sessions, cost per day), ``/gallery/api/sessions/<id>`` (a session's
  lineage tree).
- ``/gallery/file/<path>`` and ``/gallery/thumb/<path>``: an indexed image of the caller's
  principal, resolved inside the output root (``..``, absolute paths, symlinks out and
  other principals' images are refused).

Browsers cannot send an ``Authorization`` header when following a link, so a token may
come once as ``?token=…``: it is moved into an ``HttpOnly; SameSite=Strict`` cookie (and
out of the address bar by a redirect), and :func:`cookie_bearer` turns that cookie back
into the bearer header the usual token check reads.
"""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie
from importlib import resources as pkg_resources
from typing import Any
from urllib.parse import parse_qs, quote

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier_core.engine.library import ImageLibrary
from atelier_core.identity import acting_as
from atelier_core.mcp.auth import principal_of
from atelier_core.media import images as imaging
from atelier_core.plugin.errors import AtelierError, InvalidParameterError
from atelier_core.state.image_records import ImageEntry, ImageQuery, parse_when

__all__ = ["COOKIE", "PREFIX", "cookie_bearer", "gallery_app"]

log = structlog.get_logger("atelier.gallery")

PREFIX = "/gallery"
COOKIE = "atelier_gallery"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_THUMB_EDGE = 320


def _asset(name: str) -> str:
    return (pkg_resources.files("atelier_core.mcp") / "assets" / name).read_text(encoding="utf-8")


def _item(library: ImageLibrary, entry: ImageEntry) -> dict[str, Any]:
    item = library.describe(entry)
    item.pop("path", None)
    item["relative"] = entry.relative
    item["file"] = f"{PREFIX}/file/{quote(entry.relative)}"
    item["thumb"] = f"{PREFIX}/thumb/{quote(entry.relative)}"
    return item


def _error(exc: AtelierError, status: int = 400) -> JSONResponse:
    body = {
        "error": exc.message,
        "code": exc.code,
        "parameter": getattr(exc, "parameter", None),
        "fix": getattr(exc, "fix", None),
    }
    return JSONResponse(body, status_code=status, headers=_HEADERS)


def gallery_app(library: ImageLibrary, resolve_model: Any | None = None) -> Starlette:
    """The gallery as an ASGI app whose routes start with ``/gallery``."""

    async def page(request: Request) -> Response:
        token = request.query_params.get("token")
        if token:  # move it into a cookie and out of the address bar (and history)
            response = RedirectResponse(f"{PREFIX}/", status_code=303, headers=_HEADERS)
            response.set_cookie(
                COOKIE, token, httponly=True, samesite="strict", path=PREFIX, secure=request.url.scheme == "https"
            )
            return response
        return Response(_asset("gallery.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def script(_: Request) -> Response:
        return Response(_asset("gallery.js"), media_type="text/javascript; charset=utf-8", headers=_HEADERS)

    async def style(_: Request) -> Response:
        return Response(_asset("gallery.css"), media_type="text/css; charset=utf-8", headers=_HEADERS)

    async def images(request: Request) -> Response:
        params = request.query_params
        allowed = {"query", "model", "provider", "since", "until", "session_id", "job_id", "cursor", "limit"}
        unknown = sorted(set(params) - allowed)
        with acting_as(principal_of(request)) as principal:
            try:
                if unknown:
                    raise InvalidParameterError(
                        unknown[0],
                        params[unknown[0]],
                        "is not a gallery filter",
                        allowed=sorted(allowed),
                        fix="remove it from the query string",
                    )
                limit_text = params.get("limit") or "40"
                if not limit_text.isdigit():
                    raise InvalidParameterError(
                        "limit", limit_text, "is not a whole number", fix="pass limit between 1 and 100"
                    )
                query = ImageQuery(
                    text=params.get("query") or None,
                    model=params.get("model") or None,
                    provider=params.get("provider") or None,
                    since=parse_when(params["since"], "since") if params.get("since") else None,
                    until=parse_when(params["until"], "until", end=True) if params.get("until") else None,
                    session_id=params.get("session_id") or None,
                    job_id=params.get("job_id") or None,
                    cursor=params.get("cursor") or None,
                    limit=int(limit_text),
                    principal=principal,
                )
                entries, cursor = await library.search(query)
            except AtelierError as exc:
                return _error(exc)
        return JSONResponse({"images": [_item(library, e) for e in entries], "next_cursor": cursor}, headers=_HEADERS)

    async def summary(request: Request) -> Response:
        with acting_as(principal_of(request)) as principal:
            index = library.index
            count, total = await index.totals(principal=principal)
            body = {
                "images": count,
                "bytes": total,
                "models": await index.distinct("model", principal=principal),
                "providers": await index.distinct("provider", principal=principal),
                "sessions": await index.sessions(principal=principal),
                "cost_per_day": await index.cost_per_day(principal=principal),
            }
        return JSONResponse(body, headers=_HEADERS)

    async def session_tree(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        with acting_as(principal_of(request)) as principal:
            entries, _ = await library.search(ImageQuery(session_id=session_id, principal=principal, limit=100))
        if not entries:
            return JSONResponse(
                {
                    "error": f"session_id={session_id!r}: no images of this session",
                    "fix": "pick a session from /gallery/api/summary",
                },
                status_code=404,
                headers=_HEADERS,
            )
        by_relative = {e.relative: e for e in entries}
        nodes = []
        for entry in sorted(entries, key=lambda e: (e.turn if e.turn is not None else -1, e.created_at)):
            parent = by_relative.get(entry.edited_from or "")
            nodes.append({**_item(library, entry), "parent_turn": parent.turn if parent is not None else None})
        return JSONResponse({"session_id": session_id, "nodes": nodes}, headers=_HEADERS)

    async def _entry(request: Request) -> ImageEntry | Response:
        relative = request.path_params["path"]
        with acting_as(principal_of(request)):
            try:
                return await library.entry(relative, parameter="path")
            except AtelierError as exc:
                status = 404 if exc.code in ("image_not_found", "image_not_indexed") else 400
                return _error(exc, status)

    async def file(request: Request) -> Response:
        entry = await _entry(request)
        if isinstance(entry, Response):
            return entry
        path = library.store.root / entry.relative
        data = await asyncio.to_thread(path.read_bytes)
        return Response(data, media_type=f"image/{entry.format}", headers=_HEADERS)

    async def thumb(request: Request) -> Response:
        entry = await _entry(request)
        if isinstance(entry, Response):
            return entry
        path = library.store.root / entry.relative

        def shrink() -> imaging.Preview:
            return imaging.make_preview(path.read_bytes(), max_edge=_THUMB_EDGE, max_bytes=60_000, fmt="webp")

        try:
            small = await asyncio.to_thread(shrink)
        except Exception as exc:  # an unreadable file: say so instead of a broken image
            log.warning("gallery thumbnail failed", error=type(exc).__name__)
            return PlainTextResponse("thumbnail failed", status_code=500, headers=_HEADERS)
        return Response(small.data, media_type=small.mime_type, headers=_HEADERS)

    async def icon(_: Request) -> Response:
        return Response(status_code=204, headers=_HEADERS)

    async def root(_: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307, headers=_HEADERS)

    return Starlette(
        routes=[
            Route(PREFIX, root),
            Route(f"{PREFIX}/", page),
            Route(f"{PREFIX}/app.js", script),
            Route(f"{PREFIX}/app.css", style),
            Route(f"{PREFIX}/favicon.ico", icon),
            Route(f"{PREFIX}/api/images", images),
            Route(f"{PREFIX}/api/summary", summary),
            Route(f"{PREFIX}/api/sessions/{{session_id}}", session_tree),
            Route(f"{PREFIX}/file/{{path:path}}", file),
            Route(f"{PREFIX}/thumb/{{path:path}}", thumb),
        ]
    )


def cookie_bearer(app: ASGIApp) -> ASGIApp:
    """For ``/gallery`` requests without an ``Authorization`` header: the gallery cookie
    (or a one-off ``?token=`` on the page) becomes ``Authorization: Bearer …``, so the
    ordinary token check decides. Other paths pass unchanged."""

    async def bridged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(PREFIX):
            headers = list(scope.get("headers", ()))
            if not any(key == b"authorization" for key, _ in headers):
                token = _cookie_token(headers) or _query_token(scope)
                if token:
                    headers.append((b"authorization", f"Bearer {token}".encode("latin-1", "replace")))
                    scope = {**scope, "headers": headers}
        await app(scope, receive, send)

    return bridged


def _cookie_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header: no token
                continue
            if COOKIE in jar:
                return jar[COOKIE].value
    return None


def _query_token(scope: Scope) -> str | None:
    if scope.get("path") not in (f"{PREFIX}/", PREFIX):
        return None
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def mount(mcp_app: ASGIApp, gallery: ASGIApp) -> ASGIApp:
    """One ASGI app: ``/gallery…`` to the gallery, everything else (``/mcp``, lifespan) to MCP."""

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await gallery(scope, receive, send)
        else:
            await mcp_app(scope, receive, send)

    return routed
