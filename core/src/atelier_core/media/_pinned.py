"""The pinned connection layer of :mod:`atelier_core.media.fetch`, imported on the first fetch.

httpcore2 and h11 cost ~30 ms to import and most server runs never download a URL, so
they stay out of start-up (see docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

from atelier_core.media.fetch import _ssl_context

__all__ = ["PinnedBackend", "PinnedTransport"]


class PinnedBackend(httpcore2.AsyncNetworkBackend):
    """The connection layer: dials only (host, port) pairs validated for this fetch,
    always to the validated address; it never resolves a name."""

    def __init__(self, inner: httpcore2.AsyncNetworkBackend) -> None:
        self.inner = inner
        self.pins: dict[tuple[str, int], str] = {}

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        address = self.pins.get((host.strip("[]").lower(), port))
        if address is None:
            raise httpcore2.ConnectError(f"connection to unvalidated host {host!r} refused")
        return await self.inner.connect_tcp(
            address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, backend: PinnedBackend) -> None:
        ssl_context = _ssl_context()
        super().__init__(verify=ssl_context, trust_env=False, http1=True, http2=False)
        # httpx2's transport has no network_backend parameter; the pool it wraps does.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            network_backend=backend,
        )
