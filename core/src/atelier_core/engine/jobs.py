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

The manager is split by concern: :mod:`~atelier_core.engine.job_run` (what a runner sees),
:mod:`~atelier_core.engine.job_execution` (running a job, progress, terminal records),
:mod:`~atelier_core.engine.job_recovery` (leases, recovery, vendor-task take-over, pruning),
this module (the public API: submit, call, wait, cancel, read; lifecycle and heartbeat) and
:mod:`~atelier_core.engine.job_pipeline` (:func:`build_jobs`, :func:`pipeline_runner`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from pydantic import BaseModel

from atelier_core.engine.job_pipeline import build_jobs, pipeline_runner
from atelier_core.engine.job_recovery import LIVE_OWNERS, JobRecovery
from atelier_core.engine.job_run import ActiveJob, JobRun, ProgressListener, Runner, default_files_of
from atelier_core.identity import acting_as, current_principal
from atelier_core.plugin.errors import AtelierError, NotFoundError, RequestError, shorten
from atelier_core.state.jobs import Job, JobState, KeyTaken, Origin, new_job_id, request_fingerprint

__all__ = [
    "JobManager",
    "JobRun",
    "Runner",
    "build_jobs",
    "default_files_of",
    "pipeline_runner",
]

log = structlog.get_logger("atelier.jobs")


class JobManager(JobRecovery):
    """Runs and records background jobs. Use as ``async with manager.running(): ...``."""

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
        LIVE_OWNERS.add(self.owner)
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
            LIVE_OWNERS.discard(self.owner)

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
        self._active[job_id] = ActiveJob(state=JobState.QUEUED)
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
