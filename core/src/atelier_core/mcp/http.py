"""Streamable HTTP: Host/Origin checks, the body limit and bearer-token auth."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import structlog
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from atelier_core.engine.pipeline import Pipeline
from atelier_core.identity import LOCAL_PRINCIPAL
from atelier_core.mcp.app import build_server
from atelier_core.mcp.auth import StaticTokens, token_verifier, with_auth
from atelier_core.mcp.gallery import cookie_bearer, gallery_app, mount
from atelier_core.mcp.host_check import AllowedOrigins, HostOriginCheck
from atelier_core.mcp.stdio import UndecodableAnswers
from atelier_core.plugin.errors import ConfigurationError
from atelier_core.settings import Settings

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
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", "http://127.0.0.1", "http://localhost"]
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
        shown = f"[{host}]" if ":" in host else host
        hosts += [shown, f"{shown}:*"]
    hosts += settings.http.allowed_hosts
    origins += settings.http.allowed_origins
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def http_app(atelier: Pipeline, *, host: str) -> ASGIApp:
    """The streamable-HTTP ASGI app with Host/Origin checks, body limit and token auth."""
    settings = atelier.settings
    verifier = token_verifier(settings)
    if not is_loopback(host) and verifier is None:
        raise ConfigurationError(
            f"refusing to listen on {host} without an auth token: anyone who can reach it "
            "could spend your provider credits",
            fix="set http.auth_token (ATELIER_HTTP__AUTH_TOKEN), http.tokens "
            "(ATELIER_HTTP__TOKENS) or an OAuth issuer (ATELIER_HTTP__OAUTH_*), or bind 127.0.0.1",
        )
    server = build_server(atelier)
    security = transport_security(settings, host)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=settings.http.path,
        max_request_body_size=settings.http.max_body_bytes,
        # Stateless: each POST is served by a fresh transport, nothing kept between requests,
        # so no session affinity is needed behind a load balancer. Costs: no server-to-client
        # requests (elicitation: calls above cost.ask_above_usd are refused), no GET stream.
        stateless_http=settings.http.stateless,
        transport_security=security,
        host=host,
    )
    # A body the SDK cannot decode (a lone surrogate) is answered with its request's id.
    app = UndecodableAnswers(app, settings.http.max_body_bytes)
    # /gallery: the image library in a browser, behind the same checks and tokens.
    app = mount(app, gallery_app(atelier.library))
    # The SDK's check above matches "127.0.0.1:*" as a prefix; ours is exact and runs first.
    app = HostOriginCheck(app, AllowedOrigins.of(security.allowed_hosts, security.allowed_origins))
    if verifier is not None:
        app = cookie_bearer(with_auth(app, verifier))
    return app


def gallery_only_app(atelier: Pipeline, *, host: str, token: str) -> ASGIApp:
    """``atelier-mcp gallery``: the gallery alone, Host/Origin-checked, behind a one-off
    token for the local principal (handed to the browser once, then kept in a cookie)."""
    security = transport_security(atelier.settings, host)
    app: ASGIApp = HostOriginCheck(
        gallery_app(atelier.library), AllowedOrigins.of(security.allowed_hosts, security.allowed_origins)
    )
    return cookie_bearer(with_auth(app, StaticTokens({LOCAL_PRINCIPAL: token})))


async def serve_gallery(
    atelier: Pipeline, *, port: int = 0, open_browser: bool = True, ready: Callable[[str], None] | None = None
) -> None:
    """Serve the gallery on 127.0.0.1 until interrupted; print (and open) its address."""
    import secrets
    import socket
    import webbrowser

    import uvicorn

    host = "127.0.0.1"
    token = secrets.token_urlsafe(24)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}/gallery/?token={token}"
    try:
        await atelier.library.backfill()
        config = uvicorn.Config(
            gallery_only_app(atelier, host=host, token=token),
            log_config=None,
            lifespan="off",
            log_level=atelier.settings.logging.level.lower(),
        )
        print(f"Atelier gallery: {url}", flush=True)
        if open_browser:
            webbrowser.open(url)
        if ready is not None:
            ready(url)
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()
        await atelier.aclose()


async def serve_http(atelier: Pipeline, *, host: str | None = None, port: int | None = None) -> None:
    """Serve streamable HTTP (default 127.0.0.1:8765/mcp) until interrupted."""
    import uvicorn

    settings = atelier.settings
    host = host or settings.http.host
    port = settings.http.port if port is None else port
    app = http_app(atelier, host=host)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, lifespan="on", log_level=settings.logging.level.lower()
    )
    log.info(
        "serving streamable HTTP",
        url=f"http://{host}:{port}{settings.http.path}",
        auth=type(verifier).__name__ if (verifier := token_verifier(settings)) else "none",
    )
    await uvicorn.Server(config).serve()
