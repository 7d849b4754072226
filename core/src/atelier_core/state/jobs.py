"""Job records: the ``jobs`` table, its schema history, and every query on it.

:class:`JobStore` is the persistence half of background jobs; the other half, the
:class:`~atelier_core.engine.jobs.JobManager` that runs them, lives in the engine and
reaches the database only through this class. One connection, used by one worker thread
at a time (SQLite calls never run on the event loop).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
from pydantic import BaseModel

from atelier_core.plugin.errors import InvalidParameterError, NotFoundError, StorageError
from atelier_core.state.database import StateStore

__all__ = [
    "JOB_MIGRATIONS",
    "Job",
    "JobState",
    "JobStore",
    "Origin",
    "iso_utc",
    "new_job_id",
    "request_fingerprint",
    "validate_job_ids",
]

T = TypeVar("T")

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
_ACTIVE_SQL = "('queued', 'running', 'saving')"

Origin = Literal["job", "call", "handoff", "task"]

JOB_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        operation TEXT NOT NULL,
        origin TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT,
        progress REAL,
        request TEXT NOT NULL,
        outcome TEXT,
        error TEXT,
        files TEXT,
        may_be_billed INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        owner TEXT NOT NULL,
        owner_host TEXT NOT NULL,
        owner_pid INTEGER NOT NULL,
        lease_until REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        partial BLOB,
        partial_mime TEXT,
        partial_index INTEGER
    );
    CREATE INDEX jobs_state ON jobs (state);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX jobs_owner ON jobs (owner, state);
    """,
    # v2: idempotency keys — a repeated call with the same key gets the same job.
    """
    ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE jobs ADD COLUMN fingerprint TEXT;
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
    """,
    # v3: queue-based vendors — the vendor's task ids, so a restarted server resumes polling.
    """
    ALTER TABLE jobs ADD COLUMN vendor_tasks TEXT;
    """,
)
"""The ``jobs`` component's schema history (append only)."""

def request_fingerprint(operation: str, request: dict[str, Any]) -> str:
    """What makes two requests "the same" for an idempotency key (presentation aside)."""
    significant = {k: v for k, v in request.items() if k not in ("return_image", "confirmed")}
    encoded = json.dumps([operation, significant], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def new_job_id() -> str:
    """A fresh job id: ``job_`` plus 128 random bits, URL-safe."""
    return "job_" + secrets.token_urlsafe(16)


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


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        operation=row["operation"],
        origin=row["origin"],
        state=JobState(row["state"]),
        message=row["message"],
        progress=row["progress"],
        request=json.loads(row["request"]),
        outcome=json.loads(row["outcome"]) if row["outcome"] else None,
        error=json.loads(row["error"]) if row["error"] else None,
        files=json.loads(row["files"]) if row["files"] else [],
        may_be_billed=bool(row["may_be_billed"]),
        cancel_requested=bool(row["cancel_requested"]),
        owner=row["owner"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        partial=row["partial"],
        partial_mime=row["partial_mime"],
        partial_index=row["partial_index"],
        vendor_tasks=json.loads(row["vendor_tasks"]) if row["vendor_tasks"] else {},
    )



class JobStore:
    """Every read and write of the ``jobs`` table."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._limiter = anyio.CapacityLimiter(1)
        self._conn_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        store.migrate("jobs", JOB_MIGRATIONS)

    @property
    def path(self) -> object:
        return self.store.path

    def open(self) -> None:
        """Hold one connection until :meth:`close` (otherwise each query opens its own)."""
        conn = self.store.connect(autocommit=True)
        conn.row_factory = sqlite3.Row
        self._conn = conn

    def close(self) -> None:
        with self._conn_lock:  # never under a query still running in a worker thread (segfault)
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(self._locked, fn, args, limiter=self._limiter)

    def _locked(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._conn_lock:
            conn = self._conn
            if conn is None:  # used outside open(): short-lived connection
                conn = self.store.connect(autocommit=True)
                conn.row_factory = sqlite3.Row
                try:
                    return fn(conn, *args)
                finally:
                    conn.close()
            return fn(conn, *args)

    @staticmethod
    def _write(conn: sqlite3.Connection, sql: str, args: Sequence[Any], durable: bool = True) -> int:
        # FULL syncs the commit to disk (creation, terminal states); NORMAL, for
        # progress, is still crash-safe in WAL mode and only a power loss can undo it.
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(sql, args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return cursor.rowcount

    @staticmethod
    def _select(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Job]:
        return [_row_to_job(row) for row in conn.execute(sql, args).fetchall()]

    async def _run_write(self, sql: str, args: Sequence[Any], durable: bool = True) -> int:
        return await self._db(self._write, sql, args, durable)

    # -- writes ----------------------------------------------------------------------

    async def insert(self, *, job_id: str, operation: str, origin: str, request: dict[str, Any],
                     owner: str, host: str, pid: int, lease_until: float, now: float,
                     idempotency_key: str | None, fingerprint: str | None) -> bool:
        """Record a new queued job durably. ``False`` when its idempotency key is taken."""
        # The record keeps the request for people to read; inline image data (base64 or data:
        # URLs, possibly megabytes) is not copied into it. The runner gets the full request.
        encoded = json.dumps(_for_record(request), separators=(",", ":"), default=str)
        try:
            await self._run_write(
                "INSERT INTO jobs (id, operation, origin, state, message, request, owner, owner_host,"
                " owner_pid, lease_until, created_at, updated_at, idempotency_key, fingerprint)"
                " VALUES (?, ?, ?, 'queued', 'waiting for a provider slot', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, operation, origin, encoded, owner, host, pid, lease_until, now, now,
                 idempotency_key, fingerprint),
            )
        except sqlite3.IntegrityError:
            if idempotency_key is None:
                raise
            return False  # another call with the same key committed first
        except sqlite3.Error as exc:  # nothing was sent: say why the job could not be kept
            raise StorageError(
                f"could not record the job in {self.store.path}: {exc}; nothing was sent",
                fix="check that the data directory is writable and on a local disk with free "
                "space (ATELIER_DATA_DIR)",
            ) from None
        return True

    async def by_key(self, key: str) -> tuple[str, str | None] | None:
        """(job id, request fingerprint) of the job holding idempotency ``key``."""
        rows = await self._db(
            lambda conn: conn.execute(
                "SELECT id, fingerprint FROM jobs WHERE idempotency_key = ?", (key,)
            ).fetchall()
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def add_file(self, job_id: str, path: str) -> None:
        await self._run_write(
            "UPDATE jobs SET files = json_insert(COALESCE(files, '[]'), '$[#]', ?), updated_at = ?"
            " WHERE id = ?",
            (path, time.time(), job_id),
        )

    async def attach_saved(self, job_id: str, paths: Sequence[str]) -> bool:
        """Record files found on disk after a crash on their (interrupted) job: added to
        its files and, for images, to ``error.saved`` with a line in its message.
        ``False`` when the job is unknown or already lists them all."""
        found = (await self.get_many([job_id])).get(job_id)
        if found is None:
            return False
        new = [p for p in dict.fromkeys(paths) if p not in found.files]
        if not new:
            return False
        error = dict(found.error) if found.error else None
        images = [p for p in new if not p.endswith(".json")]
        if error is not None and images:
            error["saved"] = [*error.get("saved", []), *images]
            error["message"] = (f"{error.get('message', '')} Found on disk after the crash and attached: "
                                f"{', '.join(images)}.").strip()
        await self._run_write(
            "UPDATE jobs SET files = ?, error = COALESCE(?, error), updated_at = ? WHERE id = ?",
            (json.dumps([*found.files, *new]), json.dumps(error) if error is not None else None,
             time.time(), job_id),
        )
        return True

    async def with_files(self, since: float) -> list[Job]:
        """Jobs that recorded files, updated since ``since`` (to check their sidecars)."""
        return await self._db(
            self._select,
            "SELECT * FROM jobs WHERE files IS NOT NULL AND files != '[]' AND updated_at >= ?"
            " ORDER BY updated_at DESC LIMIT 5000",
            (since,),
        )

    async def interrupted(self, since: float) -> list[Job]:
        """Jobs that ended ``failed: interrupted`` since ``since``."""
        return await self._db(
            self._select,
            "SELECT * FROM jobs WHERE state = 'failed' AND message = 'failed: interrupted'"
            " AND COALESCE(finished_at, updated_at) >= ? ORDER BY created_at DESC LIMIT 1000",
            (since,),
        )

    async def finish(self, job_id: str, state: JobState, message: str, *, outcome: dict[str, Any] | None,
                     error: dict[str, Any] | None, files: list[str] | None, may_be_billed: bool) -> bool:
        """Move an unfinished job to a terminal state; ``False`` if it already was."""
        now = time.time()
        changed = await self._run_write(
            "UPDATE jobs SET state = ?, message = ?, outcome = ?, error = ?,"
            " files = COALESCE(?, files),"
            " may_be_billed = ?, progress = NULL, partial = NULL, updated_at = ?, finished_at = ?"
            f" WHERE id = ? AND state IN {_ACTIVE_SQL}",
            (state.value, message, json.dumps(outcome) if outcome is not None else None,
             json.dumps(error) if error is not None else None,
             json.dumps(files) if files is not None else None,
             int(may_be_billed), now, now, job_id),
        )
        return bool(changed)

    async def progress(self, job_id: str, state: JobState, message: str | None, progress: float | None,
                       started_at: float | None, *, durable: bool = False) -> None:
        await self._run_write(
            "UPDATE jobs SET state = ?, message = ?, progress = ?, updated_at = ?,"
            f" started_at = COALESCE(started_at, ?) WHERE id = ? AND state IN {_ACTIVE_SQL}",
            (state.value, message, progress, time.time(), started_at, job_id),
            durable,
        )

    async def set_vendor_task(self, job_id: str, batch: int, task_id: str) -> None:
        """Record a queue-based vendor's task id for one batch of the job (durably)."""

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT vendor_tasks FROM jobs WHERE id = ?", (job_id,)).fetchone()
            tasks = json.loads(row[0]) if row is not None and row[0] else {}
            tasks[str(batch)] = task_id
            self._write(conn, "UPDATE jobs SET vendor_tasks = ?, updated_at = ? WHERE id = ?",
                        (json.dumps(tasks), time.time(), job_id))

        await self._db(write)

    async def partial(self, job_id: str, blob: bytes | None, mime: str | None, index: int) -> None:
        await self._run_write(
            "UPDATE jobs SET partial = ?, partial_mime = ?, partial_index = ?, updated_at = ?"
            f" WHERE id = ? AND state IN {_ACTIVE_SQL}",
            (blob, mime, index, time.time(), job_id),
            False,
        )

    async def forget_answered_call(self, job_id: str) -> None:
        """Delete a synchronous call's row once answered (unless a key must find it)."""
        await self._run_write("DELETE FROM jobs WHERE id = ? AND origin = 'call' "
                              "AND idempotency_key IS NULL", (job_id,), False)

    async def hand_off(self, job_id: str) -> None:
        await self._run_write("UPDATE jobs SET origin = 'handoff' WHERE id = ? AND origin = 'call'", (job_id,))

    async def request_cancel(self, job_id: str) -> None:
        await self._run_write(
            f"UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state IN {_ACTIVE_SQL}", (job_id,))

    async def renew_leases(self, owner: str, until: float) -> None:
        await self._run_write(
            f"UPDATE jobs SET lease_until = ? WHERE owner = ? AND state IN {_ACTIVE_SQL}",
            (until, owner), False)

    async def delete_finished(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            await self._run_write(
                f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})"
                f" AND state NOT IN {_ACTIVE_SQL}",
                chunk,
            )

    # -- reads -----------------------------------------------------------------------

    async def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        marks = ", ".join("?" * len(job_ids))
        rows = await self._db(self._select, f"SELECT * FROM jobs WHERE id IN ({marks})", list(job_ids))
        return {job.id: job for job in rows}

    async def recent(self, *, limit: int, include_finished: bool) -> list[Job]:
        """Recent jobs, newest first (synchronous calls that were not handed off excluded)."""
        where = "origin != 'call'"
        if not include_finished:
            where += f" AND state IN {_ACTIVE_SQL}"
        return await self._db(
            self._select,
            f"SELECT * FROM jobs WHERE {where} ORDER BY created_at DESC LIMIT ?",
            (max(1, min(limit, 200)),),
        )

    async def cancel_requested(self, owner: str) -> list[Job]:
        return await self._db(
            self._select,
            f"SELECT * FROM jobs WHERE owner = ? AND cancel_requested = 1 AND state IN {_ACTIVE_SQL}",
            (owner,),
        )

    async def unfinished_of_others(self, owner: str) -> list[tuple[Job, float, str, int]]:
        """Unfinished jobs of other owners, with their lease end, host and pid."""

        def candidates(conn: sqlite3.Connection) -> list[tuple[Job, float, str, int]]:
            rows = conn.execute(
                f"SELECT * FROM jobs WHERE state IN {_ACTIVE_SQL} AND owner != ?", (owner,)
            ).fetchall()
            return [(_row_to_job(r), r["lease_until"], r["owner_host"], r["owner_pid"]) for r in rows]

        return await self._db(candidates)

    async def take_over(self, job_id: str, *, previous: str, owner: str, host: str, pid: int,
                        lease_until: float) -> bool:
        """Make this process the owner of a job whose owner died (to resume a queue-based
        vendor's task). ``False`` when someone else took it first."""
        return await self._run_write(
            "UPDATE jobs SET owner = ?, owner_host = ?, owner_pid = ?, lease_until = ?, updated_at = ? "
            f"WHERE id = ? AND owner = ? AND state IN {_ACTIVE_SQL}",
            (owner, host, pid, lease_until, time.time(), job_id, previous),
        ) == 1

    async def finished_before(self, cutoff: float) -> list[Job]:
        return await self._db(
            self._select,
            f"SELECT * FROM jobs WHERE state NOT IN {_ACTIVE_SQL} AND COALESCE(finished_at, created_at) < ?",
            (cutoff,),
        )


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

def validate_job_ids(job_ids: Sequence[str], *, limit: int = 50) -> list[str]:
    """Check ``job_ids`` as given by a client (count and shape) before any lookup."""
    if len(job_ids) > limit:
        raise InvalidParameterError(
            "job_ids", f"{len(job_ids)} ids", f"is too many for one call (at most {limit})",
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
