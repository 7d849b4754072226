"""The stdio transport (and an HTTP middleware) with an answer for requests the SDK cannot decode.

The MCP SDK's stdio transport validates each line with pydantic, which refuses a lone
UTF-16 surrogate (``"\\ud800"``) anywhere in the JSON; the line is then handed on as an
exception and dropped, and the client waits for its own timeout. Python's ``json``
module still reads such a line, so when the request's ``id`` can be recovered we answer
it at once with a JSON-RPC error that says which field holds the bad text and how to fix
it. Lines with no recoverable id (not JSON, notifications) are left to the SDK as before.

We keep the SDK's ``stdio_server`` for reading (and its claim on fd 0) and relay its
inbound stream. Answers we write ourselves (:func:`run_stdio`): fd 1 is claimed the same
way the SDK does (the wire moves to a private duplicate, fd 1 points at stderr so stray
prints never reach the wire), and each message is serialised once, straight to bytes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

import anyio
import structlog
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import ErrorData, JSONRPCError
from pydantic import ValidationError

__all__ = ["UndecodableAnswers", "answer_for_undecodable", "run_stdio", "undecodable_answer"]

log = structlog.get_logger("atelier.stdio")

INVALID_REQUEST = -32600
INVALID_PARAMS = -32602


def _bad_text(value: Any, path: str) -> str | None:
    """The JSON path of the first string (or key) that is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _bad_text(key, f"{path} (a key)") or _bad_text(item, f"{path}.{key}" if path else key)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _bad_text(item, f"{path}[{index}]")
            if found:
                return found
    return None


def answer_for_undecodable(line: str | bytes) -> JSONRPCError | None:
    """A JSON-RPC error for a request ``line`` the SDK's strict parser refused, when the
    line is still JSON (Python's ``json`` reads lone surrogates) and its ``id`` can be
    recovered; ``None`` otherwise."""
    if len(line) > 64 * 1024 * 1024:
        return None
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or "method" not in message:
        return None
    ident = message.get("id")
    if isinstance(ident, bool) or not isinstance(ident, int | str) or _bad_text(ident, "id"):
        return None  # a notification, or an id we could not echo back
    where = _bad_text(message, "")
    if where is None:
        detail = "it is not a valid JSON-RPC request"
        code = INVALID_REQUEST
    else:
        detail = f"{where} contains text that is not valid Unicode (a lone UTF-16 surrogate such as \\ud800)"
        code = INVALID_PARAMS if where.startswith("params") else INVALID_REQUEST
    text = (
        f"The request could not be decoded: {detail}. Nothing was run. Fix: send valid Unicode "
        "(surrogates only as pairs), or drop the character."
    )
    return JSONRPCError(jsonrpc="2.0", id=ident, error=ErrorData(code=code, message=text))


def undecodable_answer(error: BaseException) -> JSONRPCError | None:
    """:func:`answer_for_undecodable` for the line behind the SDK's parse error."""
    if not isinstance(error, ValidationError):
        return None
    details = error.errors(include_url=False)
    line = details[0].get("input") if details else None
    return answer_for_undecodable(line) if isinstance(line, str | bytes) else None


class UndecodableAnswers:
    """ASGI middleware for the HTTP transport: a POST body with a lone surrogate escape
    that is a request with a recoverable ``id`` is answered with that id (HTTP 400),
    where the SDK would answer a parse error without it. Other requests pass untouched
    (a cheap byte search decides; only such bodies are parsed here)."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        messages: list[Any] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes or not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if size <= self.max_body_bytes and _LONE_SURROGATE.search(body):
            answer = _http_answer(body)
            if answer is not None:
                payload = answer.model_dump_json(by_alias=True, exclude_none=True).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<![0-9a-fA-F]{4})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _http_answer(body: bytes) -> JSONRPCError | None:
    import pydantic_core

    try:
        pydantic_core.from_json(body)  # what the SDK's HTTP transport parses with
    except ValueError:
        return answer_for_undecodable(body)
    return None


@contextmanager
def _claim_stdout() -> Iterator[BinaryIO]:
    """The wire: a private duplicate of fd 1. fd 1 itself points at stderr while we serve,
    so a stray print (ours, a plugin's, a child's) never lands in the protocol stream;
    restored on exit."""
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    wire = os.fdopen(private, "wb", buffering=0)
    try:
        yield wire
    finally:
        with suppress(OSError):
            os.dup2(private, 1)
        wire.close()


def _write_line(wire: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:  # an unbuffered pipe may take part of a large write
        written = wire.write(view)
        view = view[written or 0 :]
    wire.write(b"\n")


async def run_stdio(server: MCPServer[Any]) -> None:
    """Serve ``server`` over stdio until stdin closes.

    Answers are written by us, not by the SDK's stdio writer: each message is serialised
    once, straight to UTF-8 bytes, and written without building ``json + "\n"`` and its
    encoded copy (a 64 MiB image read is an 85 MiB line: the SDK's writer held three
    copies of it at once)."""
    lowlevel = server._lowlevel_server  # as MCPServer.run_stdio_async does
    # Opening /dev/null never blocks.
    with _claim_stdout() as wire, open(os.devnull, "w") as unused:  # noqa: ASYNC230
        async with stdio_server(stdout=anyio.wrap_file(unused)) as (read_stream, sdk_write_stream):
            inbound_send, inbound_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            outbound_send, outbound_receive = anyio.create_memory_object_stream[SessionMessage](0)

            async def relay() -> None:
                async with inbound_send:
                    async for item in read_stream:
                        if isinstance(item, Exception):
                            answer = undecodable_answer(item)
                            if answer is not None:
                                log.warning(
                                    "request could not be decoded; answered with an error",
                                    id=str(answer.id)[:40],
                                    code=answer.error.code,
                                )
                                await outbound_send.send(SessionMessage(answer))
                                continue
                        await inbound_send.send(item)

            written = anyio.Event()

            async def writer() -> None:
                try:
                    async with outbound_receive:
                        async for item in outbound_receive:
                            message = item.message
                            data = type(message).__pydantic_serializer__.to_json(
                                message, by_alias=True, exclude_unset=True
                            )
                            del message, item
                            await anyio.to_thread.run_sync(_write_line, wire, data)
                            del data
                finally:
                    written.set()

            async with anyio.create_task_group() as group:
                group.start_soon(relay)
                group.start_soon(writer)
                await lowlevel.run(inbound_receive, outbound_send, lowlevel.create_initialization_options())
                await outbound_send.aclose()
                await written.wait()  # every answer is on the wire before we stop
                await sdk_write_stream.aclose()
                group.cancel_scope.cancel()
