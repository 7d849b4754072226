"""The image library over MCP: ``find_images``, paged ``resources/list``, metadata
resources, change notifications and the MCP Apps viewer.

- ``resources/list`` lists every indexed image, newest first, 50 per page
  (``nextCursor``); the static resources (the viewer) come first on page one.
- ``resources/read``: ``atelier://images/<path>`` serves the image bytes (the
  existing template), ``atelier://images/<path>?meta`` its metadata as JSON
  (prompt, model, parameters, cost, session/job/turn, lineage, sha256). Both are
  confined to the output root.
- After images are indexed, ``notifications/resources/list_changed`` goes to every
  connected legacy-era session, and a ``ResourcesListChanged`` event to
  ``subscriptions/listen`` streams (2026-07-28 era).
- ``find_images``: full-text search over prompts and filters, ≤ 20 KB per page.
- ``ui://atelier/viewer.html``: the MCP Apps view named by the image tools.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import weakref
from contextlib import suppress
from dataclasses import replace
from importlib import resources as pkg_resources
from typing import Annotated, Any

import structlog
from mcp.server.apps import Apps, ResourceCsp
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourcesListChanged
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    Annotations,
    CallToolResult,
    ImageContent,
    ListResourcesResult,
    ReadResourceResult,
    Resource,
    TextContent,
    TextResourceContents,
)
from pydantic import Field

from atelier_core.engine.library import ImageLibrary
from atelier_core.identity import current_principal
from atelier_core.media import images as imaging
from atelier_core.plugin.errors import AtelierError, InvalidParameterError, shorten
from atelier_core.state.image_records import ImageEntry, ImageQuery, parse_when

__all__ = [
    "FIND_BUDGET_BYTES",
    "META_SUFFIX",
    "VIEWER_TOOLS",
    "VIEWER_URI",
    "FindImages",
    "LibraryMiddleware",
    "viewer_apps",
    "viewer_html",
]

log = structlog.get_logger("atelier.library")

VIEWER_URI = "ui://atelier/viewer.html"
VIEWER_TOOLS = ("generate_image", "edit_image", "edit_session", "find_images")
META_SUFFIX = "?meta"
FIND_BUDGET_BYTES = 20_000
LIST_PAGE = 50
_THUMB_EDGE = 96
_THUMB_BYTES = 3_000
_PROMPT_SHOWN = 300

FIND_DESCRIPTION = (
    "Find images made before: words from the prompt, model, provider, date range "
    "(since/until), session, job or edited_from (lineage). Newest first; page "
    "with cursor. Bills nothing."
)


def strict_csp(html: str, *, images: str = "data:") -> str:
    """``html`` with a Content-Security-Policy meta tag allowing only its own inline
    script and style (by sha256) and images from ``images``: nothing else loads, nothing
    is fetched, no form posts anywhere."""

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in found)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        f"img-src {images}; base-uri 'none'; form-action 'none'"
    )
    return html.replace("<!--CSP-->", f'<meta http-equiv="Content-Security-Policy" content="{policy}">', 1)


def _asset(name: str) -> str:
    return (pkg_resources.files("atelier_core.mcp") / "assets" / name).read_text(encoding="utf-8")


def viewer_html() -> str:
    """The viewer page shipped in the package (plain HTML/JS, no network, strict CSP)."""
    return strict_csp(_asset("viewer.html"))


def viewer_apps() -> Apps:
    """The MCP Apps extension carrying the viewer resource (no extra domains: strict CSP)."""
    apps = Apps()
    apps.add_html_resource(
        VIEWER_URI,
        viewer_html(),
        name="atelier-viewer",
        title="Atelier image viewer",
        description="Shows the images of a result, their parameters and cost",
        csp=ResourceCsp(connect_domains=[], resource_domains=[]),
        prefers_border=True,
    )
    return apps


def view_meta() -> dict[str, Any]:
    """``_meta`` naming the viewer on a tool (clients without MCP Apps ignore it)."""
    return {"ui": {"resourceUri": VIEWER_URI}}


# -- find_images -------------------------------------------------------------------------


def _line(entry: ImageEntry, uri: str) -> str:
    prompt = (entry.prompt or "").replace("\n", " ")
    cost = f" ${entry.cost_usd:.4f}" if entry.cost_usd is not None else ""
    where = f" session {entry.session_id} turn {entry.turn}" if entry.session_id else ""
    return (
        f"{uri} {entry.created_iso} {entry.model or '?'} {entry.width}x{entry.height}{cost}{where}"
        f" — {shorten(prompt, 120) if prompt else '(no prompt)'}"
    )


class FindImages:
    """The ``find_images`` tool body."""

    def __init__(self, library: ImageLibrary, resolve_model: Any) -> None:
        self._library = library
        self._resolve_model = resolve_model

    async def _model(self, value: str) -> str:
        known = await self._library.index.distinct("model", principal=current_principal())
        if value in known:
            return value
        try:
            canonical = str(self._resolve_model(value).canonical_id)
        except AtelierError:
            canonical = None
        if canonical is not None:
            return canonical
        raise InvalidParameterError(
            "model",
            value,
            "matches no model of any indexed image",
            allowed=known[:30] or "no images yet",
            fix="pass a model id as shown in find_images results, or omit model",
        )

    async def _provider(self, value: str) -> str:
        known = await self._library.index.distinct("provider", principal=current_principal())
        if value in known:
            return value
        raise InvalidParameterError(
            "provider",
            value,
            "matches no provider of any indexed image",
            allowed=known or "no images yet",
            fix="pass one of the allowed providers, or omit it",
        )

    async def _edited_from(self, value: str) -> str:
        return (await self._library.entry(value, parameter="edited_from")).relative

    async def query(self, **args: Any) -> ImageQuery:
        """Validate the filters into an :class:`ImageQuery` (clear errors, nothing run yet)."""
        since = parse_when(args["since"], "since") if args.get("since") else None
        until = parse_when(args["until"], "until", end=True) if args.get("until") else None
        if since is not None and until is not None and since > until:
            raise InvalidParameterError(
                "since",
                args["since"],
                f"is after until={args['until']}",
                fix="swap since and until, or drop one of them",
            )
        return ImageQuery(
            text=args.get("query"),
            since=since,
            until=until,
            model=await self._model(args["model"]) if args.get("model") else None,
            provider=await self._provider(args["provider"]) if args.get("provider") else None,
            session_id=args.get("session_id"),
            job_id=args.get("job_id"),
            edited_from=await self._edited_from(args["edited_from"]) if args.get("edited_from") else None,
            limit=args.get("limit") or 20,
            cursor=args.get("cursor"),
            principal=current_principal(),
        )

    def _thumbnail(self, entry: ImageEntry) -> ImageContent | None:
        try:
            path = self._library.store.resolve_resource(entry.relative)
            small = imaging.make_preview(path.read_bytes(), max_edge=_THUMB_EDGE, max_bytes=_THUMB_BYTES, fmt="webp")
        except Exception:  # a missing or unreadable file: the row still answers
            return None
        return ImageContent(type="image", data=base64.b64encode(small.data).decode(), mime_type=small.mime_type)

    async def page(self, query: ImageQuery, thumbnails: bool) -> CallToolResult:
        """One page within :data:`FIND_BUDGET_BYTES` (text, structured content, thumbnails)."""
        entries, cursor = await self._library.search(query)
        items: list[dict[str, Any]] = []
        lines: list[str] = []
        thumbs: list[ImageContent] = []
        used = 600  # envelope, header line and cursor
        for position, entry in enumerate(entries):
            item = self._library.describe(entry)
            item.pop("path", None)
            if item["prompt"] and len(item["prompt"]) > _PROMPT_SHOWN:
                item["prompt"] = item["prompt"][:_PROMPT_SHOWN] + "…"
            line = _line(entry, item["uri"])
            thumb = await asyncio.to_thread(self._thumbnail, entry) if thumbnails else None
            cost = len(json.dumps(item, ensure_ascii=False)) + len(line.encode()) + 8
            cost += len(thumb.data) + 60 if thumb is not None else 0
            if items and used + cost > FIND_BUDGET_BYTES:
                cursor = self._library.index.cursor_after(entries[position - 1])
                break
            used += cost
            items.append(item)
            lines.append(line)
            if thumb is not None:
                thumbs.append(thumb)
        header = f"{len(items)} image(s)" + (f"; more with cursor={cursor}" if cursor else "; no more")
        text = "\n".join([header, *lines]) if items else "No images match."
        content: list[Any] = [TextContent(type="text", text=text), *thumbs]
        return CallToolResult(content=content, structured_content={"images": items, "next_cursor": cursor})

    async def __call__(
        self,
        query: Annotated[str | None, Field(description="Words from the prompt.")] = None,
        model: Annotated[str | None, Field(description="Model id or alias.")] = None,
        provider: Annotated[str | None, Field(description="Provider name.")] = None,
        since: Annotated[str | None, Field(description="ISO date or date-time.")] = None,
        until: Annotated[str | None, Field(description="ISO date or date-time.")] = None,
        session_id: Annotated[str | None, Field(description="An edit session.")] = None,
        job_id: Annotated[str | None, Field(description="A job.")] = None,
        edited_from: Annotated[str | None, Field(description="atelier:// URI: images edited from it.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="Page size.")] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor of a page.")] = None,
        thumbnails: Annotated[bool, Field(description="Add small inline thumbnails.")] = False,
    ) -> CallToolResult:
        args = dict(
            query=query,
            model=model,
            provider=provider,
            since=since,
            until=until,
            session_id=session_id,
            job_id=job_id,
            edited_from=edited_from,
            limit=limit,
            cursor=cursor,
        )
        return await self.page(await self.query(**args), thumbnails)


# -- resources/list paging, metadata reads and change notifications -------------------


class LibraryMiddleware:
    """Server middleware: pages image resources into ``resources/list``, answers
    ``resources/read`` of ``…?meta``, and remembers sessions for list-changed notices."""

    def __init__(self, library: ImageLibrary, bus: InMemorySubscriptionBus) -> None:
        self._library = library
        self._bus = bus
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        library.subscribe(self.notify)

    async def notify(self) -> None:
        await self._bus.publish(ResourcesListChanged())
        for session in list(self._sessions):
            try:
                await session.send_resource_list_changed()
            except Exception:  # a closed connection: forget it
                self._sessions.discard(session)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is not None and ctx.session is not None:
            with suppress(TypeError):  # a session object that cannot be weakly referenced
                self._sessions.add(ctx.session)
        if ctx.method == "initialize":
            return self._advertise(await call_next(ctx))
        if ctx.method == "resources/list":
            return await self._list(ctx, call_next)
        if ctx.method == "resources/read":
            uri = str((ctx.params or {}).get("uri") or "")
            if uri.startswith("atelier://images/") and uri.endswith(META_SUFFIX):
                return await self._read_meta(uri)
        return await call_next(ctx)

    @staticmethod
    def _advertise(result: HandlerResult) -> HandlerResult:
        """Legacy-era clients learn from initialize that the list changes."""
        caps = getattr(result, "capabilities", None)
        if caps is not None and caps.resources is not None:
            caps.resources.list_changed = True
        return result

    async def _list(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = dict(ctx.params or {})
        cursor = params.pop("cursor", None)
        static: list[Resource] = []
        if not cursor:
            first = await call_next(replace(ctx, params=params))
            listed = first.get("resources", []) if isinstance(first, dict) else getattr(first, "resources", [])
            static = [Resource.model_validate(r) if isinstance(r, dict) else r for r in listed or []]
        try:
            entries, next_cursor = await self._library.search(
                ImageQuery(limit=LIST_PAGE, cursor=cursor, principal=current_principal())
            )
        except InvalidParameterError as exc:
            raise MCPError(INVALID_PARAMS, f"Invalid cursor: {exc.message}") from None
        images = [
            Resource(
                uri=self._library.uri(e),
                name=e.relative.rsplit("/", 1)[-1],
                title=shorten(e.prompt or e.relative, 80),
                description=f"{e.created_iso} {e.model or ''} {e.width}x{e.height}".strip(),
                mime_type=f"image/{e.format}",
                size=e.bytes,
                annotations=Annotations(last_modified=e.created_iso),
            )
            for e in entries
        ]
        return ListResourcesResult(resources=static + images, next_cursor=next_cursor)

    async def _read_meta(self, uri: str) -> HandlerResult:
        image_uri = uri[: -len(META_SUFFIX)]
        try:
            entry = await self._library.entry(image_uri)
        except AtelierError as exc:
            raise MCPError(-32602, exc.message, {"uri": uri}) from None
        body = json.dumps(self._library.describe(entry), ensure_ascii=False, indent=1)
        return ReadResourceResult(contents=[TextResourceContents(uri=uri, mime_type="application/json", text=body)])
