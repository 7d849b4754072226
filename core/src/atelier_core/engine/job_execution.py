"""Running one job: the manager's state, its runner task, progress, partial images and
terminal records (the base of :class:`~atelier_core.engine.jobs.JobManager`).

A job runs as a task in the manager's task group (:meth:`JobExecution._run`); progress is
kept in memory and written to the row at most every ``progress_write_interval_s`` by a
flusher task, except the step into ``running``, written before the request goes out.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog
from pydantic import BaseModel

from atelier_core.engine.job_run import ActiveJob, JobRun, Runner, default_files_of
from atelier_core.plugin.errors import AtelierError
from atelier_core.settings import JobSettings
from atelier_core.state.jobs import Ending, Job, JobState
from atelier_core.state.store import StateStore

__all__ = ["JobExecution"]

log = structlog.get_logger("atelier.jobs")


class JobExecution:
    """The manager's state and the running of its jobs (see :class:`~atelier_core.engine.jobs.JobManager`)."""

    #: Progress is written to the database at most this often (listeners get every update).
    progress_write_interval_s = 0.5
    #: How often a barrier re-reads jobs owned by other processes.
    poll_interval_s = 0.25

    def __init__(
        self,
        store: StateStore,
        runner: Runner,
        settings: JobSettings | None = None,
        *,
        max_active: int = 1000,
        max_partial_bytes: int = 256 * 1024,
        shrink_partial: Callable[[bytes], tuple[bytes, str]] | None = None,
        files_of: Callable[[dict[str, Any]], list[str]] = default_files_of,
    ) -> None:
        self.store = store
        self.records = store.jobs
        self.settings = settings or JobSettings()
        self._runner = runner
        self.max_active = max_active
        self.max_partial_bytes = max_partial_bytes
        self._shrink_partial = shrink_partial
        self._files_of = files_of
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self._active: dict[str, ActiveJob] = {}
        self._resumable: list[Job] = []  # taken over from a dead owner, polled once running
        self._changed = anyio.Event()
        self._flush_wanted = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    def _notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def _run(
        self,
        job_id: str,
        operation: str,
        request: dict[str, Any],
        context: object = None,
        resume_tasks: dict[str, str] | None = None,
    ) -> None:
        active = self._active[job_id]
        outcome: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        try:
            with anyio.CancelScope() as scope:
                active.scope = scope
                if active.cancel_early:
                    scope.cancel()
                run = JobRun(self, job_id, operation, request, context, resume_tasks)
                active.run = run
                try:
                    result = await self._runner(run)
                    outcome = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
                except AtelierError as exc:
                    error = exc.to_dict()
                except Exception as exc:
                    log.exception("job runner crashed", job_id=job_id)
                    error = {
                        "code": "internal_error",
                        "message": f"the job failed unexpectedly ({type(exc).__name__}); see the server log",
                        "retryable": False,
                    }
            with anyio.CancelScope(shield=True):
                if outcome is not None:
                    await self._finish(job_id, JobState.DONE, "done", outcome=outcome)
                elif error is not None:
                    await self._finish(job_id, JobState.FAILED, f"failed: {error['code']}", error=error)
                # else: cancelled; cancel() already recorded the terminal state.
        finally:
            active.done.set()
            self._active.pop(job_id, None)
            self._notify()

    async def _finish(
        self,
        job_id: str,
        state: JobState,
        message: str,
        *,
        outcome: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        may_be_billed: bool = False,
    ) -> bool:
        """Move an unfinished job to a terminal state; ``False`` if it already was."""
        # Without an outcome, keep the files the job recorded as it saved them.
        files = self._files_of(outcome) if outcome else None
        changed = await self.records.finish(
            job_id,
            Ending(
                state,
                message,
                outcome=outcome,
                error=error,
                files=files,
                may_be_billed=may_be_billed,
            ),
        )
        active = self._active.get(job_id)
        if changed and active is not None:
            active.state = state
        self._notify()
        return bool(changed)

    async def _on_progress(self, job_id: str, fraction: float | None, message: str, stage: JobState | None) -> None:
        active = self._active.get(job_id)
        if active is None or active.state.terminal:
            return
        # Stages only move forward (queued → running → saving).
        order = (JobState.QUEUED, JobState.RUNNING, JobState.SAVING)
        new_state = stage if stage is not None and order.index(stage) > order.index(active.state) else active.state
        for listener in list(active.listeners):
            try:
                await listener(fraction, message)
            except Exception:  # a broken client stream must not fail the job
                log.debug("progress listener failed", job_id=job_id, exc_info=True)
        active.message = message[:300]
        if fraction is not None:
            active.progress = fraction
        entering = new_state is not active.state
        active.state = new_state
        if entering and new_state is JobState.RUNNING:
            active.started_at = time.time()
        active.dirty = True
        if entering and new_state is JobState.RUNNING:
            # Recorded before the request goes out, so that after a crash the job never
            # claims "nothing was billed" for a request the provider may have received.
            # NORMAL sync (survives a process crash, not an instant power loss): an fsync
            # here would sit between the rate limiter and the provider and skew its spacing.
            await self._flush(job_id, active)
        elif entering or time.monotonic() - active.last_write >= self.progress_write_interval_s:
            # Other progress is written by the flusher task; the runner does not wait for
            # it. Readers in this process see the live state anyway.
            self._flush_wanted.set()
        if entering:
            self._notify()

    async def _flusher(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted = anyio.Event()
            for job_id, active in list(self._active.items()):
                if active.dirty and not active.state.terminal:
                    try:
                        await self._flush(job_id, active)
                    except Exception:  # the heartbeat retries; the job itself is unaffected
                        log.exception("could not record job progress", job_id=job_id)

    async def _flush(self, job_id: str, active: ActiveJob, *, durable: bool = False) -> None:
        active.last_write = time.monotonic()
        active.dirty = False
        await self.records.advance(
            job_id,
            state=active.state,
            message=active.message,
            progress=active.progress,
            started_at=active.started_at,
            durable=durable,
        )

    async def _on_partial(self, job_id: str, data: bytes, index: int) -> None:
        active = self._active.get(job_id)
        if active is None or active.state.terminal:
            return
        mime: str | None = None
        blob: bytes | None = data
        if len(data) > self.max_partial_bytes and self._shrink_partial is not None:
            try:
                blob, mime = await anyio.to_thread.run_sync(self._shrink_partial, data)
            except Exception:
                log.debug("partial preview could not be shrunk", job_id=job_id, exc_info=True)
                blob = None
        if blob is not None and len(blob) > self.max_partial_bytes:
            blob = None  # keep the row small; the index still shows progress
        if blob is not None and mime is None:
            mime = _sniff_mime(blob)
        await self.records.set_partial(job_id, blob, mime, index)


def _sniff_mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
