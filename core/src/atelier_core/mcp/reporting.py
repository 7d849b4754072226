"""Progress notifications for one tool call, as a client can rely on them.

The pipeline reports fractions from several places (stages, a provider's partial
images, a background job's runner task). :class:`ProgressReporter` turns them into
notifications that are rounded (no ``0.10750000000000001``), never go backwards, and all
go out before the call's result: :meth:`ProgressReporter.close` waits for a send in
flight and drops anything reported later (a job runner may still report after the
call handed back).
"""

from __future__ import annotations

from typing import Protocol

import anyio

__all__ = ["ProgressReporter", "ProgressSink"]


class ProgressSink(Protocol):
    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None: ...


class ProgressReporter:
    """Rounded, monotonic progress for one request; nothing after :meth:`close`."""

    def __init__(self, sink: ProgressSink, *, digits: int = 3) -> None:
        self._sink = sink
        self._digits = digits
        self._last = -1.0
        self._closed = False
        self._lock = anyio.Lock()
        self.sent: list[float] = []

    async def __call__(self, fraction: float | None, message: str) -> None:
        if fraction is None:  # stage-only updates carry no fraction
            return
        value = round(min(1.0, max(0.0, fraction)), self._digits)
        async with self._lock:
            if self._closed or value < self._last:
                return
            self._last = value
            self.sent.append(value)
            await self._sink.report_progress(value, 1.0, message)

    async def close(self) -> None:
        """Wait for a notification being sent, then accept no more (the result follows)."""
        async with self._lock:
            self._closed = True
