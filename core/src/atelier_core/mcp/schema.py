"""Tool schemas kept small, and the guard every tool body runs in.

Every client sends the whole ``tools/list`` to its model on every turn, so the published
schemas are compacted; tool errors and results are scrubbed of secrets here."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from typing import Any

import structlog
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import (
    CallToolResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import ValidationError

from atelier_core.logging import scrub
from atelier_core.plugin.errors import AtelierError, closest

log = structlog.get_logger("atelier.server")

# Published outputSchema: a compact description of CallOutcome (results are still
# validated against the full CallOutcome model).
# Kept to the main fields (the schema costs bytes in every tools/list). Nothing is
# "required": an error result's structured content is {"error": {...}}, and clients such
# as the TypeScript SDK validate error results against the output schema too.
OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"model": {"type": "string"}, "images": {"type": "array"}, "error": {"type": "object"}},
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


class CodedToolError(ToolError):
    """A tool error with its machine-readable form (``code``, ``message``, and what else
    :meth:`AtelierError.to_dict` carries), for errors that are not an AtelierError."""

    def __init__(self, message: str, code: str, **extra: Any) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"code": code, "message": message, **extra}


def error_result(error: dict[str, Any]) -> CallToolResult:
    """An error as a tool result: the message as text, the whole error (``code`` first)
    as structured content, so a client can branch on ``structuredContent.error.code``."""
    clean: dict[str, Any] = json.loads(scrub(json.dumps(error)))
    return CallToolResult(
        content=[TextContent(type="text", text=str(clean.get("message", "")))],
        structured_content={"error": clean},
        is_error=True,
    )


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a tool body: errors become error results with a ``code``, and nothing that
    leaves the server carries a secret."""

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await fn(*args, **kwargs)
        except AtelierError as exc:
            error = exc.to_dict()
        except CodedToolError as exc:
            error = exc.error
        except ToolError as exc:
            error = {"code": "tool_error", "message": str(exc)}
        else:
            return _scrub_result(result)
        # Logged as the SDK logs a tool error (through the redaction); returned with its code.
        log.info("tool call failed", tool=fn.__name__, code=error.get("code"), message=error.get("message"))
        return error_result(error)

    return guarded


def argument_error(tool: str, schema: dict[str, Any], exc: ValidationError) -> dict[str, Any]:
    """A pydantic argument error, rewritten for the model that reads it: which argument,
    what was wrong, what is allowed, the fix. The value is never echoed (it may be a secret)."""
    properties: dict[str, Any] = schema.get("properties", {})
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "arguments"
    name = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == "extra_forbidden":
        close = closest(name, properties)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return {
            "code": "unknown_argument",
            "parameter": where,
            "retryable": False,
            "allowed": sorted(properties),
            "message": f"{tool} has no argument {name!r}{hint}. Allowed: {', '.join(sorted(properties))}. "
            f"Fix: remove {name!r} or use one of the allowed arguments.",
            "fix": f"remove {name!r} or use one of the allowed arguments",
        }
    if first["type"] == "missing":
        return {
            "code": "missing_argument",
            "parameter": where,
            "retryable": False,
            "message": f"{tool} needs the argument {where!r}. Fix: pass {where}.",
            "fix": f"pass {where}",
        }
    spec = properties.get(name, {})
    allowed = spec.get("enum") or spec.get("description") or spec.get("type")
    shown = ", ".join(map(str, allowed)) if isinstance(allowed, list) else str(allowed or "see the tool schema")
    return {
        "code": "invalid_argument",
        "parameter": where,
        "retryable": False,
        "allowed": shown,
        "message": f"{tool} argument {where!r} is invalid: {first['msg']}. Allowed: {shown}. "
        f"Fix: pass a valid {where}.",
        "fix": f"pass a valid {where}",
    }


class AtelierTool(Tool):
    """A tool whose argument errors are clear error results with a ``code`` instead of the
    SDK's raw pydantic text ("Extra inputs are not permitted")."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            return await super().run(arguments, context, convert_result=convert_result)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                return error_result(argument_error(self.name, self.parameters, exc.__cause__))
            raise


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
    tool = AtelierTool.from_function(_guarded(fn), name=name, description=description, annotations=annotations)
    # Unknown arguments are refused, not silently dropped (MCP hardening checklist): a
    # misspelt parameter, or an "api_key" the model tries to pass, must not be ignored.
    # Argument errors name the argument but never echo its value (it may be a secret,
    # and these errors are raised before our own scrubbing runs).
    # The published schema is the SDK's (built above); the strict model only validates, so
    # its own build waits for the tool's first call (defer_build): each schema is built
    # once at start-up, not twice.
    strict = type(
        tool.fn_metadata.arg_model.__name__,
        (tool.fn_metadata.arg_model,),
        {
            "model_config": {
                **tool.fn_metadata.arg_model.model_config,
                "extra": "forbid",
                "hide_input_in_errors": True,
                "defer_build": True,
            }
        },
    )
    tool.fn_metadata.arg_model = strict
    tool.parameters = {**compact_schema(tool.parameters), "additionalProperties": False}
    if output_schema is not None:
        tool.fn_metadata.output_schema = output_schema
    return tool


def hints(annotations: ToolAnnotations) -> dict[str, Any]:
    return annotations.model_dump(exclude={"title"}, exclude_none=True)
