"""Tool schemas kept small, and the guard every tool body runs in.

Every client sends the whole ``tools/list`` to its model on every turn, so the published
schemas are compacted; tool errors and results are scrubbed of secrets here."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import (
    CallToolResult,
    TextContent,
    ToolAnnotations,
)

from atelier_core.plugin.errors import AtelierError
from atelier_core.logging import scrub

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


def _scrub_result(result: Any) -> Any:
    """Mask secrets in a tool result's text and structured content (defence in depth: a
    provider error that echoes the key must not reach the client)."""
    if not isinstance(result, CallToolResult):
        return result
    for block in result.content:
        if isinstance(block, TextContent):
            block.text = scrub(block.text)
    if result.structured_content is not None:
        result.structured_content = json.loads(scrub(json.dumps(result.structured_content)))
    return result


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a tool body: Pipeline errors become tool errors, and nothing that leaves the
    server carries a secret."""

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await fn(*args, **kwargs)
        except (ToolError, AtelierError) as exc:
            raise ToolError(scrub(str(exc))) from None
        return _scrub_result(result)

    return guarded


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
    tool = Tool.from_function(_guarded(fn), name=name, description=description, annotations=annotations)
    # Unknown arguments are refused, not silently dropped (MCP hardening checklist): a
    # misspelt parameter, or an "api_key" the model tries to pass, must not be ignored.
    # Argument errors name the argument but never echo its value (it may be a secret,
    # and these errors are raised before our own scrubbing runs).
    # The published schema is the SDK's (built above); the strict model only validates, so
    # its own build waits for the tool's first call (defer_build): each schema is built
    # once at start-up, not twice.
    strict = type(tool.fn_metadata.arg_model.__name__, (tool.fn_metadata.arg_model,),
                  {"model_config": {**tool.fn_metadata.arg_model.model_config, "extra": "forbid",
                                    "hide_input_in_errors": True, "defer_build": True}})
    tool.fn_metadata.arg_model = strict
    tool.parameters = {**compact_schema(tool.parameters), "additionalProperties": False}
    if output_schema is not None:
        tool.fn_metadata.output_schema = output_schema
    return tool

def hints(annotations: ToolAnnotations) -> dict[str, Any]:
    return annotations.model_dump(exclude={"title"}, exclude_none=True)
