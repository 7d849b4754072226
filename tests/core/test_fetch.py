"""fetch: SSRF refusals before any connection, pinning, redirects, caps, deadline.

Nothing here sends a packet to a non-loopback address: refusals are proved with a stub
resolver plus a connection spy (the fetcher's network backend) that records every dial
and never connects; real downloads go to FakeUpstream or a raw server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore2
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from atelier_core.media.fetch import SafeFetcher, is_public_address, origin_entry, parse_host
from atelier_core.plugin.errors import InputImageError
from atelier_core.testing import FakeUpstream

# Module-level marker: anyio then parametrizes async tests at collection time, which keeps
# their own parametrize ids (the suite-wide auto-marking drops them for parametrized tests).
pytestmark = pytest.mark.anyio

PUBLIC = "93.184.216.34"


class SpyBackend(httpcore2.AsyncNetworkBackend):
    """Records every dial. ``real=False`` never connects (raises ConnectError)."""

    def __init__(self, real: bool = False) -> None:
        self.dials: list[tuple[str, int]] = []
        self.real = real
        self.inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        self.dials.append((host, port))
        if not self.real:
            raise httpcore2.ConnectError("spy: no real connection in this test")
        assert ipaddress.ip_address(host).is_loopback
        return await self.inner.connect_tcp(host, port, timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class StubResolver:
    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        queue = self.answers.get(host)
        if not queue:
            raise OSError("no such host")
        return queue.pop(0) if len(queue) > 1 else queue[0]


def fetcher(spy: SpyBackend, resolver: StubResolver | None = None, **kwargs: Any) -> SafeFetcher:
    kwargs.setdefault("timeout_s", 2.0)
    kwargs.setdefault("max_bytes", 1_000_000)
    return SafeFetcher(resolver=resolver or StubResolver({}), network_backend=spy, **kwargs)


def loopback_is_public(ip: Any) -> bool:
    return bool(ip.is_loopback) or is_public_address(ip)


# -- address policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fe80::1%1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "2001:db8::1",
        "2001::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "100.128.0.1", "172.32.0.1"],
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("[::1]", "::1"),
        ("0", "0.0.0.0"),
        ("192.168.257", "192.168.1.1"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_encoded_ip_literals_are_normalised(host: str, expected: str) -> None:
    _name, literal = parse_host(host)
    assert literal == ipaddress.ip_address(expected)


@given(st.integers(min_value=0, max_value=2**32 - 1), st.sampled_from(["dec", "hex", "oct", "two"]))
@settings(max_examples=200, deadline=None)
def test_property_numeric_spellings_mean_their_address(number: int, style: str) -> None:
    ip = ipaddress.IPv4Address(number)
    a, b, c, d = ip.packed
    host = {
        "dec": str(number),
        "hex": hex(number),
        "oct": ".".join("0" + oct(x)[2:] for x in (a, b, c, d)),
        "two": f"{a}.{(b << 16) | (c << 8) | d}",
    }[style]
    assert parse_host(host)[1] == ip


@pytest.mark.parametrize("host", ["08.0.0.1", "256.1.1.1", "1.2.3.4.5", "a b", "exa mple.com", ""])
def test_invalid_hosts(host: str) -> None:
    with pytest.raises(ValueError):
        parse_host(host)


# -- refusals before any connection -----------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.1"],
        ["10.0.0.8"],
        ["169.254.169.254"],
        ["100.64.1.1"],
        ["::1"],
        ["fe80::1"],
        ["::ffff:127.0.0.1"],
        ["fd00::1"],
        ["224.0.0.1"],
        ["0.0.0.0"],
        [PUBLIC, "10.0.0.1"],
    ],
)
async def test_host_resolving_to_non_public_is_refused_before_connect(answer: list[str]) -> None:
    spy = SpyBackend()
    resolver = StubResolver({"images.example": [answer]})
    with pytest.raises(InputImageError) as info:
        await fetcher(spy, resolver).fetch("https://images.example/cat.png", parameter="images[0]")
    assert info.value.code == "url_not_allowed"
    assert info.value.parameter == "images[0]"
    assert spy.dials == []


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/x.png",
        "https://0177.0.0.1/x.png",
        "https://0x7f.1/x.png",
        "https://127.1/x.png",
        "https://[::1]/x.png",
        "https://[::ffff:127.0.0.1]/x.png",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1:8443/a",
        "https://[fe80::1%25eth0]/x",
    ],
)
async def test_ip_literals_refused_without_dns_or_connect(url: str) -> None:
    spy, resolver = SpyBackend(), StubResolver({})
    with pytest.raises(InputImageError) as info:
        await fetcher(spy, resolver).fetch(url)
    assert info.value.code == "url_not_allowed"
    assert resolver.calls == [] and spy.dials == []


async def test_localhost_names_refused_via_resolution() -> None:
    spy = SpyBackend()
    resolver = StubResolver({"localhost": [["127.0.0.1", "::1"]]})
    for url in ("https://localhost/x.png", "https://LOCALHOST./x.png"):
        with pytest.raises(InputImageError) as info:
            await fetcher(spy, resolver).fetch(url)
        assert info.value.code == "url_not_allowed"
    assert spy.dials == []


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example/x.png",
        "ftp://images.example/x.png",
        "file:///etc/passwd",
        "gopher://images.example/",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "//images.example/x",
        "images.example/x.png",
        "https://user:pw@images.example/x.png",
        "https://user@images.example/x.png",
        "https://images.example\\@evil/x.png",
        "https://images.example/x .png",
        "https://images.example:99999/x",
        "https:///nohost",
    ],
)
async def test_schemes_credentials_and_malformed_urls_refused(url: str) -> None:
    spy = SpyBackend()
    resolver = StubResolver({"images.example": [[PUBLIC]]})
    with pytest.raises(InputImageError) as info:
        await fetcher(spy, resolver).fetch(url)
    assert info.value.code == "url_not_allowed"
    assert spy.dials == []
    assert "pw" not in str(info.value)


async def test_unresolvable_host() -> None:
    spy = SpyBackend()
    with pytest.raises(InputImageError) as info:
        await fetcher(spy).fetch("https://nowhere.example/x.png")
    assert info.value.code == "failed_to_download_image"
    assert spy.dials == []


async def test_connection_is_pinned_to_the_validated_address() -> None:
    """DNS rebinding: the second answer would be loopback, but there is no second lookup."""
    spy = SpyBackend()
    resolver = StubResolver({"images.example": [[PUBLIC], ["127.0.0.1"]]})
    with pytest.raises(InputImageError) as info:
        await fetcher(spy, resolver).fetch("https://images.example/x.png")
    assert info.value.code == "failed_to_download_image"  # the spy refused to really connect
    assert resolver.calls == ["images.example"]
    assert spy.dials == [(PUBLIC, 443)]


async def test_query_string_never_echoed_or_logged() -> None:
    spy = SpyBackend()
    resolver = StubResolver({"images.example": [["10.0.0.1"]]})
    with structlog.testing.capture_logs() as logs, pytest.raises(InputImageError) as info:
        await fetcher(spy, resolver).fetch("https://images.example/x.png?sig=CANARY-SIG&key=CANARY")
    assert "CANARY" not in str(info.value) and "CANARY" not in str(info.value.to_dict())
    assert "CANARY" not in repr(logs)
    assert "images.example/x.png?…" in str(info.value)


# -- allow-listed hosts (provider URLs) against a real loopback server ----------------------


async def test_allowed_host_download_over_http_on_loopback() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/files/a.png", body=b"\x89PNG-bytes", content_type="image/png")
        data = await fetcher(spy).fetch(f"{up.url}/files/a.png?sig=1", allowed_hosts=[up.url])
        assert data == b"\x89PNG-bytes"
        assert up.requests[0].query == {"sig": ["1"]}
        assert up.requests[0].headers["host"] == up.url.removeprefix("http://")
    assert spy.dials == [("127.0.0.1", int(up.url.rsplit(":", 1)[1]))]


async def test_allow_list_entries_are_origins_scheme_host_and_port() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        port = int(up.url.rsplit(":", 1)[1])
        up.reply("GET", "/a", body=b"1")
        assert await fetcher(spy).fetch(f"{up.url}/a", allowed_hosts=[up.url + "/v1"]) == b"1"
        refused = [
            [f"http://127.0.0.1:{port + 1}"],  # same host, another port
            [f"https://127.0.0.1:{port}"],  # same host and port, another scheme
            ["127.0.0.1"],  # a bare host means https on 443
            [f"127.0.0.1:{port}"],  # a bare host:port means https
            ["http://127.0.0.1"],  # http's default port is 80
            ["ftp://127.0.0.1", "not a host"],  # not http(s) origins: allow nothing
        ]
        for entries in refused:
            with pytest.raises(InputImageError) as info:
                await fetcher(spy).fetch(f"{up.url}/a", allowed_hosts=entries)
            assert info.value.code == "url_not_allowed", entries
        assert len(up.requests) == 1
    assert origin_entry("https://API.example/v1") == ("https", "api.example", 443)
    assert origin_entry("api.example:8443") == ("https", "api.example", 8443)
    assert origin_entry("http://[::1]/x") == ("http", "::1", 80)


async def test_host_not_in_allow_list() -> None:
    spy = SpyBackend()
    with pytest.raises(InputImageError) as info:
        await fetcher(spy).fetch("http://127.0.0.1:9/x.png", allowed_hosts=["api.example"])
    assert info.value.code == "url_not_allowed"
    assert info.value.allowed == ["https://api.example:443"]
    assert spy.dials == []


async def test_redirect_off_the_allow_list_is_refused() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/a", status=302, headers={"location": "http://evil.example/x.png"})
        with pytest.raises(InputImageError) as info:
            await fetcher(spy).fetch(f"{up.url}/a", allowed_hosts=[up.url])
    assert info.value.code == "url_not_allowed"
    assert len(spy.dials) == 1


async def test_relative_redirect_on_allowed_host_is_followed() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/a", status=301, headers={"location": "/b"})
        up.reply("GET", "/b", status=307, headers={"location": f"{up.url}/c"})
        up.reply("GET", "/c", body=b"done")
        assert await fetcher(spy).fetch(f"{up.url}/a", allowed_hosts=[up.url]) == b"done"
        assert [r.path for r in up.requests] == ["/a", "/b", "/c"]


async def test_too_many_redirects() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.handle(
            "GET",
            "/loop",
            lambda r: __import__("atelier_core.testing").testing.Reply(status=302, headers={"location": "/loop"}),
        )
        with pytest.raises(InputImageError) as info:
            await fetcher(spy, max_redirects=3).fetch(f"{up.url}/loop", allowed_hosts=[up.url])
        assert len(up.requests) == 4
    assert info.value.code == "failed_to_download_image" and "redirects" in str(info.value)


# -- public mode, with loopback treated as public for the test -----------------------------


def public_loopback_fetcher(spy: SpyBackend, resolver: StubResolver | None = None, **kw: Any) -> SafeFetcher:
    return fetcher(spy, resolver, address_policy=loopback_is_public, schemes=("http", "https"), **kw)


async def test_public_mode_redirect_to_private_address_is_blocked_at_the_hop() -> None:
    spy = SpyBackend(real=True)
    resolver = StubResolver({"internal.example": [["10.0.0.7"]]})
    with FakeUpstream() as up:
        up.reply("GET", "/a", status=302, headers={"location": "http://internal.example/secret"})
        with pytest.raises(InputImageError) as info:
            await public_loopback_fetcher(spy, resolver).fetch(f"{up.url}/a")
    assert info.value.code == "url_not_allowed"
    assert [host for host, _ in spy.dials] == ["127.0.0.1"]


async def test_public_mode_redirect_to_metadata_literal_blocked() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/a", status=308, headers={"location": "http://169.254.169.254/latest/"})
        with pytest.raises(InputImageError) as info:
            await public_loopback_fetcher(spy).fetch(f"{up.url}/a")
    assert info.value.code == "url_not_allowed"
    assert len(spy.dials) == 1


async def test_content_length_over_cap_refused_before_reading() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/big", body=b"x" * 200_000)
        with pytest.raises(InputImageError) as info:
            await public_loopback_fetcher(spy, max_bytes=100_000).fetch(f"{up.url}/big")
    assert info.value.code == "image_file_too_large" and "100,000" in str(info.value)


async def test_stream_without_length_aborted_at_cap() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/endless", sse=["y" * 65536] * 64)  # 4 MiB, no Content-Length
        with pytest.raises(InputImageError) as info:
            await public_loopback_fetcher(spy, max_bytes=100_000).fetch(f"{up.url}/endless")
    assert info.value.code == "image_file_too_large"


async def test_exact_cap_is_accepted() -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/ok", body=b"z" * 1000)
        assert len(await public_loopback_fetcher(spy, max_bytes=1000).fetch(f"{up.url}/ok")) == 1000


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ({"status": 404}, "failed_to_download_image"),
        ({"status": 500}, "failed_to_download_image"),
        ({"status": 302}, "failed_to_download_image"),
        ({"body": b"abc" * 100, "truncate_to": 10}, "failed_to_download_image"),
        ({"reset": True}, "failed_to_download_image"),
        ({"hang": True}, "remote_timeout"),
    ],
)
async def test_upstream_failures(reply: dict[str, Any], code: str) -> None:
    spy = SpyBackend(real=True)
    with FakeUpstream() as up:
        up.reply("GET", "/f", **reply)
        with pytest.raises(InputImageError) as info:
            await public_loopback_fetcher(spy, timeout_s=0.5).fetch(f"{up.url}/f")
    assert info.value.code == code


async def test_total_deadline_stops_a_slow_drip() -> None:
    """A server that sends one byte every 50 ms never trips a per-read timeout of 0.6 s;
    the total deadline still ends the download."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
        try:
            for _ in range(200):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spy = SpyBackend(real=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(InputImageError) as info:
            await public_loopback_fetcher(spy, timeout_s=0.6).fetch(f"http://127.0.0.1:{port}/drip")
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.code == "remote_timeout"
    assert loop.time() - started < 2.0


@pytest.mark.parametrize(
    ("url", "dialled"),
    [
        ("https://[2606:4700::1111]/x.png", "2606:4700::1111"),
        ("https://1572395042/x.png", PUBLIC),
        ("https://0x5db8d822/x.png", PUBLIC),
        ("https://IMAGES.Example./x.png", PUBLIC),
    ],
)
async def test_public_literals_and_host_spellings_dial_the_checked_address(url: str, dialled: str) -> None:
    spy = SpyBackend()
    resolver = StubResolver({"images.example": [[PUBLIC]]})
    with pytest.raises(InputImageError) as info:
        await fetcher(spy, resolver).fetch(url)
    assert info.value.code == "failed_to_download_image"  # only because the spy never connects
    assert spy.dials == [(dialled, 443)]
