"""The state database: one SQLite file in the data directory, shared by every module.

Jobs, sessions and the cost ledger keep their state in one file,
``<data dir>/state.sqlite3``, opened in WAL mode (readers never block the writer) with
``synchronous=FULL`` (a committed job survives power loss, not just a crash of this
process) and a ``busy_timeout`` (several server processes — one per stdio client — share
the file and wait for each other's short write transactions instead of failing).

Each module owns its tables and their history as a *component*: an ordered list of
migrations, applied once each, recorded in ``schema_migrations``::

    store = StateStore.open(settings.resolved_data_dir)
    store.migrate("sessions", [
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at REAL NOT NULL)",   # v1
        "ALTER TABLE sessions ADD COLUMN title TEXT",                              # v2
    ])
    conn = store.connect()        # a fresh connection with the same pragmas

A migration is a SQL script or a callable taking the connection. Version *n* is the
*n*-th item; never edit or reorder released items, append new ones. ``migrate`` runs
the pending ones inside one ``BEGIN IMMEDIATE`` transaction, so two processes starting
together cannot both apply a step. A database written by a newer release (a component
at a version this code does not know) is refused with instructions, never guessed at.
A file that is not a SQLite database is moved aside (``state.sqlite3.corrupt-<time>``)
and a fresh one started, with an error in the log naming the moved file.

WAL needs shared memory between the processes, so the data directory must be on a
local filesystem (not NFS/SMB); see docs/configuration.md.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog

from atelier_core.plugin.errors import ConfigurationError, StorageError

__all__ = ["DB_FILENAME", "Migration", "StateStore"]

log = structlog.get_logger("atelier.store")

DB_FILENAME = "state.sqlite3"
BUSY_TIMEOUT_MS = 10_000

Migration = str | Callable[[sqlite3.Connection], None]
"""One schema step: a SQL script (several statements allowed) or a function."""

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (component, version)
)
"""


def _statements(script: str) -> Iterator[str]:
    """Split a SQL script into complete statements (trigger bodies stay whole)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                yield buffer
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        yield buffer


class StateStore:
    """The SQLite state file and its schema versions. Build one per server process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path) -> StateStore:
        """Open (creating if needed) ``<data_dir>/state.sqlite3`` in WAL mode."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data directory {data_dir}: {exc.strerror or exc}",
                parameter="data_dir",
                value=str(data_dir),
                fix="set ATELIER_DATA_DIR to a writable local directory",
            ) from None
        store = cls(data_dir / DB_FILENAME)
        try:
            store._initialise()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            store._quarantine(exc)
            store._initialise()
        return store

    def _initialise(self) -> None:
        conn = self.connect(autocommit=True)
        try:
            # journal_mode is persistent in the file; setting it on every open is cheap.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("sqlite WAL mode unavailable; using rollback journal", mode=mode)
            conn.execute(_MIGRATIONS_TABLE)
            conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        finally:
            conn.close()

    def _quarantine(self, exc: Exception) -> None:
        moved = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.replace(Path(f"{moved}{suffix}"))
        log.error(
            "state database unreadable; moved aside and starting a fresh one "
            "(job history, sessions and the spend ledger in it are not lost: inspect the moved file)",
            error=str(exc),
            moved_to=str(moved),
        )

    def connect(self, *, autocommit: bool = False) -> sqlite3.Connection:
        """A new connection with the store's pragmas.

        ``autocommit=False`` (default) gives Python's usual implicit transactions (use
        ``with conn:`` to commit); ``autocommit=True`` leaves transaction control to the
        caller (``BEGIN IMMEDIATE`` … ``COMMIT``). Connections may be used from a worker
        thread (``check_same_thread=False``) but never from two threads at once.
        """
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            isolation_level=None if autocommit else "DEFERRED",
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # FULL: a job id is handed out only after its row is on disk, power loss included.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction taken with ``BEGIN IMMEDIATE`` (commits on exit)."""
        conn = self.connect(autocommit=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def versions(self) -> dict[str, int]:
        """The applied schema version of every component."""
        conn = self.connect()
        try:
            rows = conn.execute(
                "SELECT component, MAX(version) FROM schema_migrations GROUP BY component"
            ).fetchall()
        finally:
            conn.close()
        return {str(name): int(version) for name, version in rows}

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply the pending migrations of ``component``; return its version afterwards.

        Raises :class:`ConfigurationError` when the file holds a newer version of the
        component than ``migrations`` describes (written by a newer release).
        """
        known = len(migrations)
        with self._lock, self.transaction() as conn:
            row = conn.execute(
                "SELECT MAX(version) FROM schema_migrations WHERE component = ?", (component,)
            ).fetchone()
            current = int(row[0] or 0)
            if current > known:
                raise ConfigurationError(
                    f"the state database {self.path} has {component} schema version {current}, "
                    f"but this Atelier release only knows version {known}: it was written by a "
                    "newer release",
                    parameter="data_dir",
                    value=str(self.path.parent),
                    fix="upgrade atelier-mcp, or set ATELIER_DATA_DIR to another directory",
                )
            for version in range(current + 1, known + 1):
                step = migrations[version - 1]
                if callable(step):
                    step(conn)
                else:
                    for statement in _statements(step):
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                    (component, version, time.time()),
                )
                log.info("schema migrated", component=component, version=version)
        return max(current, known)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text
