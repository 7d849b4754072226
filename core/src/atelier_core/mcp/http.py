"""Streamable HTTP: Host/Origin checks, the body limit and bearer-token auth."""

from __future__ import annotations

import hmac
import ipaddress

import structlog
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier_core.plugin.errors import ConfigurationError
from atelier_core.engine.pipeline import Pipeline
from atelier_core.settings import Settings
from atelier_core.mcp.app import build_server
from atelier_core.mcp.host_check import AllowedOrigins, HostOriginCheck

log = structlog.get_logger("atelier.server")

def is_loopback(host: str) -> bool:
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
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
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


def http_app(atelier: Pipeline, *, host: str) -> ASGIApp:
    """The streamable-HTTP ASGI app with Host/Origin checks, body limit and token auth."""
    settings = atelier.settings
    token = settings.http.auth_token.get_secret_value() if settings.http.auth_token else None
    if not is_loopback(host) and not token:
        raise ConfigurationError(
            f"refusing to listen on {host} without an auth token: anyone who can reach it "
            "could spend your provider credits",
            fix="set http.auth_token (ATELIER_HTTP__AUTH_TOKEN), or bind 127.0.0.1",
        )
    server = build_server(atelier)
    security = transport_security(settings, host)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=settings.http.path,
        max_request_body_size=settings.http.max_body_bytes,
        transport_security=security,
        host=host,
    )
    # The SDK's check above matches "127.0.0.1:*" as a prefix; ours is exact and runs first.
    app = HostOriginCheck(app, AllowedOrigins.of(security.allowed_hosts, security.allowed_origins))
    if token:
        app = BearerAuth(app, token)
    return app


async def serve_http(atelier: Pipeline, *, host: str | None = None, port: int | None = None) -> None:
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
