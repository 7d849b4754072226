"""A scriptable, fault-injecting fake upstream HTTP server on 127.0.0.1.

Provider tests point the real vendor SDK at it through the SDK's base URL. Each test
queues replies per route (status, JSON or raw body, headers, delay, hang, reset,
truncation) and then asserts on the request log: what actually reached the "vendor".

    with FakeUpstream() as up:
        up.reply("POST", "/v1/images/generations", json={"data": [...]})
        up.reply("POST", "/v1/images/generations", status=429, headers={"retry-after": "1"})
        ... call the provider with base_url=up.url + "/v1" ...
        assert up.requests[0].json()["model"] == "gpt-image-2"

Only loopback is used. Handlers run in threads; a "hang" waits on an event that
``close()`` sets, so no test leaves a thread behind.
"""

from __future__ import annotations

import json as jsonlib
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeUpstream", "Recorded", "Reply"]


@dataclass
class Reply:
    """One scripted answer.

    ``hang`` never answers (until the server closes); ``reset`` closes the connection
    abruptly before any response; ``truncate_to`` sends a Content-Length for the full
    body but only that many bytes; ``delay`` waits before answering; ``sse`` sends
    ``text/event-stream`` events (each a dict dumped as JSON, or a raw string).
    """

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False
    reset: bool = False
    truncate_to: int | None = None
    sse: list[Any] | None = None
    content_type: str | None = None


@dataclass
class Recorded:
    """A request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return jsonlib.loads(self.body or b"null")

    def form(self) -> dict[str, list[Any]]:
        """Parse a multipart/form-data body: name → list of str (fields) or
        ``(filename, content_type, bytes)`` (files)."""
        ctype = self.headers.get("content-type", "")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + self.body)
        out: dict[str, list[Any]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            filename = part.get_filename()
            raw = part.get_payload(decode=True)
            payload = raw if isinstance(raw, bytes) else b""
            value: Any = (filename, part.get_content_type(), payload) if filename is not None else payload.decode()
            out.setdefault(str(name), []).append(value)
        return out


Handler = Callable[[Recorded], Reply]


class FakeUpstream:
    """The fake server. Use as a context manager or call ``start()`` / ``close()``."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], deque[Reply], Handler | None]] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._in_flight = 0
        self.max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -----------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[str, re.Pattern[str], deque[Reply], Handler | None]:
        pattern = re.compile(path if path.startswith("^") else "^" + re.escape(path) + "$")
        for route in self._routes:
            if route[0] == method.upper() and route[1].pattern == pattern.pattern:
                return route
        route = (method.upper(), pattern, deque(), None)
        self._routes.append(route)
        return route

    def reply(self, method: str, path: str, **kwargs: Any) -> FakeUpstream:
        """Queue one reply for a route (path exact, or a regex starting with ``^``)."""
        with self._lock:
            self._route(method, path)[2].append(Reply(**kwargs))
        return self

    def handle(self, method: str, path: str, handler: Handler) -> FakeUpstream:
        """Answer a route with ``handler(request)`` whenever no queued reply is left."""
        with self._lock:
            route = self._route(method, path)
            self._routes[self._routes.index(route)] = (route[0], route[1], route[2], handler)
        return self

    def requests_to(self, path_regex: str) -> list[Recorded]:
        return [r for r in self.requests if re.search(path_regex, r.path)]

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # AF_INET: always text
        return f"http://{host}:{port}"

    def start(self) -> FakeUpstream:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                return

            def _serve(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving -------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        recorded = Recorded(
            method=handler.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(recorded)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            reply = self._next_reply(recorded)
        try:
            self._send(handler, reply)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _next_reply(self, recorded: Recorded) -> Reply:
        for method, pattern, queue, fallback in self._routes:
            if method != recorded.method or not pattern.match(recorded.path):
                continue
            if queue:
                return queue.popleft()
            if fallback is not None:
                return fallback(recorded)
        return Reply(status=404, json={"error": {"message": f"no fake route for {recorded.method} {recorded.path}"}})

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay and self._closing.wait(reply.delay):
            return
        if reply.hang:
            self._closing.wait()
            return
        if reply.reset:
            sock = handler.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            handler.close_connection = True
            return
        if reply.sse is not None:
            handler.send_response(reply.status)
            handler.send_header("content-type", "text/event-stream")
            handler.send_header("cache-control", "no-cache")
            handler.send_header("connection", "close")
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            for event in reply.sse:
                chunk = event if isinstance(event, str) else f"data: {jsonlib.dumps(event)}\n\n"
                handler.wfile.write(chunk.encode())
                handler.wfile.flush()
            handler.close_connection = True
            return
        if reply.json is not None:
            payload = jsonlib.dumps(reply.json).encode()
            ctype = reply.content_type or "application/json"
        else:
            raw = reply.body or b""
            payload = raw.encode() if isinstance(raw, str) else raw
            ctype = reply.content_type or "application/octet-stream"
        handler.send_response(reply.status)
        handler.send_header("content-type", ctype)
        handler.send_header("content-length", str(len(payload)))
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if reply.truncate_to is not None:
            handler.wfile.write(payload[: reply.truncate_to])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(payload)
