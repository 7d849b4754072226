"""Exact ``Host`` and ``Origin`` checks for the HTTP transport (DNS-rebinding defence).

The MCP SDK's own check matches ``127.0.0.1:*`` as a string prefix, so
``Host: 127.0.0.1:1@evil.com`` passes it. Here a header is first **parsed** (a host — a
name, an IPv4 address or a bracketed IPv6 address — and an optional decimal port; an
origin is ``http[s]://`` plus that and nothing else) and then compared part by part
with the allowed entries: the host exactly (case-insensitively), the port exactly, or
any port when the entry ends in ``:*``. Anything that does not parse is refused.
A request without ``Origin`` passes (same-origin and non-browser clients send none);
``Origin: null`` does not.

We write this check ourselves because the SDK's is a prefix match and Starlette's
``TrustedHostMiddleware`` compares host names only, ignoring the port.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AllowedOrigins", "HostOriginCheck", "parse_host_header", "parse_origin"]

_HOST = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?)"
    r"(?::(?P<port>[0-9]{1,5}|\*))?"
)
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<rest>.+)", re.IGNORECASE)


def parse_host_header(value: str, *, wildcard: bool = False) -> tuple[str, str | None] | None:
    """``(host, port)`` of a ``Host`` value, host lower-cased; ``None`` when it is not
    exactly a host with an optional decimal port (``*`` too when ``wildcard``)."""
    match = _HOST.fullmatch(value.strip())
    if match is None:
        return None
    port = match["port"]
    if port == "*" and not wildcard:
        return None
    if port is not None and port != "*" and not 0 < int(port) < 65536:
        return None
    return match["host"].lower().rstrip("."), port


def parse_origin(value: str, *, wildcard: bool = False) -> tuple[str, str, str | None] | None:
    """``(scheme, host, port)`` of an ``Origin`` value, or ``None`` when it is anything
    but ``http[s]://host[:port]`` (no user info, path, query or fragment)."""
    match = _ORIGIN.fullmatch(value.strip())
    if match is None:
        return None
    parsed = parse_host_header(match["rest"], wildcard=wildcard)
    if parsed is None:
        return None
    return match["scheme"].lower(), parsed[0], parsed[1]


@dataclass(frozen=True)
class AllowedOrigins:
    """The Host and Origin values a server accepts (entries as in ``http.allowed_hosts``
    and ``http.allowed_origins``: ``host``, ``host:port``, ``host:*``; origins likewise
    with a scheme). Entries that do not parse are ignored."""

    hosts: frozenset[tuple[str, str | None]]
    origins: frozenset[tuple[str, str, str | None]]

    @classmethod
    def of(cls, hosts: Iterable[str], origins: Iterable[str]) -> AllowedOrigins:
        host_entries = {p for p in (parse_host_header(h, wildcard=True) for h in hosts) if p}
        origin_entries = {p for p in (parse_origin(o, wildcard=True) for o in origins) if p}
        return cls(frozenset(host_entries), frozenset(origin_entries))

    def host_ok(self, value: str | None) -> bool:
        parsed = parse_host_header(value) if value else None
        if parsed is None:
            return False
        host, port = parsed
        return (host, port) in self.hosts or (port is not None and (host, "*") in self.hosts)

    def origin_ok(self, value: str | None) -> bool:
        if value is None:
            return True
        parsed = parse_origin(value)
        if parsed is None:
            return False
        scheme, host, port = parsed
        return parsed in self.origins or (port is not None and (scheme, host, "*") in self.origins)


class HostOriginCheck:
    """ASGI middleware: 421 for a Host, 403 for an Origin that is not exactly allowed."""

    def __init__(self, app: ASGIApp, allowed: AllowedOrigins) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host: str | None = None
            origin: str | None = None
            for key, raw in scope.get("headers", ()):
                if key == b"host":
                    # Two Host headers are ambiguous: refuse rather than pick one.
                    host = raw.decode("latin-1") if host is None else ""
                elif key == b"origin":
                    origin = raw.decode("latin-1") if origin is None else ""
            if not self.allowed.host_ok(host):
                await _refuse(send, 421, b"Invalid Host header")
                return
            if not self.allowed.origin_ok(origin):
                await _refuse(send, 403, b"Invalid Origin header")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
