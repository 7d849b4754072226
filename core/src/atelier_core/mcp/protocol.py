"""Results shaped for the protocol revision the client negotiated.

``resource_link`` content blocks arrived in MCP 2025-06-18. A client that negotiated an
older revision (2024-11-05, 2025-03-26) validates tool results against a content union
without them, and the strict ones reject the whole result — the official TypeScript SDK
1.10.2 fails every image call with ``invalid_union … "received": "resource_link"``,
although the image was saved and billed (which invites a paid retry).

:func:`protocol_compat` is a server middleware: after a ``tools/call`` answer has been
serialised for the wire, it replaces each ``resource_link`` block with a text line that
carries the same facts (URI, file name, type, size) when the connection's revision is
older than 2025-06-18. Newer clients get the result unchanged. It runs on the wire dict,
so every tool (and any tool added later) is covered in one place.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types.version import is_version_at_least

__all__ = [
    "RESOURCE_LINK_SINCE",
    "code_in_text",
    "downgrade_content",
    "error_codes",
    "protocol_compat",
    "speaks_resource_links",
    "with_error_code",
]

#: The first protocol revision with ``resource_link`` content blocks.
RESOURCE_LINK_SINCE = "2025-06-18"


def speaks_resource_links(version: str | None) -> bool:
    """Whether a client on ``version`` can parse ``resource_link`` content (unknown: no)."""
    return version is not None and is_version_at_least(version, RESOURCE_LINK_SINCE)


def _link_line(block: dict[str, Any]) -> dict[str, Any]:
    facts = [str(block.get(key)) for key in ("mimeType", "description") if block.get(key)]
    if isinstance(block.get("size"), int):
        facts.append(f"{block['size']:,} bytes")
    detail = f" ({', '.join(facts)})" if facts else ""
    text = f"Resource: {block.get('uri')} — {block.get('name') or 'file'}{detail}; read it with resources/read."
    return {"type": "text", "text": text}


def downgrade_content(result: dict[str, Any]) -> dict[str, Any]:
    """A wire ``CallToolResult`` without ``resource_link`` blocks (each becomes a text line)."""
    content = result.get("content")
    if not isinstance(content, list) or not any(
        isinstance(b, dict) and b.get("type") == "resource_link" for b in content
    ):
        return result
    blocks = [_link_line(b) if isinstance(b, dict) and b.get("type") == "resource_link" else b for b in content]
    return {**result, "content": blocks}


def with_error_code(result: dict[str, Any]) -> dict[str, Any]:
    """Every error result carries ``structuredContent.error.code``: the tools set it
    themselves; this covers the SDK's own errors (an unknown tool, a crash)."""
    if not result.get("isError") or isinstance((result.get("structuredContent") or {}).get("error"), dict):
        return result
    texts = [b.get("text", "") for b in result.get("content") or [] if isinstance(b, dict) and b.get("type") == "text"]
    message = texts[0] if texts else "the tool failed"
    code = "unknown_tool" if message.startswith("Unknown tool") else "internal_error"
    return {**result, "structuredContent": {"error": {"code": code, "message": message, "retryable": False}}}


async def error_codes(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: every ``tools/call`` error result has a machine-readable code."""
    result = await call_next(ctx)
    if ctx.method == "tools/call" and isinstance(result, dict):
        return with_error_code(result)
    return result


def code_in_text(result: dict[str, Any]) -> dict[str, Any]:
    """An error result whose first text block ends with ``[code: …]``: revisions before
    2025-06-18 define no ``structuredContent``, so a client there may never see it."""
    error = (result.get("structuredContent") or {}).get("error")
    content = result.get("content")
    if not result.get("isError") or not isinstance(error, dict) or not isinstance(content, list):
        return result
    for index, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "text":
            tagged = {**block, "text": f"{block.get('text', '')} [code: {error.get('code')}]"}
            return {**result, "content": [*content[:index], tagged, *content[index + 1 :]]}
    return result


async def protocol_compat(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: ``tools/call`` results fit the connection's protocol revision
    (it runs outside :func:`error_codes`, so every error has its code by then)."""
    result = await call_next(ctx)
    if ctx.method == "tools/call" and isinstance(result, dict) and not speaks_resource_links(ctx.protocol_version):
        return code_in_text(downgrade_content(result))
    return result
