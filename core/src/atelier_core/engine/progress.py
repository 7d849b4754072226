"""Progress reporting along the call path (monotonic, never fatal)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("atelier.router")


Progress = Callable[[float, str], Awaitable[None]]
Confirm = Callable[[str], Awaitable[bool]]
"""Asks the user to confirm a call (MCP elicitation); True means go ahead."""
#: Progress above this means a request has been sent upstream (a limiter slot was held):
#: from then on the provider may bill. At or above ``SAVING_FRACTION``: verifying and saving.
SENT_FRACTION = 0.1
SAVING_FRACTION = 0.85
PartialSink = Callable[[bytes, int], Awaitable[None]]


class Monotonic:
    """Forward progress only when it grows (MCP requires increasing progress values)."""

    def __init__(self, sink: Progress) -> None:
        self._sink = sink
        self._last = -1.0

    async def __call__(self, fraction: float, message: str) -> None:
        if fraction > self._last:
            self._last = fraction
            await self._sink(fraction, message)


async def report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is None:
        return
    try:
        await progress(max(0.0, min(1.0, fraction)), message)
    except Exception as exc:  # a broken progress channel must never fail the call
        log.debug("progress report failed", error=type(exc).__name__)
