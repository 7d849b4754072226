"""A job as the state layer records it: states, the row snapshot, ids, fingerprints.

:class:`~atelier_core.state.jobs.JobStore` reads and writes these; every name here is
re-exported by :mod:`atelier_core.state.jobs`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel

from atelier_core.plugin.errors import InvalidParameterError, NotFoundError
from atelier_core.state.tables import LOCAL_PRINCIPAL

__all__ = [
    "ACTIVE",
    "Ending",
    "Job",
    "JobState",
    "KeyTaken",
    "Lease",
    "Origin",
    "iso_utc",
    "new_job_id",
    "request_fingerprint",
    "validate_job_ids",
]

Origin = Literal["job", "call", "handoff", "task"]


def request_fingerprint(operation: str, request: dict[str, Any]) -> str:
    """What makes two requests "the same" for an idempotency key (presentation aside)."""
    significant = {k: v for k, v in request.items() if k not in ("return_image", "confirmed")}
    encoded = json.dumps([operation, significant], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def new_job_id() -> str:
    """A fresh job id: ``job_`` plus 128 random bits, URL-safe."""
    return "job_" + secrets.token_urlsafe(16)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SAVING = "saving"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.SAVING.value)


def iso_utc(ts: float | None) -> str | None:
    """A Unix time as an ISO 8601 UTC string with milliseconds (``None`` stays ``None``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Job(BaseModel):
    """A snapshot of one job row."""

    id: str
    operation: str
    origin: str
    state: JobState
    message: str | None = None
    progress: float | None = None
    request: dict[str, Any]
    outcome: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    files: list[str] = []
    may_be_billed: bool = False
    cancel_requested: bool = False
    owner: str
    principal: str = LOCAL_PRINCIPAL
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    partial: bytes | None = None
    partial_mime: str | None = None
    partial_index: int | None = None
    #: a queue-based vendor's task id per batch (first image index), kept to resume polling
    vendor_tasks: dict[str, str] = {}
    reused: bool = False  # returned for a repeated idempotency key: nothing new was sent

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    def summary(self) -> dict[str, Any]:
        """The public status of the job (no result payload, no partial bytes)."""
        out: dict[str, Any] = {
            "job_id": self.id,
            "state": self.state.value,
            "operation": self.operation,
        }
        call = self.request.get("call")
        model = self.request.get("model") or (call.get("model") if isinstance(call, dict) else None)
        if model:
            out["model"] = model
        if self.message:
            out["stage"] = self.message
        if self.progress is not None and not self.terminal:
            out["progress"] = round(self.progress, 3)
        if self.reused:
            out["reused"] = True
        out["created_at"] = iso_utc(self.created_at)
        if self.finished_at is not None:
            out["finished_at"] = iso_utc(self.finished_at)
            out["elapsed_s"] = round(self.finished_at - self.created_at, 3)
        else:
            out["elapsed_s"] = round(time.time() - self.created_at, 3)
        if self.error:
            out["error"] = self.error
        if self.may_be_billed:
            out["may_be_billed"] = True
        if self.partial_index is not None and not self.terminal:
            out["partial_preview"] = {"index": self.partial_index, "available": self.partial is not None}
        return out


@dataclass(slots=True, frozen=True)
class Lease:
    """Who holds an active job, for deciding whether it was abandoned."""

    owner: str
    host: str
    pid: int
    until: float


@dataclass(slots=True)
class Ending:
    """How to end a job."""

    state: JobState
    message: str
    outcome: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    files: list[str] | None = None  # None keeps the files recorded while it saved
    may_be_billed: bool = False


class KeyTaken(Exception):
    """The idempotency key was inserted by another call first."""


def validate_job_ids(job_ids: Sequence[str], *, limit: int = 50) -> list[str]:
    """Check ``job_ids`` as given by a client (count and shape) before any lookup."""
    if len(job_ids) > limit:
        raise InvalidParameterError(
            "job_ids",
            f"{len(job_ids)} ids",
            f"is too many for one call (at most {limit})",
            fix=f"ask for at most {limit} jobs at a time",
        )
    for job_id in job_ids:
        if not isinstance(job_id, str) or not job_id.startswith("job_") or len(job_id) > 64:
            raise NotFoundError(
                f"no job {job_id!r}: job ids look like 'job_' followed by 22 characters",
                parameter="job_ids",
                value=job_id,
                fix="use an id returned by generate_image/edit_image, or call get_jobs "
                "without job_ids to list recent jobs",
            )
    return list(job_ids)
