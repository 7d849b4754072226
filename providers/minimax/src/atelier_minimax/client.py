"""A thin async HTTP client for MiniMax (there is no official Python SDK).

One ``httpx2.AsyncClient`` per provider, created on first use and closed by
:meth:`MiniMaxClient.aclose`. It makes exactly one attempt per call: the core owns the
only retry layer. Transport failures become Atelier errors here, split by whether the
request can have reached MiniMax's generator:

- nothing was answered and the connection failed (refused, reset, closed before any
  header) → :class:`~atelier_core.UpstreamUnavailableError` (retryable);
- no answer within the timeout → :class:`~atelier_core.UpstreamTimeoutError` (not
  retried: the images may have been generated and billed);
- the answer started but broke off → :class:`~atelier_core.UpstreamProtocolError`
  (not retried, for the same reason).

The API key is sent only in the ``Authorization`` header and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from atelier_core import UpstreamProtocolError, UpstreamTimeoutError, UpstreamUnavailableError

from .translate import ENDPOINT, PROVIDER

if TYPE_CHECKING:
    import httpx2

__all__ = ["MAX_ANSWER_BYTES", "MiniMaxClient", "RawAnswer"]

log = structlog.get_logger("atelier.minimax")

# Nine 2048x2048 JPEGs in base64 stay far below this; anything larger is not an answer.
MAX_ANSWER_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """An HTTP answer, read completely: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes


class MiniMaxClient:
    """POSTs JSON to ``{base_url}/v1/image_generation`` with Bearer auth."""

    def __init__(self, *, base_url: str, api_key: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s
        self._http: httpx2.AsyncClient | None = None

    @property
    def url(self) -> str:
        return self.base_url + ENDPOINT

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            import httpx2

            self._http = httpx2.AsyncClient(
                base_url=self.base_url,
                headers={
                    "Authorization": f"Bearer {self._api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": "atelier-minimax/0.1",
                },
                timeout=httpx2.Timeout(self.timeout_s, connect=min(self.timeout_s, 15.0)),
                follow_redirects=False,  # a redirect would carry the key elsewhere
            )
        return self._http

    async def post(self, body: dict[str, Any], *, timeout_s: float | None = None) -> RawAnswer:
        """Send one generation request and read the whole answer (one attempt)."""
        import httpx2

        client = self._client()
        timeout = self.timeout_s if timeout_s is None else min(self.timeout_s, timeout_s)
        request = client.build_request(
            "POST",
            ENDPOINT,
            json=body,
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 15.0)),
        )
        try:
            response = await client.send(request, stream=True)
        except httpx2.TimeoutException as exc:
            if isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout):
                raise UpstreamUnavailableError(
                    f"could not connect to MiniMax at {self.base_url} within {timeout:g}s",
                    fix="check the network and providers.minimax.region / MINIMAX_API_HOST",
                    provider=PROVIDER,
                ) from None
            raise UpstreamTimeoutError(
                f"MiniMax did not answer within {timeout:g}s; the images may still have been "
                "generated and billed, so the request was not resent",
                fix="try again, or raise providers.minimax.timeout_s",
                provider=PROVIDER,
            ) from None
        except httpx2.TransportError as exc:
            raise UpstreamUnavailableError(
                f"the connection to MiniMax at {self.base_url} failed before any answer ({type(exc).__name__})",
                fix="try again in a moment; check the network and providers.minimax.region",
                provider=PROVIDER,
            ) from None
        try:
            body_bytes = await self._read(response, timeout)
        finally:
            await response.aclose()
        headers = {k.lower(): v for k, v in response.headers.items()}
        return RawAnswer(status=response.status_code, headers=headers, body=body_bytes)

    async def _read(self, response: httpx2.Response, timeout: float) -> bytes:
        import httpx2

        trace = response.headers.get("trace-id")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise UpstreamProtocolError(
                        f"MiniMax's answer exceeds {MAX_ANSWER_BYTES:,} bytes; refused",
                        fix="ask for fewer images per call",
                        provider=PROVIDER,
                        request_id=trace,
                    )
                chunks.append(chunk)
        except httpx2.TimeoutException:
            raise UpstreamTimeoutError(
                f"MiniMax's answer stalled mid-transfer (over {timeout:g}s); it may have been "
                "billed, so the request was not resent",
                fix="try again, or raise providers.minimax.timeout_s",
                provider=PROVIDER,
                request_id=trace,
            ) from None
        except httpx2.TransportError as exc:
            raise UpstreamProtocolError(
                f"MiniMax's answer was cut off after {size:,} bytes ({type(exc).__name__}); "
                "it may have been billed, so the request was not resent",
                fix="try again",
                provider=PROVIDER,
                request_id=trace,
            ) from None
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the HTTP client if one was opened."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()
