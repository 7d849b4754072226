"""The MCP layer: the only module that imports the MCP SDK.

:func:`build_server` turns an :class:`~atelier_core.router.Atelier` into an ``MCPServer``
with three tools (``generate_image``, ``edit_image``, ``list_available_models``) and a
resource template that serves every saved image (``atelier://images/<path>``).

Tool bodies are a few lines: build an :class:`ImageCall`, call the router, render the
:class:`CallOutcome` (a text line, a bounded preview, a resource link per image, and the
outcome as structured content). Errors become tool errors with the router's message;
anything unexpected is logged here and reported as a generic internal error.

Adding a tool (jobs, sessions, usage): write the function, then add it in
:func:`_tools` with :func:`compact_tool` so its schema stays small — every client sends
the whole ``tools/list`` to its model on every turn.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hmac
import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextContent, ToolAnnotations
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from . import images as imaging
from .errors import AtelierError, ConfigurationError
from .logging import configure_logging
from .router import Atelier, CallOutcome, ImageRecord
from .settings import Settings
from .spec import Operation
from .storage import RESOURCE_PREFIX
from .types import ImageCall

__all__ = ["build_server", "compact_schema", "compact_tool", "serve_http", "serve_stdio"]

log = structlog.get_logger("atelier.server")

ReturnImage = Literal["preview", "full", "none"]

_MIME_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                "webp": "image/webp", "gif": "image/gif"}

INSTRUCTIONS = (
    "Atelier generates and edits images with many providers. Call list_available_models to "
    "see models and what each accepts; name one in model. Results are saved as files: each "
    "image comes back as a small preview plus a resource link (atelier://images/...) that "
    "edit_image accepts as input. The placeholder model draws placeholders, not AI images."
)

# Published outputSchema: a compact description of CallOutcome (results are still
# validated against the full CallOutcome model).
OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "images": {"type": "array", "items": {"type": "object"}},
        "failures": {"type": "array"},
        "applied": {"type": "object"},
        "cost": {"type": "object"},
    },
    "required": ["model", "images"],
}


# -- schema compaction ---------------------------------------------------------------


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Shrink a pydantic JSON schema without changing what it accepts in practice.

    Drops ``title``s, turns ``anyOf: [X, {type: null}]`` into ``X`` (an omitted argument
    means "not set", so advertising ``null`` only costs bytes), drops ``default: null``
    and ``additionalProperties: true``. Arguments are still validated by the full model.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: walk(prop) for name, prop in value.items()}
                continue
            out[key] = walk(value)
        options = out.get("anyOf")
        if isinstance(options, list):
            kept = [o for o in options if o != {"type": "null"}]
            if len(kept) == 1 and len(kept) < len(options):
                del out["anyOf"]
                out = {**kept[0], **out}
        if "default" in out and out["default"] is None:
            del out["default"]
        if out.get("additionalProperties") is True:
            del out["additionalProperties"]
        return out

    result: dict[str, Any] = walk(copy.deepcopy(schema))
    return result


def compact_tool(
    fn: Callable[..., Any],
    *,
    name: str,
    description: str,
    annotations: ToolAnnotations,
    output_schema: dict[str, Any] | None = None,
) -> Tool:
    """A tool whose published input schema is compacted (see :func:`compact_schema`).

    ``output_schema`` replaces the schema derived from the return annotation; results
    are still validated against the annotated model.
    """
    tool = Tool.from_function(fn, name=name, description=description, annotations=annotations)
    tool.parameters = compact_schema(tool.parameters)
    if output_schema is not None:
        tool.fn_metadata.output_schema = output_schema
    return tool


# -- rendering results ------------------------------------------------------------------


def _summary(outcome: CallOutcome) -> str:
    if outcome.dry_run:
        cost = outcome.cost.estimate_usd
        price = f" Estimated cost: ${cost:.4f}." if cost is not None else " No price known."
        lines = [f"Dry run for {outcome.model}: valid; nothing was sent.{price}",
                 f"Would apply: {_applied(outcome.applied)}"]
    else:
        count = len(outcome.images)
        lines = [f"{count} image(s) from {outcome.model}."]
        for index, image in enumerate(outcome.images):
            lines.append(
                f"[{index}] {image.width}x{image.height} {image.format} {image.path} "
                f"({image.resource_uri})"
            )
            if image.revised_prompt:
                lines.append(f"    revised prompt: {image.revised_prompt}")
        for failure in outcome.failures:
            lines.append(f"[{failure.index}] failed ({failure.code}): {failure.message}")
        if outcome.cost.cost_usd is not None:
            lines.append(f"Cost: ${outcome.cost.cost_usd:.4f} ({outcome.cost.basis}).")
    lines.extend(f"Note: {note}" for note in outcome.notes)
    lines.extend(f"Model said: {text}" for text in outcome.texts[:3])
    return "\n".join(lines)


def _applied(applied: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in applied.items() if k != "model") or "defaults"


def _inline(record: ImageRecord, mode: ReturnImage, settings: Settings) -> tuple[ImageContent, str | None]:
    """The inline image for one record (runs in a worker thread)."""
    preview = settings.preview
    data = Path(record.path).read_bytes()
    if mode == "full" and len(data) <= preview.max_full_inline_bytes:
        return ImageContent(type="image", data=base64.b64encode(data).decode(),
                            mime_type=f"image/{record.format}"), None
    if mode == "full":
        small = imaging.make_preview(data, max_edge=max(record.width, record.height),
                                     max_bytes=preview.max_full_inline_bytes, fmt=preview.format)
        note = (f"[{record.path}] is {record.bytes:,} bytes, over the inline limit of "
                f"{preview.max_full_inline_bytes:,}; inlined a {small.width}x{small.height} "
                f"{small.mime_type} copy. Read {record.resource_uri} for the original.")
    else:
        small = imaging.make_preview(data, max_edge=preview.max_edge, max_bytes=preview.max_bytes,
                                     fmt=preview.format)
        note = None
    return ImageContent(type="image", data=base64.b64encode(small.data).decode(),
                        mime_type=small.mime_type), note


async def render(outcome: CallOutcome, mode: ReturnImage, settings: Settings) -> CallToolResult:
    """A CallOutcome as a tool result: text, inline image(s), resource links, structured data."""
    content: list[Any] = []
    notes: list[str] = []
    blocks: list[Any] = []
    for record in outcome.images:
        if mode != "none":
            try:
                image, note = await asyncio.to_thread(_inline, record, mode, settings)
                blocks.append(image)
                if note:
                    notes.append(note)
            except Exception as exc:  # a preview is a convenience; the file is what matters
                log.warning("preview failed", path=record.path, error=type(exc).__name__)
                notes.append(f"no preview for {record.path}; read {record.resource_uri}")
        blocks.append(ResourceLink(
            type="resource_link", uri=record.resource_uri, name=Path(record.path).name,
            mime_type=f"image/{record.format}", size=record.bytes,
            description=f"{record.width}x{record.height} {record.format}",
        ))
    text = _summary(outcome)
    if notes:
        text += "\n" + "\n".join(f"Note: {n}" for n in notes)
    content.append(TextContent(type="text", text=text))
    content.extend(blocks)
    return CallToolResult(content=content, structured_content=outcome.model_dump(mode="json"))


# -- the tools ------------------------------------------------------------------------


@dataclass(slots=True)
class _Tools:
    atelier: Atelier

    async def _run(self, ctx: Context, call_args: dict[str, Any], operation: Operation,
                   filename: str | None, overwrite: bool, return_image: ReturnImage | None,
                   dry_run: bool) -> CallToolResult:
        settings = self.atelier.settings
        mode: ReturnImage = return_image or settings.preview.default

        async def progress(fraction: float, message: str) -> None:
            await ctx.report_progress(fraction, 1.0, message)

        try:
            call = ImageCall(**{k: v for k, v in call_args.items() if v is not None})
            outcome = await self.atelier.execute(
                call, operation, filename=filename, overwrite=overwrite, progress=progress,
                dry_run=dry_run,
            )
        except AtelierError as exc:
            log.info("tool call refused", operation=operation.value, code=exc.code)
            raise ToolError(str(exc)) from None
        return await render(outcome, mode, settings)

    async def generate_image(
        self,
        ctx: Context,
        prompt: Annotated[str, Field(description="What to draw.")],
        model: Annotated[str | None, Field(description="Model id or alias; see list_available_models.")] = None,
        size: Annotated[str | None, Field(description="'WxH', 'auto', or 'W:H'.")] = None,
        aspect_ratio: Annotated[str | None, Field(description="'W:H'.")] = None,
        resolution: Annotated[str | None, Field(description="Tier, e.g. 1K, 2K, 4K.")] = None,
        quality: Annotated[str | None, Field(description="e.g. low, medium, high.")] = None,
        n: Annotated[int, Field(ge=1, description="Number of images.")] = 1,
        output_format: Annotated[str | None, Field(description="png, jpeg, webp.")] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description="jpeg/webp, 0-100.")] = None,
        background: Annotated[str | None, Field(description="auto, opaque, transparent.")] = None,
        seed: int | None = None,
        negative_prompt: Annotated[str | None, Field(description="What to avoid.")] = None,
        style: str | None = None,
        options: Annotated[dict[str, Any] | None, Field(description="Model-specific extras.")] = None,
        images: Annotated[list[str] | None, Field(description="Reference images (e.g. a subject portrait) for models that take them.")] = None,
        filename: Annotated[str | None, Field(description="Output path under the output dir.")] = None,
        overwrite: Annotated[bool, Field(description="Replace an existing file.")] = False,
        return_image: Annotated[ReturnImage | None, Field(description="Inline image: preview (default), full, none.")] = None,
        dry_run: Annotated[bool, Field(description="Validate and price only; nothing sent.")] = False,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(prompt=prompt, model=model, size=size, aspect_ratio=aspect_ratio,
                    resolution=resolution, quality=quality, n=n, output_format=output_format,
                    output_compression=output_compression, background=background, seed=seed,
                    negative_prompt=negative_prompt, style=style, options=options, images=images)
        return await self._run(ctx, args, Operation.GENERATE, filename, overwrite, return_image, dry_run)

    async def edit_image(
        self,
        ctx: Context,
        images: Annotated[list[str], Field(min_length=1, description="First is edited. Path, file:// or https URL, data URL, base64, or atelier:// URI.")],
        prompt: Annotated[str | None, Field(description="The change to make.")] = None,
        mask: Annotated[str | None, Field(description="PNG; transparent pixels mark the area to change.")] = None,
        model: str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        n: Annotated[int, Field(ge=1)] = 1,
        output_format: str | None = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100)] = None,
        background: str | None = None,
        seed: int | None = None,
        negative_prompt: str | None = None,
        style: str | None = None,
        options: dict[str, Any] | None = None,
        filename: str | None = None,
        overwrite: bool = False,
        return_image: ReturnImage | None = None,
        dry_run: bool = False,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(prompt=prompt, images=images, mask=mask, model=model, size=size,
                    aspect_ratio=aspect_ratio, resolution=resolution, quality=quality, n=n,
                    output_format=output_format, output_compression=output_compression,
                    background=background, seed=seed, negative_prompt=negative_prompt,
                    style=style, options=options)
        return await self._run(ctx, args, Operation.EDIT, filename, overwrite, return_image, dry_run)

    async def list_available_models(
        self,
        provider: Annotated[str | None, Field(description="Only this provider.")] = None,
        capability: Annotated[Literal["generate", "edit", "variation"] | None, Field(description="Only models that can do this.")] = None,
    ) -> CallToolResult:
        try:
            data = self.atelier.describe_models(provider=provider, capability=capability)
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        models = data["models"]
        ready = [m["id"] for m in models if m["available"]]
        text = (f"{len(models)} model(s), {len(ready)} available: {', '.join(ready) or 'none'}."
                " Details in structured content.")
        if "plugin_problems" in data:
            text += " Some plugins failed to load (see plugin_problems)."
        import json

        return CallToolResult(
            content=[TextContent(type="text", text=text + "\n" + json.dumps(data, separators=(",", ":")))],
            structured_content=data,
        )


_GENERATE_DOC = (
    "Generate images from a prompt with any model. Saves full-size files; returns per image "
    "a small preview and a resource link, plus metadata (paths, applied parameters, cost). "
    "Unsupported parameters are refused with the allowed values."
)
_EDIT_DOC = (
    "Edit images (mask inpainting, composing several, restyling) with any model that can "
    "edit. Options and result as generate_image. No prompt: a variation, where supported."
)
_LIST_DOC = (
    "List models: availability (or why not), operations, sizes, qualities, formats, limits, "
    "options, prices; and plugins that failed to load."
)


def _tools(atelier: Atelier) -> list[Tool]:
    tools = _Tools(atelier)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                             open_world_hint=True)
    return [
        compact_tool(tools.generate_image, name="generate_image", description=_GENERATE_DOC,
                     annotations=ToolAnnotations(title="Generate image", **_hints(writes)),
                     output_schema=OUTCOME_SCHEMA),
        compact_tool(tools.edit_image, name="edit_image", description=_EDIT_DOC,
                     annotations=ToolAnnotations(title="Edit image", **_hints(writes)),
                     output_schema=OUTCOME_SCHEMA),
        compact_tool(tools.list_available_models, name="list_available_models",
                     description=_LIST_DOC,
                     annotations=ToolAnnotations(title="List models", read_only_hint=True,
                                                 open_world_hint=False)),
    ]


def _hints(annotations: ToolAnnotations) -> dict[str, Any]:
    return annotations.model_dump(exclude={"title"}, exclude_none=True)


# -- server ---------------------------------------------------------------------------


def _secrets(settings: Settings, atelier: Atelier | None = None) -> list[str]:
    """Every configured secret value, for log redaction."""
    found: list[str] = []
    if settings.http.auth_token is not None:
        found.append(settings.http.auth_token.get_secret_value())
    if atelier is not None:
        for provider in atelier.registry.providers.values():
            for value in provider.settings.__dict__.values():
                if hasattr(value, "get_secret_value"):
                    secret = value.get_secret_value()
                    if secret:
                        found.append(secret)
    return found


def build_server(atelier: Atelier, *, configure_logs: bool = True) -> MCPServer[Atelier]:
    """The MCP server for ``atelier`` (logging is configured first: MCPServer's own
    ``basicConfig`` is then a no-op and every log line goes through our redaction)."""
    if configure_logs:
        configure_logging(atelier.settings.logging, secrets=_secrets(atelier.settings, atelier))

    @asynccontextmanager
    async def lifespan(_: MCPServer[Atelier]) -> AsyncIterator[Atelier]:
        log.debug("server session starting", models=len(atelier.registry.models))
        try:
            yield atelier
        finally:
            await atelier.aclose()

    server: MCPServer[Atelier] = MCPServer(
        "atelier",
        title="Atelier",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=_tools(atelier),
        lifespan=lifespan,
        log_level=atelier.settings.logging.level,
    )
    _add_image_resources(server, atelier)
    return server


def _add_image_resources(server: MCPServer[Atelier], atelier: Atelier) -> None:
    """``atelier://images/<relative path>``: every saved image, confined to the output root.

    One template per extension because a template's MIME type is fixed.
    """
    from mcp.server.mcpserver.exceptions import ResourceError

    def reader(ext: str) -> Callable[[str], bytes]:
        def read(path: str) -> bytes:
            try:
                file = atelier.store.resolve_resource(f"{RESOURCE_PREFIX}{path}.{ext}")
            except AtelierError as exc:
                raise ResourceError(str(exc)) from None
            return file.read_bytes()

        return read

    for ext, mime in _MIME_BY_EXT.items():
        server.resource(
            f"{RESOURCE_PREFIX}{{+path}}.{ext}", name=f"image-{ext}", mime_type=mime,
            description=f"A saved {ext} image",
        )(reader(ext))


# -- transports -----------------------------------------------------------------------


def serve_stdio(atelier: Atelier) -> None:
    """Serve over stdio until the client disconnects."""
    build_server(atelier).run("stdio")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """Host/Origin validation for the bind address (always on, also for non-loopback)."""
    hosts = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*",
               "http://127.0.0.1", "http://localhost"]
    if not _is_loopback(host) and host not in ("0.0.0.0", "::"):
        shown = f"[{host}]" if ":" in host else host
        hosts += [shown, f"{shown}:*"]
    hosts += settings.http.allowed_hosts
    origins += settings.http.allowed_origins
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=hosts, allowed_origins=origins)


class BearerAuth:
    """Require ``Authorization: Bearer <token>`` on every HTTP request (constant-time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for key, value in scope.get("headers", ()):
                if key == b"authorization":
                    given = value
            if not hmac.compare_digest(given, self._expected):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
                return
        await self.app(scope, receive, send)


def http_app(atelier: Atelier, *, host: str) -> ASGIApp:
    """The streamable-HTTP ASGI app with Host/Origin checks, body limit and token auth."""
    settings = atelier.settings
    token = settings.http.auth_token.get_secret_value() if settings.http.auth_token else None
    if not _is_loopback(host) and not token:
        raise ConfigurationError(
            f"refusing to listen on {host} without an auth token: anyone who can reach it "
            "could spend your provider credits",
            fix="set http.auth_token (ATELIER_HTTP__AUTH_TOKEN), or bind 127.0.0.1",
        )
    server = build_server(atelier)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=settings.http.path,
        max_request_body_size=settings.http.max_body_bytes,
        transport_security=transport_security(settings, host),
        host=host,
    )
    if token:
        app = BearerAuth(app, token)
    return app


async def serve_http(atelier: Atelier, *, host: str | None = None, port: int | None = None) -> None:
    """Serve streamable HTTP (default 127.0.0.1:8765/mcp) until interrupted."""
    import uvicorn

    settings = atelier.settings
    host = host or settings.http.host
    port = settings.http.port if port is None else port
    app = http_app(atelier, host=host)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on",
                            log_level=settings.logging.level.lower())
    log.info("serving streamable HTTP", url=f"http://{host}:{port}{settings.http.path}",
             auth="token" if settings.http.auth_token else "none")
    await uvicorn.Server(config).serve()
