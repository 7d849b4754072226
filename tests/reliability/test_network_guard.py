"""The suite's network guard (``tests/conftest.py``) really blocks: any connection or DNS
lookup to a non-loopback address fails the test at once, before a packet leaves —
through plain sockets, ``create_connection``, ``connect_ex`` and asyncio alike —
while loopback keeps working (the fake upstream lives there)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from atelier_core.testing import FakeUpstream

BLOCKED_ADDRESSES = [("192.0.2.1", 80), ("10.0.0.1", 443), ("169.254.169.254", 80), ("8.8.8.8", 53)]


def _is_guard(error: BaseException) -> bool:
    return isinstance(error, AssertionError) and "blocked in tests" in str(error)


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
def test_connect_to_a_non_loopback_address_fails_before_any_packet(address: tuple[str, int]) -> None:
    started = time.monotonic()
    with socket.socket() as sock, pytest.raises(AssertionError) as caught:
        sock.connect(address)
    assert _is_guard(caught.value)
    with socket.socket() as sock, pytest.raises(AssertionError):
        sock.connect_ex(address)
    with pytest.raises(AssertionError):
        socket.create_connection(address, timeout=5)
    assert time.monotonic() - started < 1  # refused locally, not after a connect timeout


def test_ipv6_non_loopback_is_blocked() -> None:
    with socket.socket(socket.AF_INET6) as sock, pytest.raises(AssertionError) as caught:
        sock.connect(("2001:db8::1", 443, 0, 0))
    assert _is_guard(caught.value)


@pytest.mark.parametrize("host", ["example.com", "api.openai.com", "generativelanguage.googleapis.com", "10.1.2.3"])
def test_dns_lookups_of_public_names_are_blocked(host: str) -> None:
    with pytest.raises(AssertionError) as caught:
        socket.getaddrinfo(host, 443)
    assert _is_guard(caught.value)


async def test_asyncio_connections_and_lookups_are_blocked() -> None:
    with pytest.raises(AssertionError):
        await asyncio.wait_for(asyncio.open_connection("192.0.2.1", 80), 5)
    with pytest.raises(AssertionError):
        await asyncio.get_running_loop().getaddrinfo("example.com", 443)


def test_loopback_still_works() -> None:
    with FakeUpstream() as upstream:
        upstream.reply("GET", "/ping", json={"ok": True})
        host, port = upstream.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert socket.getaddrinfo("localhost", 80)
