"""Background jobs: durable, restart-safe, at most once.

Every image call can run as a *job*: a row in the state database (table ``jobs``) plus
a task in this process that runs the call. The :class:`JobManager` guarantees:

- **Durable before visible.** :meth:`JobManager.submit` returns only after the row is
  committed (``synchronous=FULL``), so a job id a client holds always resolves.
- **Unguessable ids.** 128 random bits (``secrets.token_urlsafe(16)``).
- **At most once, failing visibly.** A job is never re-run. When the process that owned
  a job dies, the job ends as ``failed`` with code ``interrupted`` — at the next start
  when the owner's pid is gone from this host, otherwise once the owner's *lease* runs
  out. Owners renew leases by heartbeat, so a second live server process sharing the
  database never takes over (or kills) the first one's jobs.
- **Terminal states are final.** ``done``, ``failed`` and ``cancelled`` never change; a
  late cancel is a no-op that says so.
- **Cancelling** a ``queued`` job prevents the provider call; cancelling a ``running``
  one stops waiting for it and records that the provider may still bill
  (``may_be_billed``). A job owned by another process is cancelled by that process
  within one heartbeat.
- **Retention.** Finished jobs older than ``jobs.retention_days`` are pruned; their
  image files are deleted only with ``jobs.delete_files_on_prune``.

States: ``queued`` (accepted, waiting for a provider slot) → ``running`` (the provider
call is in flight) → ``saving`` (verifying and writing files) → ``done`` | ``failed`` |
``cancelled``. Synchronous calls run through the same machinery (origin ``call``,
hidden from listings) so that a call still running after ``jobs.handoff_after_s`` can be
*handed off*: the caller gets the job id while the same task keeps running — the
request is never sent twice.

The manager knows nothing of MCP: it owns its *runner* (:func:`pipeline_runner` runs a
job's stored plan through the pipeline) and stores what it returns through
:class:`~atelier_core.state.jobs.JobStore`, the only code that touches the ``jobs`` table.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog
from pydantic import BaseModel

from atelier_core.engine.library import origin
from atelier_core.engine.plan import CallPlan, Plan
from atelier_core.engine.progress import SAVING_FRACTION, SENT_FRACTION
from atelier_core.identity import acting_as, current_principal
from atelier_core.media import images as imaging
from atelier_core.plugin.errors import AtelierError, NotFoundError, RequestError, shorten
from atelier_core.settings import JobSettings
from atelier_core.state.jobs import (
    Ending,
    Job,
    JobState,
    KeyTaken,
    Lease,
    Origin,
    new_job_id,
    request_fingerprint,
)
from atelier_core.state.store import StateStore

__all__ = [
    "JobManager",
    "JobRun",
    "Runner",
    "build_jobs",
    "default_files_of",
    "pipeline_runner",
]

if TYPE_CHECKING:
    from atelier_core.engine.outcome import CallOutcome
    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.engine.sessions import SessionManager

log = structlog.get_logger("atelier.jobs")


def _saved_before(files: Sequence[str]) -> str:
    images = [f for f in files if not f.endswith(".json")]
    if not images:
        return ""
    return f" {len(images)} image(s) were saved before it stopped: {', '.join(images)}."


ProgressListener = Callable[[float | None, str], Awaitable[None]]


class JobRun:
    """What a runner gets for one job: its request and ways to report progress."""

    def __init__(
        self,
        manager: JobManager,
        job_id: str,
        operation: str,
        request: dict[str, Any],
        context: object = None,
        resume_tasks: dict[str, str] | None = None,
    ) -> None:
        self._manager = manager
        self.job_id = job_id
        self.operation = operation
        self.request = request
        #: What the submitter handed over in memory with the request (the pipeline's
        #: :class:`~atelier_core.engine.plan.Plan`, inputs already read); not stored.
        self.context = context
        #: A queue-based vendor's task ids (per batch) from before a restart: poll, do not submit.
        self.resume_tasks: dict[int, str] = {int(k): v for k, v in (resume_tasks or {}).items()}
        #: True once a vendor task id is recorded: at shutdown the job is left to resume.
        self.has_vendor_task = bool(self.resume_tasks)
        #: True while the server stops with this job kept for resuming: the vendor task
        #: is then not cancelled.
        self.keeping = False

    async def vendor_task(self, batch: int, task_id: str) -> None:
        """Record a queue-based vendor's task id for a batch (durably, before polling)."""
        await self._manager.records.set_vendor_task(self.job_id, batch, task_id)
        self.has_vendor_task = True

    async def progress(self, fraction: float | None, message: str, *, stage: JobState | None = None) -> None:
        """Report progress, optionally entering a new ``stage`` (see :meth:`stage`)."""
        if stage is not None and stage not in (JobState.RUNNING, JobState.SAVING):
            raise ValueError(f"a runner may only enter running or saving, not {stage}")
        await self._manager._on_progress(self.job_id, fraction, message, stage)

    async def stage(self, state: JobState, message: str | None = None) -> None:
        """Enter ``running`` (a request is being sent: from now on the provider may bill)
        or ``saving`` (verifying and writing files). A job stays ``queued`` until then."""
        await self.progress(None, message or state.value, stage=state)

    async def partial(self, data: bytes, index: int = 0) -> None:
        """Record the latest streamed partial image (bounded; older ones are dropped)."""
        await self._manager._on_partial(self.job_id, data, index)

    async def saved(self, path: str) -> None:
        """Record a file the job has published (durably), so a crash later in the same
        job still reports it instead of asking for the whole call again."""
        await self._manager.records.add_file(self.job_id, path)


Runner = Callable[[JobRun], Awaitable[BaseModel | dict[str, Any]]]
"""Runs one job and returns its outcome (a JSON round-trippable model or dict)."""


@dataclass
class _Active:
    """This process's live view of a job it owns."""

    state: JobState
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    listeners: list[ProgressListener] = field(default_factory=list)
    last_write: float = 0.0
    cancel_early: bool = False
    message: str | None = None
    progress: float | None = None
    started_at: float | None = None
    dirty: bool = False  # message/progress newer than the row (writes are throttled)
    run: JobRun | None = None


def default_files_of(outcome: dict[str, Any]) -> list[str]:
    """The files a call outcome wrote: ``path`` and ``sidecar`` of each saved image."""
    files: list[str] = []
    images = outcome.get("images")
    if isinstance(images, list):
        for image in images:
            if isinstance(image, dict):
                for key in ("path", "sidecar"):
                    value = image.get(key)
                    if isinstance(value, str) and value:
                        files.append(value)
    return files


#: Owner tokens of the managers alive in this process (several only in tests).
_LIVE_OWNERS: set[str] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class JobManager:
    """Runs and records background jobs. Use as ``async with manager.running(): ...``."""

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
        self._active: dict[str, _Active] = {}
        self._resumable: list[Job] = []  # taken over from a dead owner, polled once running
        self._changed = anyio.Event()
        self._flush_wanted = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobManager]:
        """Recover abandoned jobs, prune old ones, then run jobs until the block exits.

        On exit every job this process still runs is cancelled and recorded as
        ``failed: interrupted`` (the server is stopping; the job is not re-run later).
        """
        if self._tg is not None:  # already running (a second MCP session): share it
            yield self
            return
        await self.store.ready()
        _LIVE_OWNERS.add(self.owner)
        try:
            await self.recover()
            await self.prune()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._start_resumable()
                tg.start_soon(self._maintenance)
                tg.start_soon(self._flusher)
                try:
                    yield self
                finally:
                    self._tg = None
                    with anyio.CancelScope(shield=True):
                        await self._interrupt_own("the server stopped while this job was unfinished")
                    tg.cancel_scope.cancel()
        finally:
            _LIVE_OWNERS.discard(self.owner)

    async def _maintenance(self) -> None:
        lease = max(self.settings.lease_s, 0.3)
        last_prune = time.monotonic()
        while True:
            await anyio.sleep(lease / 3)
            try:
                await self._heartbeat()
                await self.recover()
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    await self.prune()
            except Exception:  # keep the heartbeat alive through a transient DB error
                log.exception("job maintenance failed; retrying at the next heartbeat")

    def _notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    # -- submitting and running ----------------------------------------------------

    async def submit(
        self,
        operation: str,
        request: dict[str, Any] | BaseModel,
        *,
        origin: Origin = "job",
        idempotency_key: str | None = None,
        context: object = None,
        identity: dict[str, Any] | None = None,
    ) -> Job:
        """Record a job durably, start it, and return it (state ``queued``).

        With ``idempotency_key``, a key seen before with the same request returns that
        earlier job (``job.reused``) and sends nothing; with a different request it is
        refused (``idempotency_conflict``). Keys are remembered as long as their job.
        ``identity``: what makes two requests "the same" when it is not the stored request
        itself (an edit-session turn: the caller's arguments, not the resolved plan, which
        changes once the earlier turn has been recorded).
        """
        if self._tg is None:
            raise RuntimeError("JobManager.submit needs `async with manager.running()`")
        if isinstance(request, BaseModel):
            request = request.model_dump(mode="json")
        fingerprint = request_fingerprint(operation, identity or request) if idempotency_key else None
        if idempotency_key:
            earlier = await self._by_key(idempotency_key, operation, fingerprint)
            if earlier is not None:
                return earlier
        if len(self._active) >= self.max_active:
            raise AtelierError(
                f"this server already has {len(self._active)} unfinished jobs (the limit)",
                code="jobs_busy",
                retryable=True,
                retry_after_s=5.0,
                fix="wait for some jobs to finish (get_jobs with wait_s) and submit again",
            )
        now = time.time()
        job_id = new_job_id()
        try:
            await self.records.insert(
                job_id=job_id,
                operation=operation,
                origin=origin,
                message="waiting for a provider slot",
                request=request,
                owner=self.owner,
                owner_host=self.host,
                owner_pid=self.pid,
                lease_until=now + self.settings.lease_s,
                now=now,
                idempotency=(idempotency_key, fingerprint or "") if idempotency_key else None,
                principal=current_principal(),
            )
        except KeyTaken:
            # Another call with the same key committed first (the primary key decided).
            earlier = await self._by_key(idempotency_key or "", operation, fingerprint)
            if earlier is None:
                raise RuntimeError("an idempotency key was taken, then vanished") from None
            return earlier
        self._active[job_id] = _Active(state=JobState.QUEUED)
        self._tg.start_soon(self._run, job_id, operation, request, context)
        log.info("job submitted", job_id=job_id, operation=operation, origin=origin)
        return Job(
            id=job_id,
            operation=operation,
            origin=origin,
            state=JobState.QUEUED,
            message="waiting for a provider slot",
            request=request,
            owner=self.owner,
            principal=current_principal(),
            created_at=now,
            updated_at=now,
        )

    async def knows_key(self, key: str) -> bool:
        """True when a job holds idempotency ``key`` (a repeat will get that job)."""
        return await self.store.idempotency.find(key, principal=current_principal()) is not None

    async def _by_key(self, key: str, operation: str, fingerprint: str | None) -> Job | None:
        found = await self.store.idempotency.find(key, principal=current_principal())
        if found is None:
            return None
        job_id = found.job_id
        if found.fingerprint != fingerprint:
            raise RequestError(
                f"idempotency_key {shorten(key)!s} was already used for a different request (job {job_id})",
                code="idempotency_conflict",
                parameter="idempotency_key",
                value=key,
                fix="use a new idempotency_key for a new request, or repeat the original "
                "request exactly to get its result",
            )
        job = await self.get(job_id)
        log.info("idempotent repeat: returning the earlier job", job_id=job_id)
        return job.model_copy(update={"reused": True})

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

    async def _flush(self, job_id: str, active: _Active, *, durable: bool = False) -> None:
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

    # -- reading -------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """One job; :class:`NotFoundError` if unknown, pruned or malformed."""
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        """Jobs in the order asked; unknown ids raise :class:`NotFoundError`."""
        unique = list(dict.fromkeys(job_ids))
        if not unique:
            return []
        # Only the current principal's: another's job is "no job", as if it never existed.
        found = await self.records.get_many(unique, principal=current_principal())
        for job_id, job in found.items():
            active = self._active.get(job_id)
            if active is not None and not job.terminal and not active.state.terminal:
                # This process runs it: its in-memory stage is fresher than the row.
                found[job_id] = job.model_copy(
                    update={
                        "state": active.state,
                        "message": active.message or job.message,
                        "progress": active.progress if active.progress is not None else job.progress,
                    }
                )
        missing = [job_id for job_id in unique if job_id not in found]
        if missing:
            raise NotFoundError(
                f"no job {', '.join(repr(m[:60]) for m in missing)}: it never existed on this "
                "server or was pruned after its retention period",
                parameter="job_ids",
                value=missing[0],
                fix="call get_jobs without job_ids to list recent jobs",
            )
        return [found[job_id] for job_id in unique]

    async def recent(self, *, limit: int = 20, include_finished: bool = True) -> list[Job]:
        """Recent jobs, newest first (synchronous calls that were not handed off excluded)."""
        return await self.records.recent(
            limit=max(1, min(limit, 200)), include_finished=include_finished, principal=current_principal()
        )

    async def wait(self, job_ids: Sequence[str], timeout_s: float) -> list[Job]:
        """The barrier: return when every job is terminal or ``timeout_s`` has passed."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            changed = self._changed
            jobs = await self.get_many(job_ids)
            remaining = deadline - time.monotonic()
            if all(job.terminal for job in jobs) or remaining <= 0:
                return jobs
            foreign = any(not job.terminal and job.id not in self._active for job in jobs)
            with anyio.move_on_after(min(remaining, self.poll_interval_s) if foreign else remaining):
                await changed.wait()

    # -- synchronous calls and hand-off --------------------------------------------

    async def call(
        self,
        operation: str,
        request: dict[str, Any] | BaseModel,
        *,
        handoff_after_s: float | None = None,
        on_progress: ProgressListener | None = None,
        idempotency_key: str | None = None,
        context: object = None,
        identity: dict[str, Any] | None = None,
    ) -> Job:
        """Run a call as a hidden job and wait for it, handing it off after a while.

        Returns the terminal job, or — after ``handoff_after_s`` (default
        ``jobs.handoff_after_s``; ``0`` = wait forever) — the still-running job, now
        listed as origin ``handoff``. If the caller is cancelled first (the client gave
        up), the job is cancelled too.
        """
        limit = self.settings.handoff_after_s if handoff_after_s is None else handoff_after_s
        job = await self.submit(
            operation, request, origin="call", idempotency_key=idempotency_key, context=context, identity=identity
        )
        owned = not job.reused  # a repeat waits for the earlier job but never cancels it
        active = self._active.get(job.id)
        if active is not None and on_progress is not None:
            active.listeners.append(on_progress)
        try:
            if active is not None:
                with anyio.move_on_after(limit if limit and limit > 0 else None):
                    await active.done.wait()
        except anyio.get_cancelled_exc_class():
            if owned:
                with anyio.CancelScope(shield=True):
                    await self.cancel(job.id)
            raise
        finally:
            if active is not None and on_progress in active.listeners:
                active.listeners.remove(on_progress)
        reused = job.reused
        job = (await self.get(job.id)).model_copy(update={"reused": reused})
        if job.terminal:
            # Answered in time: nobody holds this id (unless an idempotency key does, so
            # a repeat still finds it), so the row has served its purpose.
            await self.records.forget_call(job.id)
        else:
            await self.records.hand_off(job.id)
            job = job.model_copy(update={"origin": "handoff"})
            log.info("call handed off to a background job", job_id=job.id, after_s=limit)
        return job

    # -- cancelling ----------------------------------------------------------------

    async def cancel(self, job_id: str) -> tuple[Job, str]:
        """Cancel a job. Returns the job afterwards and a sentence saying what happened."""
        job = await self.get(job_id)
        if job.terminal:
            return job, f"job {job_id} had already finished ({job.state.value}); nothing to cancel"
        active = self._active.get(job_id)
        if active is None:
            if job.owner == self.owner:  # finishing right now
                return await self.get(job_id), "the job finished while being cancelled"
            await self.records.request_cancel(job_id)
            return await self.get(job_id), (
                "cancellation requested: another server process runs this job and stops it at its "
                f"next heartbeat (within {self.settings.lease_s / 3:.0f} s)"
            )
        sent = active.state is not JobState.QUEUED
        if sent:
            message = "cancelled while the provider was working on it: the provider may still bill for this request"
        else:
            message = "cancelled before the request was sent to the provider: nothing was billed"
        finished = await self._finish(job_id, JobState.CANCELLED, message, may_be_billed=sent)
        if active.scope is not None:
            active.scope.cancel()
        else:
            active.cancel_early = True
        job = await self.get(job_id)
        if not finished:
            return job, f"the job finished ({job.state.value}) before it could be cancelled"
        log.info("job cancelled", job_id=job_id, may_be_billed=sent)
        return job, message

    # -- leases, recovery, pruning -------------------------------------------------

    async def _heartbeat(self) -> None:
        for job_id, active in list(self._active.items()):
            if active.dirty and not active.state.terminal:
                await self._flush(job_id, active)
        await self.records.renew(self.owner, time.time() + self.settings.lease_s)
        asked = await self.records.cancel_requested(self.owner)
        for job in asked:
            with acting_as(job.principal):  # asked by its principal on another replica
                await self.cancel(job.id)

    def _owner_dead(self, job: Job, lease: Lease, now: float) -> bool:
        if job.owner in _LIVE_OWNERS:
            return False
        if lease.until < now:
            return True
        if lease.host == self.host:
            # Same host: a vanished pid is dead now; our own pid under an owner token not
            # alive in this process was a previous process (containers reuse pid 1).
            return lease.pid == self.pid or not _pid_alive(lease.pid)
        return False

    def _ending_of_abandoned(self, job: Job, lease: Lease) -> Ending | None:
        """How to end another owner's job, or ``None`` while its owner lives."""
        if not self._owner_dead(job, lease, time.time()):
            return None
        sent = job.state is not JobState.QUEUED
        if not sent:
            detail = "the server process stopped before the request was sent; nothing was billed"
        elif job.state is JobState.SAVING:
            detail = (
                "the server process stopped while saving the images; the provider has "
                "billed for them, and it was not re-sent"
            )
        else:
            detail = (
                "the server process running it stopped while the provider was working "
                "on it; the provider may have billed for it, and it was not re-sent"
            )
        error: dict[str, Any] = {
            "code": "interrupted",
            "message": f"Job interrupted: {detail}." + _saved_before(job.files),
            "retryable": True,
            "fix": "submit the call again for the images you still need"
            if job.files
            else "submit the call again if you still want the image",
        }
        if job.files:
            error["saved"] = [f for f in job.files if not f.endswith(".json")]
        return Ending(JobState.FAILED, "failed: interrupted", error=error, may_be_billed=sent)

    async def recover(self) -> int:
        """End unfinished jobs whose owner is gone (its lease ran out, or its process is
        gone from this host) ``failed: interrupted``, or take over those a queue-based
        vendor is still working on (to poll again, never re-send). Any replica may do it;
        each job is ended or taken once. Returns how many this call ended or took."""
        now = time.time()
        resumable: list[Job] = []

        def decide(job: Job, lease: Lease) -> Ending | None:
            if job.state is JobState.RUNNING and job.vendor_tasks and self._owner_dead(job, lease, now):
                resumable.append(job)
                return None
            return self._ending_of_abandoned(job, lease)

        ended = await self.records.recover(exclude_owner=self.owner, host=self.host, decide=decide)
        for job, _ in ended:
            log.warning(
                "job interrupted by the death of its server process",
                job_id=job.id,
                owner=job.owner,
                state=job.state.value,
            )
        count = len(ended)
        for job in resumable:
            if await self.records.take_over(
                job.id,
                previous=job.owner,
                owner=self.owner,
                host=self.host,
                pid=self.pid,
                lease_until=now + self.settings.lease_s,
            ):
                # A queue-based vendor is still working on it: poll again, do not re-send.
                self._resumable.append(job)
                log.info(
                    "job resumes polling its vendor task after a restart", job_id=job.id, tasks=len(job.vendor_tasks)
                )
                count += 1
        if ended:
            self._notify()
        self._start_resumable()
        return count

    def _start_resumable(self) -> None:
        if self._tg is None:
            return  # started with the task group (see running())
        while self._resumable:
            job = self._resumable.pop(0)
            self._active[job.id] = _Active(state=JobState.RUNNING)
            self._tg.start_soon(self._run, job.id, job.operation, job.request, None, job.vendor_tasks)

    async def _interrupt_own(self, reason: str) -> None:
        for job_id, active in list(self._active.items()):
            if active.run is not None and active.run.has_vendor_task and active.state is JobState.RUNNING:
                # A queue-based vendor keeps working: leave the job (and the vendor task) to
                # the next start, which resumes polling (its lease runs out meanwhile).
                active.run.keeping = True
                log.info("job left to resume at the next start", job_id=job_id)
                continue
            sent = active.state is not JobState.QUEUED
            error = {
                "code": "interrupted",
                "message": f"Job interrupted: {reason}"
                + ("; the provider may have billed for it" if sent else "; nothing was billed")
                + ", and it was not re-sent.",
                "retryable": True,
                "fix": "submit the call again if you still want the image",
            }
            try:
                await self._finish(job_id, JobState.FAILED, "failed: interrupted", error=error, may_be_billed=sent)
            except Exception:
                log.exception("could not record an interrupted job", job_id=job_id)

    async def prune(self, *, now: float | None = None) -> int:
        """Delete finished jobs past ``jobs.retention_days``. Returns how many."""
        cutoff = (now or time.time()) - self.settings.retention_days * 86400
        old = await self.records.prune(cutoff)
        if not old:
            return 0
        if self.settings.delete_files_on_prune:
            await anyio.to_thread.run_sync(_delete_files, [name for job in old for name in job.files])
        log.info("pruned old jobs", count=len(old), files_deleted=self.settings.delete_files_on_prune)
        return len(old)


def _sniff_mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def pipeline_runner(pipeline: Pipeline, sessions: SessionManager | None = None) -> Runner:
    """The runner for stored jobs: the job's plan through the pipeline, its progress
    mapped to job stages. A job submitted in this process carries its
    :class:`~atelier_core.engine.plan.Plan` (inputs read once, outputs checked); a bare
    stored :class:`~atelier_core.engine.plan.CallPlan` is planned again. A plan that is an
    edit-session turn is recorded in its session when it has run."""

    async def run(job: JobRun) -> CallOutcome:
        plan = job.context
        if not isinstance(plan, Plan):
            spec = CallPlan.model_validate(job.request)
            plan = await pipeline.plan(spec.call, spec.operation, output=spec.output, confirmed=spec.confirmed)

        async def progress(fraction: float, message: str) -> None:
            stage = (
                JobState.SAVING
                if fraction >= SAVING_FRACTION
                else JobState.RUNNING
                if fraction > SENT_FRACTION
                else None
            )
            await job.progress(fraction, message, stage=stage)

        plan.job_id = job.job_id  # its files name the job, for start-up after a crash
        plan.vendor_task_sink = job.vendor_task  # a queue-based vendor's task id, kept with the job
        plan.resume_tasks = job.resume_tasks
        plan.keep_vendor_tasks = lambda: job.keeping
        session = plan.spec.session
        with origin(job_id=job.job_id, session_id=session["session_id"] if session else None):
            outcome = await pipeline.run(plan, progress=progress, partial=job.partial, saved=job.saved)
        if session is not None and sessions is not None:
            view = await sessions.record(session, outcome)
            outcome.notes.insert(0, f"session {view.id}: this is turn {view.head}")
            await pipeline.library.tag_turn([image.path for image in outcome.images], view.id, view.head)
        return outcome

    return run


def build_jobs(pipeline: Pipeline, sessions: SessionManager | None = None) -> JobManager:
    """The job manager on the state database in the data directory, running the pipeline."""
    settings = pipeline.settings
    preview = settings.preview

    def shrink(data: bytes) -> tuple[bytes, str]:
        small = imaging.make_preview(data, max_edge=preview.max_edge, max_bytes=preview.max_bytes, fmt=preview.format)
        return small.data, small.mime_type

    return JobManager(
        pipeline.state,
        pipeline_runner(pipeline, sessions),
        settings.jobs,
        max_partial_bytes=preview.max_bytes,
        shrink_partial=shrink,
    )


def _delete_files(names: list[str]) -> None:
    """Delete pruned jobs' files (blocking: run in a worker thread)."""
    for name in names:
        try:
            Path(name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete a pruned job's file", path=name, error=str(exc))
