"""Give memory back to the system after a burst of calls.

A burst of large answers (20 or 100 images at once: megabytes of base64 text, the
decoded bytes and a decoded frame each) grows the heap. CPython frees those objects when
the burst is over, but glibc's ``malloc`` keeps the freed pages of its arenas (the worker
threads each get one) for reuse, so the process's resident size stays at the burst's
peak for as long as it runs: measured 280-300 MB five seconds after a burst of 100
1024² images against ~100 MB for a bare server (``bench/``, ``docs/performance.md``).

:func:`malloc_trim` hands the free pages of every arena back to the kernel. The
:class:`MemoryReturner` calls it when glibc reports that its arenas hold much free
memory (``mallinfo2``) — that is, after a burst, never in the middle of one.
Elsewhere than glibc (musl, macOS, Windows) there is nothing to call and it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

__all__ = ["MemoryReturner", "free_heap_bytes", "malloc_trim", "resident_bytes"]

log = structlog.get_logger("atelier.memory")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallinfo2.argtypes = []
        libc.mallinfo2.restype = _MallInfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return None
    return libc


def malloc_trim() -> bool:
    """Return free heap pages to the kernel (glibc). True when glibc released any.

    ctypes releases the GIL for the call, so other threads go on meanwhile.
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def free_heap_bytes() -> int | None:
    """Bytes malloc holds free (freed by the program, kept by glibc), or None off glibc."""
    libc = _libc()
    return int(libc.mallinfo2().fordblks) if libc is not None else None


def resident_bytes() -> int | None:
    """The process's resident set size (Linux ``/proc/self/statm``), else None."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class MemoryReturner:
    """Trims the heap when a burst has left much of it free.

    Every ``interval_s`` it asks glibc how many bytes its arenas hold free (freed by the
    program, not yet given back). When that grew by more than ``threshold_bytes`` since
    the last trim — the objects of a burst have been freed — it calls
    :func:`malloc_trim` in a worker thread. In the middle of a
    burst that memory is in use, not free, so nothing is trimmed then.
    """

    def __init__(self, *, interval_s: float = 1.0, threshold_bytes: int = 32 * 1024 * 1024) -> None:
        self.interval_s = interval_s
        self.threshold_bytes = threshold_bytes
        self.trims = 0

    @staticmethod
    def available() -> bool:
        return _libc() is not None

    async def run(self) -> None:
        """Watch until cancelled (a task for the server's lifetime)."""
        if not self.available():
            return
        # Trimmed chunks still count as free (their pages are handed back, the chunks
        # stay): trim again only when that much more has been freed since.
        floor = free_heap_bytes() or 0
        while True:
            await anyio.sleep(self.interval_s)
            free = free_heap_bytes() or 0
            floor = min(floor, free)
            if free - floor > self.threshold_bytes:
                floor = free
                before = resident_bytes()
                await anyio.to_thread.run_sync(malloc_trim)
                self.trims += 1
                after = resident_bytes()
                log.debug(
                    "memory returned after a burst",
                    free_mb=free >> 20,
                    rss_before_mb=None if before is None else before >> 20,
                    rss_after_mb=None if after is None else after >> 20,
                )
