"""The state database: one SQLAlchemy async engine, SQLite by default, PostgreSQL by URL.

``ATELIER_STATE__URL`` chooses it; unset, it is the SQLite file
``<data dir>/state.sqlite3`` (aiosqlite: every statement runs on the driver's worker
thread, never on the event loop). ``postgresql://…`` uses psycopg 3 (async) through
SQLAlchemy's connection pool.

Opening a :class:`Database` brings its schema to the newest Alembic revision
(``state/migrations``) inside one locked transaction, so replicas or stdio servers
starting together never both apply a step. A database whose revision this release does
not know (written by a newer one) is refused with instructions, never guessed at.

SQLite specifics kept from the hand-written store this replaces: WAL (readers never
block the writer; the data directory must be on a local filesystem), ``busy_timeout``
(several processes share the file and wait for each other's short writes),
``synchronous=FULL`` for writes that hand out ids or end jobs (``NORMAL`` for progress),
write transactions taken with ``BEGIN IMMEDIATE`` (a read-then-write such as a spend
reservation is serialised across processes), and a file that is not a database is moved
aside (``state.sqlite3.corrupt-<time>``) and a fresh one started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from atelier_core.plugin.errors import ConfigurationError, StorageError

__all__ = ["DB_FILENAME", "HEAD_REVISION", "Database", "describe_error", "resolve_url"]

log = structlog.get_logger("atelier.state")

DB_FILENAME = "state.sqlite3"
BUSY_TIMEOUT_MS = 10_000

HEAD_REVISION = "0003"
"""The newest migration in ``state/migrations/versions`` (a test keeps them equal). A
database already at it opens without importing Alembic (about 0.3 s of start-up)."""

Dialect = Literal["sqlite", "postgresql"]


def resolve_url(url: str | None, data_dir: Path) -> URL:
    """The SQLAlchemy URL for ``state.url`` (default: the SQLite file in ``data_dir``)."""
    if not url:
        return URL.create("sqlite+aiosqlite", database=str(data_dir / DB_FILENAME))
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            "state.url is not a database URL",
            parameter="state.url",
            value="<not shown: it may hold a password>",
            fix="use postgresql://user:password@host:5432/dbname or sqlite:///path/to/state.sqlite3 "
            "(ATELIER_STATE__URL), or unset it for the SQLite file in the data directory",
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ConfigurationError(
        f"state.url uses the {backend!r} database, which Atelier does not support",
        parameter="state.url",
        value=parsed.render_as_string(hide_password=True),
        allowed=["postgresql://…", "sqlite:///…"],
        fix="use PostgreSQL or SQLite (ATELIER_STATE__URL), or unset it for the default SQLite file",
    )


class Database:
    """The state database. Build one per process; it connects and migrates on first use
    (or at once with :meth:`open`); :meth:`aclose` it."""

    def __init__(self, url: str | None, data_dir: Path, *, pool_size: int = 5) -> None:
        self.url = resolve_url(url, data_dir)
        self.dialect: Dialect = "postgresql" if self.url.get_backend_name() == "postgresql" else "sqlite"
        database = self.url.database
        self.path: Path | None = (
            Path(database) if self.dialect == "sqlite" and database not in (None, "", ":memory:") else None
        )
        self._pool_size = pool_size
        # SQLite: the pool's open aiosqlite connections, closed by a finalizer if the owner
        # never calls aclose() (otherwise each warns when garbage-collected). Held strongly:
        # the collector clears weak references before it runs finalizers.
        self._connections: set[Any] = set()
        weakref.finalize(self, _stop_sqlite_connections, self._connections)
        self.engine = _create_engine(self.url, pool_size, self._connections)
        # SQLite: progress writes (durable=False) use their own connections, already at
        # synchronous=NORMAL, so no write pays a PRAGMA round trip to switch.
        self._fast = (
            self.engine
            if self.dialect != "sqlite"
            else _create_engine(self.url, pool_size, self._connections, synchronous="NORMAL")
        )
        self._ready = False
        self._write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def where(self) -> str:
        """The database for messages (the file, or the URL without its password)."""
        return str(self.path) if self.path else self.url.render_as_string(hide_password=True)

    @classmethod
    async def open(cls, url: str | None, data_dir: Path, *, pool_size: int = 5) -> Database:
        """Connect to (creating if needed) and migrate the state database now."""
        db = cls(url, data_dir, pool_size=pool_size)
        try:
            await db.ready()
        except BaseException:
            await db.aclose()
            raise
        return db

    async def ready(self) -> None:
        """Migrate on first use. Concurrent first uses are safe: the migration lock decides."""
        if self._ready:
            return
        if self.path is not None:
            _make_parent(self.path)
        try:
            await self.migrate()
        except DBAPIError as exc:
            if self.path is None or not _is_corruption(exc):
                raise StorageError(
                    f"cannot open the state database {self.where}: {_reason(exc)}",
                    parameter="state.url",
                    fix="check that the database is reachable and the user may create tables "
                    "(ATELIER_STATE__URL), or unset it for the SQLite file in the data directory",
                ) from None
            await self.engine.dispose()
            await self._fast.dispose()
            _quarantine(self.path, exc)
            self.engine = _create_engine(self.url, self._pool_size, self._connections)
            self._fast = _create_engine(self.url, self._pool_size, self._connections, synchronous="NORMAL")
            await self.migrate()
        self._ready = True

    async def aclose(self) -> None:
        await self.engine.dispose()
        if self._fast is not self.engine:
            await self._fast.dispose()
        self._ready = False

    # -- transactions -------------------------------------------------------------------

    @asynccontextmanager
    async def write(self, *, durable: bool = True, single: bool = False) -> AsyncIterator[AsyncConnection]:
        """A short write transaction (commits on exit, rolls back on error).

        On SQLite it is taken with ``BEGIN IMMEDIATE`` (so a read inside it sees what no
        other writer can change before the commit); ``durable=False`` commits with
        ``synchronous=NORMAL`` (survives a crash of this process, not a power loss).
        On PostgreSQL use :meth:`lock` inside it to serialise a read-then-write.
        ``single=True`` promises one statement (SQLite then runs it without BEGIN/COMMIT).
        """
        engine = self.engine if durable else self._fast
        # Shielded: a transaction is never abandoned half-way by a cancelled caller (its
        # ROLLBACK would be cancelled too, and on SQLite the write lock kept); a cancel
        # takes effect when it ends, as it did when each query was a worker-thread call.
        with anyio.CancelScope(shield=True):
            await self.ready()
            async with self._writer(), engine.connect() as conn:
                await conn.execution_options(atelier_write=True, atelier_single=single)
                async with conn.begin():
                    if not durable and self.dialect == "postgresql":
                        # PostgreSQL's counterpart of SQLite's synchronous=NORMAL: the commit
                        # does not wait for the WAL flush (a server crash may lose it; never
                        # corrupts). Progress only: ids, terminal states and money stay synced.
                        await conn.execute(text("SET LOCAL synchronous_commit = off"))
                    yield conn

    def _writer(self) -> asyncio.Lock | contextlib.nullcontext[None]:
        """SQLite writers of this process queue here (fair, no polling); other processes
        still meet ``busy_timeout``, whose back-off sleeps would otherwise add up."""
        if self.dialect != "sqlite":
            return contextlib.nullcontext()
        loop = asyncio.get_running_loop()
        lock = self._write_locks.get(loop)
        if lock is None:
            lock = self._write_locks[loop] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def read(self, *, single: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot on both backends). ``single=True``
        promises one statement (SQLite then runs it without BEGIN: three round trips fewer)."""
        with anyio.CancelScope(shield=True):  # see write()
            await self.ready()
            async with self.engine.connect() as conn:
                if single:
                    await conn.execution_options(atelier_single=True)
                async with conn.begin():
                    yield conn

    async def lock(self, conn: AsyncConnection, name: str) -> None:
        """Hold the named lock until ``conn``'s transaction ends (PostgreSQL advisory lock;
        on SQLite the write transaction already excludes every other writer)."""
        if self.dialect == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": f"atelier:{name}"}
            )

    # -- schema -------------------------------------------------------------------------

    async def revision(self) -> str | None:
        """The Alembic revision the database is at (``None`` when it has no schema yet)."""
        async with self.engine.connect() as conn, conn.begin():
            return await conn.run_sync(_current_revision)

    async def migrate(self) -> None:
        """Upgrade the schema to :data:`HEAD_REVISION` (one locked transaction)."""
        if await self.revision() == HEAD_REVISION:
            return
        async with self.engine.connect() as conn:
            await conn.execution_options(atelier_write=True, atelier_durable=True)
            await conn.begin()
            await self.lock(conn, "migrate")
            current = await conn.run_sync(_current_revision)
            if current != HEAD_REVISION:  # else another process migrated while this one waited
                await conn.run_sync(_upgrade, current, self.where)
            await conn.commit()


def _create_engine(
    url: URL, pool_size: int, connections: set[Any] | None = None, *, synchronous: str = "FULL"
) -> AsyncEngine:
    if url.get_backend_name() == "postgresql":
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_pre_ping=True,
            connect_args={"application_name": "atelier"},
        )
        return engine
    # Pooled: a new aiosqlite connection costs a thread and a dozen round trips to it, a
    # pooled one a few per transaction. The pool's rollback on check-in stays on: a
    # connection must never go back holding SQLite's write lock.
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
    )
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by the "begin" hook below (pysqlite's own implicit
        # BEGIN would be DEFERRED and start only at the first write).
        dbapi_connection.isolation_level = None
        if connections is not None:
            connections.add(dbapi_connection._connection)  # the aiosqlite.Connection
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # persistent in the file; cheap when set
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "close")
    def _closed(dbapi_connection: Any, _record: Any) -> None:
        if connections is not None:
            connections.discard(dbapi_connection._connection)

    @event.listens_for(sync_engine, "close_detached")
    def _closed_detached(dbapi_connection: Any) -> None:
        if connections is not None:
            connections.discard(dbapi_connection._connection)

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("atelier_single"):
            return  # one statement: atomic on its own (autocommit), three round trips fewer
        if options.get("atelier_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _stop_sqlite_connections(connections: set[Any]) -> None:
    """Close aiosqlite connections left in a pool nobody closed, from their own threads."""
    for connection in list(connections):
        if getattr(connection, "_connection", None) is None:
            continue
        with contextlib.suppress(Exception):
            connection.stop()  # queues close-and-exit on the connection's worker thread
            connection._thread.join(timeout=2)


def _current_revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(conn: Connection, current: str | None, where: str) -> None:
    """Run Alembic (imported only here) on ``conn``, inside its transaction."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = conn
    if current is not None:
        try:
            ScriptDirectory.from_config(config).get_revision(current)
        except CommandError:
            raise ConfigurationError(
                f"the state database {where} is at schema revision {current!r}, which this "
                "Atelier release does not know: it was written by a newer release",
                parameter="state.url",
                value=where,
                fix="upgrade atelier-mcp, or point ATELIER_STATE__URL (or ATELIER_DATA_DIR) at another database",
            ) from None
    command.upgrade(config, "head")
    log.info("state schema migrated", database=where, from_revision=current, to_revision=HEAD_REVISION)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the data directory {path.parent}: {exc.strerror or exc}",
            parameter="data_dir",
            value=str(path.parent),
            fix="set ATELIER_DATA_DIR to a writable local directory",
        ) from None


def _reason(exc: BaseException) -> str:
    """The database's own words for ``exc`` (first line; no SQL, no parameters)."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


describe_error = _reason


def _is_corruption(exc: DBAPIError) -> bool:
    text_ = _reason(exc).lower()
    return "not a database" in text_ or "malformed" in text_ or "corrupt" in text_


def _quarantine(path: Path, exc: DBAPIError) -> None:
    moved = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.replace(Path(f"{moved}{suffix}"))
    log.error(
        "state database unreadable; moved aside and starting a fresh one "
        "(job history, sessions and the spend ledger in it are not lost: inspect the moved file)",
        error=_reason(exc),
        moved_to=str(moved),
    )
