"""Memory goes back to the system after a burst (glibc's malloc_trim, on Linux)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from atelier_core.engine.memory import MemoryReturner, free_heap_bytes, resident_bytes

pytestmark = pytest.mark.anyio

MB = 1024 * 1024


def test_this_platform_can_return_memory() -> None:
    # The project runs on Linux with glibc (CI and the benchmark); elsewhere the
    # returner does nothing and says so.
    assert sys.platform.startswith("linux")
    assert MemoryReturner.available()
    assert resident_bytes() is not None and free_heap_bytes() is not None


async def test_a_burst_freed_by_the_program_is_given_back_and_a_live_one_is_not() -> None:
    returner = MemoryReturner(interval_s=0.02, threshold_bytes=16 * MB)
    watcher = asyncio.create_task(returner.run())
    try:
        await asyncio.sleep(0.05)
        before = resident_bytes()
        assert before is not None
        # ~120 MB in malloc'd blocks (over pymalloc's 512-byte limit), then a small block
        # after them, so free() alone cannot shrink the heap from its top.
        burst = [bytes(2000) + bytes([i % 256]) for i in range(60_000)]
        pin = bytes(3000)
        await asyncio.sleep(0.2)  # in use: nothing to trim
        assert returner.trims == 0
        during = resident_bytes()
        assert during is not None and during - before > 80 * MB
        del burst
        for _ in range(50):
            await asyncio.sleep(0.02)
            if returner.trims:
                break
        await asyncio.sleep(0.05)
        after = resident_bytes()
        assert returner.trims == 1
        assert after is not None and during - after > 80 * MB
        assert len(pin) == 3000
        await asyncio.sleep(0.1)
        assert returner.trims == 1  # nothing new was freed: no second trim
    finally:
        watcher.cancel()
