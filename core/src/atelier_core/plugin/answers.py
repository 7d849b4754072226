"""Bounded vendor answers: an HTTP transport that stops reading at the call's limit.

A vendor SDK reads an HTTP answer whole before it parses the JSON and decodes the base64
images inside it; an answer of a valid image followed by 120 MB of junk was read, parsed
and decoded before anything could refuse it. The core knows, for each upstream call,
the most its answer can take (:meth:`~atelier_core.plugin.types.ImageRequest.max_image_bytes`
per image, base64-encoded, plus room for the JSON around it) and sets it in
:data:`answer_limit` while the provider runs. :func:`bounded_transport` — give it to the
SDK's HTTP client — refuses an answer whose ``Content-Length`` is larger, and abandons
a body that grows past it while streaming, with
:class:`~atelier_core.plugin.errors.UpstreamProtocolError` (``upstream_answer_too_large``,
not retried: the call may have been billed). Outside a call (no limit set) it is a plain
transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from atelier_core.plugin.errors import UpstreamProtocolError

if TYPE_CHECKING:
    import httpx2

__all__ = ["answer_limit", "answer_limit_for", "bounded_transport"]

#: The most bytes the HTTP answer of the upstream call being made may take (None: no limit).
answer_limit: ContextVar[int | None] = ContextVar("atelier_answer_limit", default=None)

_JSON_ROOM = 1024 * 1024


def answer_limit_for(images: int, max_image_bytes: int) -> int:
    """The answer limit for ``images`` images of at most ``max_image_bytes`` each:
    their base64 text plus room for the JSON (usage, revised prompts, text parts)."""
    return images * 4 * -(-max_image_bytes // 3) + _JSON_ROOM


def _too_large(size: int, limit: int, host: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"the answer from {host} is {size:,} bytes or more, more than the {limit:,} bytes the requested "
        "images can take; it was not read further, parsed or decoded",
        code="upstream_answer_too_large",
        retryable=False,
        fix="do not retry blindly (the call may have been billed); report it to the provider, or ask "
        "for a smaller size",
    )


def bounded_transport(inner: Any = None, **transport_options: Any) -> httpx2.AsyncBaseTransport:
    """An ``httpx2`` transport enforcing :data:`answer_limit` on response bodies
    (``inner``: the transport to wrap; by default ``httpx2.AsyncHTTPTransport`` with
    ``transport_options``)."""
    import httpx2

    base = inner if inner is not None else httpx2.AsyncHTTPTransport(**transport_options)

    class _Capped(httpx2.AsyncByteStream):
        def __init__(self, stream: Any, limit: int, host: str) -> None:
            self._stream = stream
            self._limit = limit
            self._host = host

        async def __aiter__(self) -> AsyncIterator[bytes]:
            size = 0
            async for chunk in self._stream:
                size += len(chunk)
                if size > self._limit:
                    raise _too_large(size, self._limit, self._host)
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    class _Bounded(httpx2.AsyncBaseTransport):
        inner = base  # the wrapped transport

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            response = await base.handle_async_request(request)
            limit = answer_limit.get()
            if limit is None:
                return response
            host = request.url.host
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                await response.aclose()
                raise _too_large(int(declared), limit, host)
            response.stream = _Capped(response.stream, limit, host)
            return response

        async def aclose(self) -> None:
            await base.aclose()

    return _Bounded()
