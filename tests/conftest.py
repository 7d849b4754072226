"""Suite-wide fixtures: async tests on anyio/asyncio (anyio_mode = "auto" in pyproject), an isolated environment, and a
network guard that fails any test trying to reach a non-loopback address."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


class NetworkGuardError(AssertionError):
    """A test tried to open a connection to a non-loopback address."""


def _check_address(address: Any) -> None:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return
    host = address[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise NetworkGuardError(f"connection to unresolved host {host!r} blocked in tests") from exc
    if not ip.is_loopback:
        raise NetworkGuardError(f"connection to non-loopback address {host} blocked in tests")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name not in (None, "localhost", "localhost."):
        try:
            if not ipaddress.ip_address(name).is_loopback:
                raise NetworkGuardError(f"DNS lookup of {name!r} blocked in tests")
        except ValueError:
            raise NetworkGuardError(f"DNS lookup of {name!r} blocked in tests") from None
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


_VENDOR_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_VERTEX_BASE_URL",
    "MINIMAX_API_KEY",
    "MINIMAX_API_HOST",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No real keys, config or data directories leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("ATELIER_") or name in _VENDOR_VARS:
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ATELIER_CONFIG", str(home / "no-config.toml"))
    monkeypatch.setenv("ATELIER_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    yield home


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the session, on 127.0.0.1 in a temp folder."""
    from pg_server import start_postgres

    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database on each backend (the same suite runs on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.sqlite3'}"
    return str(request.getfixturevalue("postgres").create_database())
