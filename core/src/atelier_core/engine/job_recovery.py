"""Leases, recovery and pruning: ending the jobs of a dead owner ``failed: interrupted``
(at the next start when its pid is gone from this host, otherwise once its lease runs
out), taking over the jobs a queue-based vendor is still working on (to poll them again,
never re-send), interrupting this process's own jobs at shutdown, and pruning old jobs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

from atelier_core.engine.job_execution import JobExecution
from atelier_core.engine.job_run import ActiveJob
from atelier_core.state.jobs import Ending, Job, JobState, Lease

__all__ = ["LIVE_OWNERS", "JobRecovery"]

log = structlog.get_logger("atelier.jobs")


def _saved_before(files: Sequence[str]) -> str:
    images = [f for f in files if not f.endswith(".json")]
    if not images:
        return ""
    return f" {len(images)} image(s) were saved before it stopped: {', '.join(images)}."


#: Owner tokens of the managers alive in this process (several only in tests).
LIVE_OWNERS: set[str] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class JobRecovery(JobExecution):
    """Recovery of abandoned jobs and pruning (a base of :class:`~atelier_core.engine.jobs.JobManager`)."""

    def _owner_dead(self, job: Job, lease: Lease, now: float) -> bool:
        if job.owner in LIVE_OWNERS:
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
            self._active[job.id] = ActiveJob(state=JobState.RUNNING)
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


def _delete_files(names: list[str]) -> None:
    """Delete pruned jobs' files (blocking: run in a worker thread)."""
    for name in names:
        try:
            Path(name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete a pruned job's file", path=name, error=str(exc))
