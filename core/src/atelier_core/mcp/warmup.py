"""Build what the first call needs while the client is still reading the tool list.

Answering ``initialize`` and ``tools/list`` needs only the tool schemas, so the server
starts without the registry (plugins, catalogues, provider settings), the vendor SDKs
or Pillow. :class:`WarmUp` builds them in a worker thread once the tool list has been
answered — or a moment after ``initialize`` for a client that does not list tools — so
the start stays short and the first call does not pay for the imports either
(:meth:`atelier_core.engine.pipeline.Pipeline.warm_up`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from atelier_core.engine.pipeline import Pipeline

__all__ = ["WarmUp"]

log = structlog.get_logger("atelier.server")

#: After ``tools/list`` is answered: long enough for the answer to be written first.
AFTER_LIST_S = 0.02
#: After ``initialize``, for clients that never list tools (they cached the list).
AFTER_INITIALIZE_S = 1.0


class WarmUp:
    """Runs :meth:`Pipeline.warm_up` once, in a worker thread, after the handshake."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.task: asyncio.Future[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().run_in_executor(None, self._run)

    def _run(self) -> None:
        try:
            self._pipeline.warm_up()
        except Exception as exc:  # the first call reports it, with its context
            log.debug("warm-up failed", error=f"{type(exc).__name__}: {exc}")

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: start the warm-up after the handshake."""
        result = await call_next(ctx)
        if self.task is None and ctx.method in ("tools/list", "initialize"):
            delay = AFTER_LIST_S if ctx.method == "tools/list" else AFTER_INITIALIZE_S
            asyncio.get_running_loop().call_later(delay, self.start)
        return result
