"""Bearer-token verification for the HTTP transport: who each caller is.

Two verifiers, both the MCP SDK's ``TokenVerifier`` protocol (``mcp.server.auth``), so the
SDK's own bearer middleware does the HTTP side (401 with ``WWW-Authenticate``, the
authenticated user in the request scope):

* ``StaticTokens``: a map of principal → token from settings (``http.tokens``, or the
  single ``http.auth_token`` as principal ``default``). Every configured token is compared,
  in constant time, whatever matches first, so timing says nothing about which one did.
* ``JwksTokens``: OAuth 2.1 access tokens (JWTs) signed by an issuer, verified against the
  issuer's JWKS (signature, ``iss``, ``aud``, ``exp``/``nbf``); the principal is the token's
  ``sub`` (or ``client_id``). Keys are fetched over HTTPS (plain HTTP only on loopback),
  cached, and refreshed at most once a minute when an unknown ``kid`` appears.

Tokens are never logged: a refusal logs only the reason.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog
from mcp.server.auth.middleware.bearer_auth import (
    AuthenticatedUser,
    BearerAuthBackend,
    RequireAuthMiddleware,
)
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier_core.identity import LOCAL_PRINCIPAL, acting_as, valid_principal
from atelier_core.plugin.errors import ConfigurationError
from atelier_core.settings import Settings

__all__ = [
    "DEFAULT_PRINCIPAL",
    "JwksTokens",
    "StaticTokens",
    "principal_of",
    "principal_scope",
    "token_verifier",
    "with_auth",
]

# The principal of the single ``http.auth_token``.
DEFAULT_PRINCIPAL = "default"

log = structlog.get_logger("atelier.auth")

_JWKS_MAX_BYTES = 256 * 1024
_JWKS_REFRESH_S = 60.0
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


class StaticTokens:
    """Principals from a fixed map of principal → token."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        problems = [name for name in tokens if not valid_principal(name)]
        if problems:
            raise ConfigurationError(
                f"http.tokens has invalid principal names {problems!r}; allowed: 1–200 "
                "printable characters. Fix: rename them in ATELIER_HTTP__TOKENS."
            )
        short = sorted(name for name, token in tokens.items() if len(token) < 16)
        if short:
            raise ConfigurationError(
                f"http.tokens: the tokens of {short!r} are shorter than 16 characters. "
                "Fix: use long random tokens, e.g. `python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`."
            )
        by_token: dict[bytes, str] = {}
        for name, token in tokens.items():
            if token.encode() in by_token:
                raise ConfigurationError(
                    f"http.tokens: principals {by_token[token.encode()]!r} and {name!r} share "
                    "one token. Fix: give each principal its own token."
                )
            by_token[token.encode()] = name
        self._tokens = list(by_token.items())

    async def verify_token(self, token: str) -> AccessToken | None:
        given = token.encode()
        found: str | None = None
        for expected, name in self._tokens:
            if hmac.compare_digest(given, expected) and found is None:
                found = name
        if found is None:
            log.info("auth.refused", reason="unknown token")
            return None
        return AccessToken(token="", client_id=found, scopes=[], subject=found)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JwksTokens:
    """OAuth 2.1 bearer JWTs verified against an issuer's JWKS."""

    def __init__(self, *, issuer: str, jwks_url: str, audience: str | None) -> None:
        parts = urlsplit(jwks_url)
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname or "")):
            raise ConfigurationError(
                f"http.oauth_jwks_url must be an https:// URL (plain http only on loopback), "
                f"got scheme {parts.scheme!r}. Fix: use the issuer's https JWKS address."
            )
        if parts.username or parts.password:
            raise ConfigurationError("http.oauth_jwks_url must not carry credentials. Fix: remove user:password@.")
        self.issuer = issuer
        self.audience = audience
        self._jwks_url = jwks_url
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = anyio.Lock()

    async def _fetch_keys(self) -> None:
        import httpx2
        import jwt

        client = httpx2.AsyncClient(timeout=10.0, follow_redirects=False)
        async with client, client.stream("GET", self._jwks_url) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > _JWKS_MAX_BYTES:
                    raise ValueError("JWKS document too large")
        document = json.loads(bytes(body))
        keys: dict[str, Any] = {}
        for entry in jwt.PyJWKSet.from_dict(document).keys:
            keys[str(entry.key_id or "")] = entry
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _key_for(self, kid: str) -> Any | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= _JWKS_REFRESH_S:
                try:
                    await self._fetch_keys()
                except Exception as exc:  # network or document problem: refuse, never crash
                    log.warning("auth.jwks_unavailable", error=type(exc).__name__)
                    return None
        return self._keys.get(kid)

    async def verify_token(self, token: str) -> AccessToken | None:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            log.info("auth.refused", reason="not a JWT")
            return None
        key = await self._key_for(str(header.get("kid") or ""))
        if key is None:
            log.info("auth.refused", reason="unknown signing key")
            return None
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[a for a in _ALGORITHMS if a == header.get("alg")],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            log.info("auth.refused", reason=type(exc).__name__)
            return None
        principal = str(claims.get("sub") or claims.get("client_id") or "")
        if not valid_principal(principal):
            log.info("auth.refused", reason="no usable subject")
            return None
        scope = claims.get("scope")
        return AccessToken(
            token="",
            client_id=str(claims.get("client_id") or principal),
            scopes=scope.split() if isinstance(scope, str) else [],
            expires_at=int(claims["exp"]),
            subject=principal,
            claims={"iss": claims.get("iss")},
        )


def token_verifier(settings: Settings) -> StaticTokens | JwksTokens | None:
    """The verifier the HTTP settings ask for, or None when no caller needs a token.

    ``http.tokens`` (principal → token) and the single ``http.auth_token`` (principal
    ``default``) are one static map; ``http.oauth_issuer`` + ``http.oauth_jwks_url`` select
    JWT verification instead. Both at once is refused: one deployment, one source of truth.
    """
    http = settings.http
    tokens = {name: secret.get_secret_value() for name, secret in http.tokens.items()}
    if http.auth_token is not None:
        if DEFAULT_PRINCIPAL in tokens:
            raise ConfigurationError(
                f"http.auth_token and http.tokens[{DEFAULT_PRINCIPAL!r}] both name principal "
                f"{DEFAULT_PRINCIPAL!r}. Fix: keep one of them."
            )
        tokens[DEFAULT_PRINCIPAL] = http.auth_token.get_secret_value()
    oauth = http.oauth_issuer or http.oauth_jwks_url
    if oauth and tokens:
        raise ConfigurationError(
            "both static tokens (http.tokens / http.auth_token) and OAuth (http.oauth_*) are "
            "configured. Fix: choose one way to authenticate callers."
        )
    if oauth:
        if not (http.oauth_issuer and http.oauth_jwks_url):
            raise ConfigurationError(
                "OAuth needs both http.oauth_issuer and http.oauth_jwks_url. Fix: set the "
                "missing one (ATELIER_HTTP__OAUTH_ISSUER / ATELIER_HTTP__OAUTH_JWKS_URL)."
            )
        return JwksTokens(issuer=http.oauth_issuer, jwks_url=http.oauth_jwks_url, audience=http.oauth_audience)
    return StaticTokens(tokens) if tokens else None


def principal_of(request: Any) -> str:
    """The principal an HTTP request was authenticated as (``local`` without auth)."""
    scope = getattr(request, "scope", None)
    user = scope.get("user") if isinstance(scope, dict) else None
    if isinstance(user, AuthenticatedUser):
        access = user.access_token
        return access.subject or access.client_id
    return LOCAL_PRINCIPAL


async def principal_scope(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: every request runs as the principal its HTTP request proved."""
    with acting_as(principal_of(ctx.request)):
        return await call_next(ctx)


def with_auth(app: ASGIApp, verifier: StaticTokens | JwksTokens) -> ASGIApp:
    """Every HTTP request must carry a bearer token the verifier accepts (the SDK's own
    bearer middleware: 401 with ``WWW-Authenticate: Bearer`` otherwise)."""
    guarded = AuthenticationMiddleware(
        RequireAuthMiddleware(app, required_scopes=[]), backend=BearerAuthBackend(verifier)
    )

    async def authenticated(scope: Scope, receive: Receive, send: Send) -> None:
        # Only HTTP requests carry tokens; the server's lifespan events pass straight through.
        await (guarded if scope["type"] == "http" else app)(scope, receive, send)

    return authenticated
