"""Job records: the ``jobs`` table and every query on it (SQLAlchemy Core, async).

:class:`JobStore` is the persistence half of background jobs; the other half, the
:class:`~atelier_core.engine.jobs.JobManager` that runs them, lives in the engine and
reaches the database only through this class.

Every write that ends or advances a job is conditional on the job still being active
(``state IN ('queued', 'running', 'saving')``), so terminal states are final whichever
process or replica writes last. Abandoned jobs are claimed with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL: replicas recovering at once each take different rows and none
waits on a row another is ending (SQLite's write transaction already excludes other
writers). Idempotency keys live in their own table (``state/idempotency.py``), inserted
in the job's transaction. The records themselves (:class:`Job`, :class:`JobState`,
:class:`Ending`, ids and fingerprints) are in ``state/job_model.py``, re-exported here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from atelier_core.plugin.errors import StorageError
from atelier_core.state.db import Database, describe_error
from atelier_core.state.idempotency import IdempotencyKeys
from atelier_core.state.job_model import (
    ACTIVE,
    Ending,
    Job,
    JobState,
    KeyTaken,
    Lease,
    Origin,
    iso_utc,
    new_job_id,
    request_fingerprint,
    validate_job_ids,
)
from atelier_core.state.tables import LOCAL_PRINCIPAL, idempotency_keys, jobs

__all__ = [
    "ACTIVE",
    "Ending",
    "Job",
    "JobState",
    "JobStore",
    "KeyTaken",
    "Lease",
    "Origin",
    "iso_utc",
    "new_job_id",
    "request_fingerprint",
    "validate_job_ids",
]

_active = jobs.c.state.in_(ACTIVE)


def _job(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        operation=m["operation"],
        origin=m["origin"],
        state=JobState(m["state"]),
        message=m["message"],
        progress=m["progress"],
        request=m["request"],
        outcome=m["outcome"],
        error=m["error"],
        files=m["files"] or [],
        may_be_billed=bool(m["may_be_billed"]),
        cancel_requested=bool(m["cancel_requested"]),
        owner=m["owner"],
        principal=m["principal"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        partial=m["partial"],
        partial_mime=m["partial_mime"],
        partial_index=m["partial_index"],
        vendor_tasks=m["vendor_tasks"] or {},
    )


class JobStore:
    """Every read and write of the ``jobs`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writing ------------------------------------------------------------------------

    async def insert(
        self,
        *,
        job_id: str,
        operation: str,
        origin: str,
        message: str,
        request: dict[str, Any],
        owner: str,
        owner_host: str,
        owner_pid: int,
        lease_until: float,
        now: float,
        idempotency: tuple[str, str] | None = None,
        principal: str = LOCAL_PRINCIPAL,
    ) -> None:
        """Record a new ``queued`` job durably (and its idempotency key, atomically).

        Raises :class:`KeyTaken` when another call committed the same key first.
        """
        # The record keeps the request for people to read; inline image data (base64 or data:
        # URLs, possibly megabytes) is not copied into it. The runner gets the full request.
        recorded = json.loads(json.dumps(_for_record(request), default=str))
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    insert(jobs).values(
                        id=job_id,
                        principal=principal,
                        operation=operation,
                        origin=origin,
                        state=JobState.QUEUED.value,
                        message=message,
                        request=recorded,
                        owner=owner,
                        owner_host=owner_host,
                        owner_pid=owner_pid,
                        lease_until=lease_until,
                        created_at=now,
                        updated_at=now,
                    )
                )
                if idempotency is not None:
                    key, fingerprint = idempotency
                    await IdempotencyKeys.claim(conn, key, fingerprint, job_id, now, principal=principal)
        except IntegrityError:
            if idempotency is None:
                raise
            raise KeyTaken(idempotency[0]) from None
        except SQLAlchemyError as exc:  # nothing was sent: say why the job could not be kept
            raise StorageError(
                f"could not record the job in {self._db.where}: {describe_error(exc)}; nothing was sent",
                fix="check that the state database is reachable and writable (ATELIER_STATE__URL), "
                "or for the default SQLite file that the data directory is on a local disk with "
                "free space (ATELIER_DATA_DIR)",
            ) from None

    async def add_file(self, job_id: str, path: str) -> None:
        """Append a published file to the job (read and written in one transaction)."""
        async with self._db.write() as conn:
            current = (await conn.execute(select(jobs.c.files).where(jobs.c.id == job_id).with_for_update())).scalar()
            files = [*(current or []), path]
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(files=files, updated_at=time.time()))

    async def set_vendor_task(self, job_id: str, batch: int, task_id: str) -> None:
        """Record a queue-based vendor's task id for one batch of the job (durably)."""
        async with self._db.write() as conn:
            current = (
                await conn.execute(select(jobs.c.vendor_tasks).where(jobs.c.id == job_id).with_for_update())
            ).scalar()
            tasks = {**(current or {}), str(batch): task_id}
            await conn.execute(
                update(jobs).where(jobs.c.id == job_id).values(vendor_tasks=tasks, updated_at=time.time())
            )

    async def take_over(
        self, job_id: str, *, previous: str, owner: str, host: str, pid: int, lease_until: float
    ) -> bool:
        """Make this process the owner of a job whose owner died (to resume a queue-based
        vendor's task). ``False`` when someone else took it first."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.owner == previous, _active)
                .values(owner=owner, owner_host=host, owner_pid=pid, lease_until=lease_until, updated_at=time.time())
            )
        return bool(result.rowcount)

    async def attach_saved(self, job_id: str, paths: Sequence[str]) -> bool:
        """Record files found on disk after a crash on their (interrupted) job: added to
        its files and, for images, to ``error.saved`` with a line in its message.
        ``False`` when the job is unknown or already lists them all."""
        async with self._db.write() as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == job_id).with_for_update())).first()
            if row is None:
                return False
            found = _job(row)
            new = [p for p in dict.fromkeys(paths) if p not in found.files]
            if not new:
                return False
            error = dict(found.error) if found.error else None
            images = [p for p in new if not p.endswith(".json")]
            if error is not None and images:
                error["saved"] = [*error.get("saved", []), *images]
                error["message"] = (
                    f"{error.get('message', '')} Found on disk after the crash and attached: {', '.join(images)}."
                ).strip()
            values: dict[str, Any] = {"files": [*found.files, *new], "updated_at": time.time()}
            if error is not None:
                values["error"] = error
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
        return True

    async def with_files(self, since: float) -> list[Job]:
        """Jobs that recorded files, updated since ``since`` (to check their sidecars)."""
        query = (
            select(jobs)
            .where(jobs.c.files.is_not(None), jobs.c.updated_at >= since)
            .order_by(jobs.c.updated_at.desc())
            .limit(5000)
        )
        async with self._db.read(single=True) as conn:
            return [job for job in map(_job, (await conn.execute(query)).all()) if job.files]

    async def interrupted(self, since: float) -> list[Job]:
        """Jobs that ended ``failed: interrupted`` since ``since``."""
        query = (
            select(jobs)
            .where(
                jobs.c.state == JobState.FAILED.value,
                jobs.c.message == "failed: interrupted",
                func.coalesce(jobs.c.finished_at, jobs.c.updated_at) >= since,
            )
            .order_by(jobs.c.created_at.desc())
            .limit(1000)
        )
        async with self._db.read(single=True) as conn:
            return [_job(r) for r in (await conn.execute(query)).all()]

    async def advance(
        self,
        job_id: str,
        *,
        state: JobState,
        message: str | None,
        progress: float | None,
        started_at: float | None,
        durable: bool = False,
    ) -> None:
        """Write an active job's stage and progress."""
        async with self._db.write(durable=durable, single=True) as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, _active)
                .values(
                    state=state.value,
                    message=message,
                    progress=progress,
                    updated_at=time.time(),
                    started_at=jobs.c.started_at
                    if started_at is None
                    else func.coalesce(jobs.c.started_at, started_at),
                )
            )

    async def set_partial(self, job_id: str, data: bytes | None, mime: str | None, index: int) -> None:
        async with self._db.write(durable=False, single=True) as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, _active)
                .values(
                    partial=data,
                    partial_mime=mime,
                    partial_index=index,
                    updated_at=time.time(),
                )
            )

    async def finish(self, job_id: str, ending: Ending, *, now: float | None = None) -> bool:
        """Move an active job to a terminal state; ``False`` if it already was."""
        async with self._db.write(single=True) as conn:
            result = await conn.execute(
                update(jobs).where(jobs.c.id == job_id, _active).values(**_ending_values(ending, now))
            )
        return bool(result.rowcount)

    async def forget_call(self, job_id: str) -> None:
        """Delete a synchronous call's row once answered (unless a key still names it)."""
        keyed = select(idempotency_keys.c.job_id).where(idempotency_keys.c.job_id == job_id)
        async with self._db.write(durable=False, single=True) as conn:
            await conn.execute(
                delete(jobs).where(jobs.c.id == job_id, jobs.c.origin == "call", jobs.c.id.not_in(keyed))
            )

    async def hand_off(self, job_id: str) -> None:
        async with self._db.write(single=True) as conn:
            await conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.origin == "call").values(origin="handoff")
            )

    async def request_cancel(self, job_id: str) -> None:
        async with self._db.write(single=True) as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id, _active).values(cancel_requested=True))

    async def renew(self, owner: str, until: float) -> None:
        """Extend the lease of every active job ``owner`` holds (the heartbeat)."""
        async with self._db.write(durable=False, single=True) as conn:
            await conn.execute(update(jobs).where(jobs.c.owner == owner, _active).values(lease_until=until))

    async def recover(
        self,
        *,
        exclude_owner: str,
        decide: Callable[[Job, Lease], Ending | None],
        host: str | None = None,
        limit: int = 1000,
    ) -> list[tuple[Job, Ending]]:
        """End abandoned jobs: ``decide`` sees each active job of another owner whose
        lease ran out (or that runs on ``host``, where a dead pid can be seen at once),
        claimed with ``FOR UPDATE SKIP LOCKED``, and returns how to end it, or ``None``."""
        now = time.time()
        ended: list[tuple[Job, Ending]] = []
        candidate = jobs.c.lease_until < now
        if host is not None:
            candidate = candidate | (jobs.c.owner_host == host)
        async with self._db.write() as conn:
            rows = (
                await conn.execute(
                    select(jobs)
                    .where(_active, jobs.c.owner != exclude_owner, candidate)
                    .order_by(jobs.c.lease_until)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                m = row._mapping
                job = _job(row)
                ending = decide(job, Lease(m["owner"], m["owner_host"], m["owner_pid"], m["lease_until"]))
                if ending is None:
                    continue
                result = await conn.execute(
                    update(jobs).where(jobs.c.id == job.id, _active).values(**_ending_values(ending, now))
                )
                if result.rowcount:
                    ended.append((job, ending))
        return ended

    async def prune(self, cutoff: float) -> list[Job]:
        """Delete finished jobs (and their idempotency keys) finished before ``cutoff``."""
        finished_at = func.coalesce(jobs.c.finished_at, jobs.c.created_at)
        async with self._db.write() as conn:
            old = [
                _job(r)
                for r in (
                    await conn.execute(select(jobs).where(jobs.c.state.not_in(ACTIVE), finished_at < cutoff))
                ).all()
            ]
            ids = [job.id for job in old]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.job_id.in_(chunk)))
                await conn.execute(delete(jobs).where(jobs.c.id.in_(chunk), jobs.c.state.not_in(ACTIVE)))
        return old

    # -- reading ------------------------------------------------------------------------

    async def get_many(self, job_ids: Sequence[str], *, principal: str | None = None) -> dict[str, Job]:
        query = select(jobs).where(jobs.c.id.in_(list(job_ids)))
        if principal is not None:
            query = query.where(jobs.c.principal == principal)
        async with self._db.read(single=True) as conn:
            return {job.id: job for job in map(_job, (await conn.execute(query)).all())}

    async def recent(self, *, limit: int, include_finished: bool = True, principal: str | None = None) -> list[Job]:
        """Newest first; synchronous calls that were not handed off are left out."""
        query = select(jobs).where(jobs.c.origin != "call")
        if not include_finished:
            query = query.where(_active)
        if principal is not None:
            query = query.where(jobs.c.principal == principal)
        query = query.order_by(jobs.c.created_at.desc()).limit(limit)
        async with self._db.read(single=True) as conn:
            return [_job(r) for r in (await conn.execute(query)).all()]

    async def cancel_requested(self, owner: str) -> list[Job]:
        query = select(jobs).where(jobs.c.owner == owner, jobs.c.cancel_requested.is_(True), _active)
        async with self._db.read(single=True) as conn:
            return [_job(r) for r in (await conn.execute(query)).all()]


def _ending_values(ending: Ending, now: float | None) -> dict[str, Any]:
    now = time.time() if now is None else now
    values: dict[str, Any] = {
        "state": ending.state.value,
        "message": ending.message,
        "outcome": ending.outcome,
        "error": ending.error,
        "may_be_billed": ending.may_be_billed,
        "progress": None,
        "partial": None,
        "updated_at": now,
        "finished_at": now,
    }
    if ending.files is not None:
        values["files"] = ending.files
    return values


_MAX_RECORDED_CHARS = 2000


def _for_record(value: Any) -> Any:
    """``value`` with every string longer than 2000 characters replaced by a note."""
    if isinstance(value, str) and len(value) > _MAX_RECORDED_CHARS:
        return f"<{len(value)} characters, not recorded>"
    if isinstance(value, dict):
        return {key: _for_record(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_for_record(item) for item in value]
    return value
