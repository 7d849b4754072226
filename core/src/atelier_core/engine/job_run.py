"""What a job's runner sees: :class:`JobRun` (its request, progress and vendor-task
reporting), the :data:`Runner` type, and the manager's in-memory view of a job it runs
(:class:`ActiveJob`). The manager itself is :class:`~atelier_core.engine.jobs.JobManager`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel

from atelier_core.state.jobs import JobState

__all__ = ["ActiveJob", "JobRun", "ProgressListener", "Runner", "default_files_of"]

if TYPE_CHECKING:
    from atelier_core.engine.job_execution import JobExecution

ProgressListener = Callable[[float | None, str], Awaitable[None]]


class JobRun:
    """What a runner gets for one job: its request and ways to report progress."""

    def __init__(
        self,
        manager: JobExecution,
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
class ActiveJob:
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
