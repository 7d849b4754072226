"""Downloading an image from a URL without becoming an SSRF proxy.

:class:`SafeFetcher` is the only code in Atelier that dials a URL it did not configure
itself. Two modes:

- **Public mode** (``allowed_hosts=None``; caller-supplied ``https://`` inputs when
  ``storage.allow_remote_inputs`` is on). Only ``https``. The host is resolved once and
  *every* address must be public: loopback, private, link-local, CGNAT (100.64/10),
  multicast, reserved, unspecified, documentation ranges and IPv6 forms embedding such
  an IPv4 address (``::ffff:127.0.0.1``, NAT64, 6to4) are refused. Numeric host spellings
  that resolvers accept (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) are
  normalised to the address they mean and judged as such. We ship our own range table
  rather than trust ``ipaddress.is_global`` (wrong before CVE-2024-4032's fix).
- **Allow-list mode** (``allowed_hosts=[...]``; URLs a provider returned, e.g. image
  links on the configured API host). Each entry is an **origin**: scheme, host and port
  must all match (``http://127.0.0.1:8080`` allows neither ``http://127.0.0.1:8081``
  nor ``https://127.0.0.1:8080``). An entry given as a URL keeps its scheme and port (the
  scheme's default port when it names none); a bare ``host`` or ``host:port`` entry
  means ``https`` on that port (443 when none). The listed origin's addresses are not
  checked (loopback or private hosts are legitimate operator configuration).

In both modes: the connection is **pinned** to the address that was validated (the
connection layer never resolves names itself, so a DNS answer that changes between the
check and the connect — rebinding — has no effect); TLS still verifies the certificate
against the original host name (SNI and ``Host`` are unchanged); redirects are followed
by hand, up to ``max_redirects``, and **every hop is re-checked**; credentials in URLs
are refused; proxies from the environment are ignored; the body is streamed and
abandoned as soon as it exceeds ``max_bytes``; one **total deadline** covers resolution,
connection, redirects and the whole body (a server dripping one byte a second cannot
keep us waiting). Query strings are never logged nor echoed in errors (they often carry
signatures).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpx2
import structlog

from atelier_core.plugin.errors import InputImageError, shorten

if TYPE_CHECKING:
    import httpcore2

    from atelier_core.media._pinned import PinnedBackend

__all__ = [
    "AddressPolicy",
    "IPAddress",
    "Resolver",
    "SafeFetcher",
    "is_public_address",
    "origin_entry",
    "parse_host",
]

log = structlog.get_logger("atelier.fetch")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``async (host, port) -> [address, ...]``; the default uses the event loop's getaddrinfo."""
AddressPolicy = Callable[[IPAddress], bool]
"""``(address) -> allowed``; the default is :func:`is_public_address`."""

_V4_BLOCKED = [ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)]  # fmt: skip
_V6_BLOCKED = [ipaddress.IPv6Network(n) for n in (
    "::/96",            # unspecified, loopback, IPv4-compatible (deprecated)
    "100::/64",         # discard
    "2001::/23",        # IETF protocol assignments (Teredo, ORCHID, benchmarking …)
    "2001:db8::/32",    # documentation
    "3fff::/20",        # documentation
    "5f00::/16",        # SRv6 SIDs
    "64:ff9b:1::/48",   # local-use NAT64
    "fc00::/7",         # unique local
    "fe80::/10",        # link-local
    "fec0::/10",        # site-local (deprecated)
    "ff00::/8",         # multicast
)]  # fmt: skip
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_REDIRECTS = {301, 302, 303, 307, 308}
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)
_CHUNK = 64 * 1024
_REMOTE_FIX = "download the image yourself and pass it as a local file path, a data: URL or base64"


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _SIX_TO_FOUR:
            return is_public_address(ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF))
        if ip.scope_id or ip not in _V6_GLOBAL_UNICAST:
            return False
        return not any(ip in net for net in _V6_BLOCKED)
    return not any(ip in net for net in _V4_BLOCKED)


def _loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a BSD ``inet_aton`` would read from ``host`` (``127.1``, ``0x7f.1``,
    ``0177.0.0.1``, ``2130706433``), or None when the host is not numeric at all.
    Raises ValueError for numeric-looking hosts that are not valid addresses."""
    if not _NUMERIC_HOST.match(host):
        return None
    parts = host.rstrip(".").split(".")
    values = []
    for part in parts:
        if part.lower().startswith("0x"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            values.append(int(part, 8))  # ValueError for 08, 09: not an address
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        raise ValueError(host)
    number = 0
    for v in head:
        number = number * 256 + v
    number = (number << (8 * (4 - len(head)))) + last
    return ipaddress.IPv4Address(number)


def parse_host(host: str) -> tuple[str, IPAddress | None]:
    """Normalise a URL host: lower case, no trailing dot, IDNA-encoded; and the IP
    address it denotes when it is a literal (in any spelling). Raises ValueError."""
    host = host.strip("[]")
    try:
        return host, ipaddress.ip_address(host)
    except ValueError:
        pass
    name = host.rstrip(".").lower()
    if not name:
        raise ValueError("empty host")
    literal = _loose_ipv4(name)
    if literal is not None:
        return str(literal), literal
    if re.fullmatch(r"0x[0-9a-f]*|[0-9]+", name.rsplit(".", 1)[-1]):
        # WHATWG: a host whose last label is a number is an IPv4 address or invalid.
        raise ValueError(f"invalid numeric host {name!r}")
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", name):
        raise ValueError(f"invalid host {name!r}")
    return name, None


def _display(url: str) -> str:
    """A URL safe to show: no credentials, no query string or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        shown = f"{parts.scheme}://{host}{port}{parts.path}"
        if parts.query:
            shown += "?…"
    except ValueError:
        shown = url.split("?", 1)[0].split("#", 1)[0]
    return shorten(shown, 160)


_DEFAULT_PORT = {"http": 80, "https": 443}


def origin_entry(entry: str) -> tuple[str, str, int]:
    """An allow-list entry as ``(scheme, host, port)``: a URL keeps its scheme and port
    (the scheme's default when it names none) and drops any ``user:password@``; a bare
    ``host`` or ``host:port`` is ``https`` (port 443 when none is given). Raises
    ValueError for anything else."""
    text = entry.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT:
        raise ValueError(f"not an http(s) origin: {_display(entry)}")
    host = parse_host(parts.hostname or "")[0]
    return scheme, host, parts.port or _DEFAULT_PORT[scheme]


def _origins(entries: Iterable[str]) -> set[tuple[str, str, int]]:
    """The valid entries of an allow-list as origins (an invalid entry allows nothing)."""
    found: set[tuple[str, str, int]] = set()
    for entry in entries:
        try:
            found.add(origin_entry(entry))
        except (ValueError, UnicodeError):
            log.warning("allow-list entry ignored: not an http(s) origin", entry=_display(entry))
    return found


def _origin_text(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


async def _default_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; one verifying context is shared.
    return httpx2.create_ssl_context(trust_env=False)


class SafeFetcher:
    """Fetch image bytes from URLs under the rules in the module docstring.

    ``resolver``, ``address_policy``, ``network_backend`` and ``schemes`` are seams for
    tests (stub DNS, treat loopback as public, spy on connections, allow ``http``);
    production uses the defaults.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        max_bytes: int,
        max_redirects: int = 3,
        resolver: Resolver | None = None,
        address_policy: AddressPolicy | None = None,
        network_backend: httpcore2.AsyncNetworkBackend | None = None,
        schemes: Sequence[str] = ("https",),
        user_agent: str = "atelier-mcp",
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._resolver = resolver or _default_resolver
        self._policy = address_policy or is_public_address
        self._backend = network_backend
        self._schemes = tuple(schemes)
        self._user_agent = user_agent

    async def fetch(
        self,
        url: str,
        *,
        allowed_hosts: Iterable[str] | None = None,
        parameter: str = "url",
        max_bytes: int | None = None,
    ) -> bytes:
        """The body of ``url`` (after checked redirects). Raises InputImageError with
        code ``url_not_allowed``, ``failed_to_download_image``, ``image_file_too_large``
        or ``remote_timeout``. ``max_bytes`` lowers the fetcher's size cap for this call."""
        allowed = None if allowed_hosts is None else _origins(allowed_hosts)
        # httpcore2/h11 load here, on the first fetch, not at server start-up.
        import httpcore2

        from atelier_core.media._pinned import PinnedBackend, PinnedTransport

        backend = PinnedBackend(self._backend or httpcore2.AnyIOBackend())
        shown = _display(url)
        try:
            with anyio.fail_after(self.timeout_s):
                async with httpx2.AsyncClient(
                    transport=PinnedTransport(backend),
                    trust_env=False,
                    follow_redirects=False,
                    timeout=httpx2.Timeout(self.timeout_s),
                ) as client:
                    cap = self.max_bytes if max_bytes is None else min(self.max_bytes, max_bytes)
                    return await self._fetch(client, backend, url, allowed, parameter, cap)
        except TimeoutError:
            raise InputImageError(
                f"{parameter}: downloading {shown} took longer than {self.timeout_s:g} s",
                code="remote_timeout",
                parameter=parameter,
                value=shown,
                fix=_REMOTE_FIX,
            ) from None

    def _refuse(self, parameter: str, url: str, why: str, *, allowed: Any = None) -> InputImageError:
        return InputImageError(
            f"{parameter}: the URL {_display(url)} is not allowed: {why}",
            code="url_not_allowed",
            parameter=parameter,
            value=_display(url),
            allowed=allowed,
            fix=_REMOTE_FIX,
        )

    def _failed(self, parameter: str, url: str, why: str) -> InputImageError:
        return InputImageError(
            f"{parameter}: could not download {_display(url)}: {why}",
            code="failed_to_download_image",
            parameter=parameter,
            value=_display(url),
            fix=_REMOTE_FIX,
        )

    async def _check(
        self, url: str, allowed: set[tuple[str, str, int]] | None, parameter: str
    ) -> tuple[str, int, str, str]:
        """Validate one hop; returns (normalised host, port, pinned address, raw host)."""
        if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in url):
            raise self._refuse(parameter, url, "it contains whitespace, control characters or backslashes")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise self._refuse(parameter, url, "it is not a valid URL") from None
        scheme = parts.scheme.lower()
        schemes = ("http", "https") if allowed is not None else self._schemes
        if scheme not in schemes:
            raise self._refuse(
                parameter, url, f"scheme {scheme or '(none)'}:// is not accepted", allowed=[f"{s}://" for s in schemes]
            )
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise self._refuse(parameter, url, "URLs with credentials (user:password@) are refused")
        try:
            host, literal = parse_host(parts.hostname or "")
        except (ValueError, UnicodeError):
            raise self._refuse(parameter, url, "the host name is invalid") from None
        port = port or _DEFAULT_PORT[scheme]
        if allowed is not None and (scheme, host, port) not in allowed:
            raise self._refuse(
                parameter,
                url,
                "its origin (scheme, host and port) is not one this provider may serve images from",
                allowed=sorted(_origin_text(o) for o in allowed),
            )
        if literal is not None:
            addresses = [literal]
        else:
            try:
                answers = await self._resolver(host, port)
                addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
            except (OSError, ValueError):
                raise self._failed(parameter, url, "the host name does not resolve") from None
            if not addresses:
                raise self._failed(parameter, url, "the host name does not resolve")
        if allowed is None:
            for address in addresses:
                if not self._policy(address):
                    raise self._refuse(
                        parameter,
                        url,
                        "it points to a private, loopback, link-local or otherwise non-public address",
                    )
        return host, port, str(addresses[0]), (parts.hostname or "").lower()

    async def _fetch(
        self,
        client: httpx2.AsyncClient,
        backend: PinnedBackend,
        url: str,
        allowed: set[tuple[str, str, int]] | None,
        parameter: str,
        max_bytes: int,
    ) -> bytes:
        current = url
        for hop in range(self.max_redirects + 1):
            host, port, address, raw_host = await self._check(current, allowed, parameter)
            # Keyed by both spellings of the host the connection layer may be handed.
            backend.pins[(host, port)] = address
            backend.pins[(raw_host, port)] = address
            log.debug("fetch", url=_display(current), hop=hop, address=address)
            try:
                request = client.build_request(
                    "GET", current, headers={"accept-encoding": "identity", "user-agent": self._user_agent}
                )
                response = await client.send(request, stream=True)
            except httpx2.TimeoutException:
                raise TimeoutError from None
            except httpx2.HTTPError as exc:
                raise self._failed(parameter, current, f"{type(exc).__name__}") from None
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise self._failed(parameter, current, f"HTTP {response.status_code} without a Location")
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise self._failed(parameter, current, f"the server answered HTTP {response.status_code}")
                return await self._read_body(response, current, parameter, max_bytes)
            finally:
                await response.aclose()
        raise self._failed(parameter, url, f"more than {self.max_redirects} redirects")

    async def _read_body(self, response: httpx2.Response, url: str, parameter: str, max_bytes: int) -> bytes:
        too_large = InputImageError(
            f"{parameter}: the image at {_display(url)} is larger than the limit of {max_bytes:,} bytes",
            code="image_file_too_large",
            parameter=parameter,
            value=_display(url),
            fix="use a smaller image, or raise storage.remote_max_bytes",
        )
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise too_large
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding not in ("identity", ""):
            # We asked for identity; decoding a compressed body could expand without bound.
            raise self._failed(parameter, url, f"the server sent a {encoding}-compressed body")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_raw(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                chunks.append(chunk)
        except httpx2.TimeoutException:
            raise TimeoutError from None
        except httpx2.HTTPError as exc:
            raise self._failed(parameter, url, f"the download broke off ({type(exc).__name__})") from None
        return b"".join(chunks)
