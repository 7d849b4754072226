"""Who is calling: the principal a call acts for.

Over stdio there is one local principal. Over HTTP the MCP layer verifies the caller's
bearer token and runs the request as the principal it names; everything below (jobs,
sessions, images, usage, idempotency keys, spend limits) reads it from here, so no layer
has to thread it through every signature, and nothing below the MCP layer knows tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["LOCAL_PRINCIPAL", "acting_as", "current_principal", "valid_principal"]

LOCAL_PRINCIPAL = "local"

_current: ContextVar[str] = ContextVar("atelier_principal", default=LOCAL_PRINCIPAL)


def valid_principal(name: str) -> bool:
    """Principal names are short printable identifiers (they end up in state and logs)."""
    return 0 < len(name) <= 200 and name.isprintable() and not name.isspace()


def current_principal() -> str:
    """The principal the running call acts for (``local`` outside any request)."""
    return _current.get()


@contextmanager
def acting_as(principal: str) -> Iterator[str]:
    """Run the enclosed code as ``principal``."""
    if not valid_principal(principal):
        raise ValueError(f"invalid principal name {principal!r}")
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)
