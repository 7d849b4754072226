"""Plugins run behind a guard: nothing they raise stops the server, a blocking step is named.

:func:`guard` wraps the methods the core calls on a loaded provider (on the instance, so
the provider stays what it is). Whatever a provider raises that is not an Atelier error
(a plain exception, ``SystemExit``, ``KeyboardInterrupt``, any ``BaseException``) becomes
a :class:`~atelier_core.plugin.errors.PluginError` naming the provider and its plugin; only
cancellation passes through. Without this, ``SystemExit`` or ``KeyboardInterrupt`` raised
in a task escapes asyncio's task machinery and wedges the event loop.

Each step of a provider coroutine (the synchronous run between two awaits) is timed on
the event loop's thread. A step is the only time a provider can block the loop, so a
long step names its provider exactly. :class:`LoopWatchdog`, a daemon thread, looks at
the steps in progress and logs the culprit while the loop is still blocked; finished
long steps are kept in :data:`BLOCKED` for diagnostics and tests.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from atelier_core.plugin.errors import AtelierError, PluginError

__all__ = [
    "BLOCKED",
    "BLOCKING",
    "BlockedStep",
    "LoopWatchdog",
    "StepTimer",
    "guard",
    "watchdog",
]

log = structlog.get_logger("atelier.plugins")

T = TypeVar("T")

#: async methods the core awaits; sync methods whose crash becomes a refused call
_ASYNC_METHODS = ("run", "submit", "poll", "cancel")
_SYNC_METHODS = ("check", "estimate_cost", "estimate_extra_cost", "cost_from_usage")


@dataclass(frozen=True, slots=True)
class BlockedStep:
    """A provider step that held the event loop longer than the watchdog's threshold."""

    label: str
    seconds: float
    imported: bool  # the step imported modules (a one-off, usually a lazy SDK import)


#: the most recent long steps, newest last (for doctor and tests)
BLOCKED: deque[BlockedStep] = deque(maxlen=64)
#: what the watchdog reported while a step was still blocking: (label, seconds so far)
BLOCKING: deque[tuple[str, float]] = deque(maxlen=64)

# The provider step running on each thread (an event loop runs on one thread):
# thread id -> (label, started at monotonic seconds, modules loaded when it started).
_RUNNING: dict[int, tuple[str, float, int]] = {}


class StepTimer:
    """Drive a coroutine step by step, recording who runs and the longest step.

    ``await StepTimer(coro, label)`` behaves like ``await coro``.
    """

    __slots__ = ("_coro", "label", "longest", "longest_imported")

    def __init__(self, coro: Coroutine[Any, Any, T], label: str) -> None:
        self._coro = coro
        self.label = label
        self.longest = 0.0
        self.longest_imported = False

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        thread = threading.get_ident()
        value: Any = None
        error: BaseException | None = None
        while True:
            outer = _RUNNING.get(thread)
            modules = len(sys.modules)
            started = time.monotonic()
            _RUNNING[thread] = (self.label, started, modules)
            try:
                if error is not None:
                    yielded = coro.throw(error)
                else:
                    yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                took = time.monotonic() - started
                if outer is None:
                    _RUNNING.pop(thread, None)
                else:
                    _RUNNING[thread] = outer
                imported = len(sys.modules) != modules
                if took > self.longest:
                    self.longest, self.longest_imported = took, imported
                _WATCHDOG.finished(self.label, took, imported)
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # delivered into the provider's coroutine
                value, error = None, exc


class LoopWatchdog:
    """Names a provider that blocks the event loop, while it blocks.

    A daemon thread wakes every ``interval_s`` and reports each provider step that has
    run longer than ``threshold_s`` (once per step); when the step ends, its length is
    logged and kept in :data:`BLOCKED`.
    """

    def __init__(self, threshold_s: float = 1.0, interval_s: float = 0.1) -> None:
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self._reported: set[tuple[int, float]] = set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="atelier-loop-watchdog", daemon=True)
                self._thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval_s)
            now = time.monotonic()
            for thread, (label, started, _) in list(_RUNNING.items()):
                key = (thread, started)
                if now - started >= self.threshold_s and key not in self._reported:
                    self._reported.add(key)
                    BLOCKING.append((label, now - started))
                    log.warning(
                        "a provider is blocking the event loop: every request waits until it yields",
                        provider=label,
                        blocked_s=round(now - started, 2),
                        fix="use async clients, await asyncio.sleep, or asyncio.to_thread for blocking work",
                    )
            self._reported = {k for k in self._reported if _RUNNING.get(k[0], (None, None))[1] == k[1]}

    def finished(self, label: str, seconds: float, imported: bool) -> None:
        if seconds < self.threshold_s:
            return
        BLOCKED.append(BlockedStep(label, seconds, imported))
        log.warning(
            "a provider blocked the event loop",
            provider=label,
            blocked_s=round(seconds, 2),
            cause="a first import" if imported else "synchronous work in an async method",
        )


_WATCHDOG = LoopWatchdog()


def watchdog(threshold_s: float | None = None) -> LoopWatchdog:
    """The process's watchdog, started (``threshold_s`` updates its threshold)."""
    if threshold_s is not None:
        _WATCHDOG.threshold_s = threshold_s
    _WATCHDOG.start()
    return _WATCHDOG


def _crash(label: str, method: str, exc: BaseException) -> PluginError:
    what = type(exc).__name__
    if isinstance(exc, SystemExit):
        what = f"SystemExit({exc.code!r})"
    log.error(
        "a provider crashed; the call fails, the server keeps serving",
        provider=label,
        method=method,
        exception=what,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return PluginError(
        f"provider {label} failed in {method}(): it raised {what} (a bug in the plugin; details are in the server log)",
        fix="try another model, or report it to the plugin's author",
    )


def guard(provider: Any, label: str) -> None:
    """Wrap ``provider``'s core-facing methods on the instance (see the module doc)."""
    for name in _ASYNC_METHODS:
        method = getattr(provider, name, None)
        if method is not None and not getattr(method, "__atelier_guarded__", False):
            setattr(provider, name, _guard_async(method, label, name))
    for name in _SYNC_METHODS:
        method = getattr(provider, name, None)
        if method is not None and not getattr(method, "__atelier_guarded__", False):
            setattr(provider, name, _guard_sync(method, label, name))
    reason = provider.unavailable_reason
    if not getattr(reason, "__atelier_guarded__", False):

        @functools.wraps(reason)
        def unavailable_reason(*args: Any, **kwargs: Any) -> str | None:
            try:
                return reason(*args, **kwargs)  # type: ignore[no-any-return]
            except BaseException as exc:  # a crash makes the models unavailable, never the listing fail
                return str(_crash(label, "unavailable_reason", exc))

        unavailable_reason.__atelier_guarded__ = True  # type: ignore[attr-defined]
        provider.unavailable_reason = unavailable_reason


def _guard_async(method: Callable[..., Any], label: str, name: str) -> Callable[..., Any]:
    @functools.wraps(method)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await StepTimer(method(*args, **kwargs), label)
        except (AtelierError, asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: see the module doc
            raise _crash(label, name, exc) from None

    guarded.__atelier_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def _guard_sync(method: Callable[..., Any], label: str, name: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except AtelierError:
            raise
        except BaseException as exc:
            raise _crash(label, name, exc) from None

    guarded.__atelier_guarded__ = True  # type: ignore[attr-defined]
    return guarded
