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

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from atelier_core.plugin.errors import ConfigurationError, StorageError

__all__ = ["DB_FILENAME", "HEAD_REVISION", "Database", "resolve_url"]

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
    """An open state database. Build one per process with :meth:`open`; :meth:`aclose` it."""

    def __init__(self, engine: AsyncEngine, url: URL) -> None:
        self.engine = engine
        self.url = url
        self.dialect: Dialect = "postgresql" if url.get_backend_name() == "postgresql" else "sqlite"
        self.path: Path | None = Path(url.database) if self.dialect == "sqlite" and url.database else None

    @property
    def where(self) -> str:
        """The database for messages (the file, or the URL without its password)."""
        return str(self.path) if self.path else self.url.render_as_string(hide_password=True)

    @classmethod
    async def open(cls, url: str | None, data_dir: Path, *, pool_size: int = 5) -> Database:
        """Connect to (creating if needed) and migrate the state database."""
        resolved = resolve_url(url, data_dir)
        if resolved.get_backend_name() == "sqlite" and resolved.database not in (None, "", ":memory:"):
            _make_parent(Path(resolved.database))
        db = cls(_create_engine(resolved, pool_size), resolved)
        try:
            await db.migrate()
        except DBAPIError as exc:
            await db.aclose()
            if db.path is None or not _is_corruption(exc):
                raise StorageError(
                    f"cannot open the state database {db.where}: {_reason(exc)}",
                    parameter="state.url",
                    fix="check that the database is reachable and the user may create tables "
                    "(ATELIER_STATE__URL), or unset it for the SQLite file in the data directory",
                ) from None
            _quarantine(db.path, exc)
            db = cls(_create_engine(resolved, pool_size), resolved)
            await db._migrate_or_close()
        except BaseException:
            await db.aclose()
            raise
        return db

    async def _migrate_or_close(self) -> None:
        try:
            await self.migrate()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        await self.engine.dispose()

    # -- transactions -------------------------------------------------------------------

    @asynccontextmanager
    async def write(self, *, durable: bool = True) -> AsyncIterator[AsyncConnection]:
        """A short write transaction (commits on exit, rolls back on error).

        On SQLite it is taken with ``BEGIN IMMEDIATE`` (so a read inside it sees what no
        other writer can change before the commit); ``durable=False`` commits with
        ``synchronous=NORMAL`` (survives a crash of this process, not a power loss).
        On PostgreSQL use :meth:`lock` inside it to serialise a read-then-write.
        """
        async with self.engine.connect() as conn:
            await conn.execution_options(atelier_write=True, atelier_durable=durable)
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot on both backends)."""
        async with self.engine.connect() as conn, conn.begin():
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
        async with self.read() as conn:
            return await conn.run_sync(_current_revision)

    async def migrate(self) -> None:
        """Upgrade the schema to :data:`HEAD_REVISION` (one locked transaction)."""
        if await self.revision() == HEAD_REVISION:
            return
        async with self.write() as conn:
            await self.lock(conn, "migrate")
            current = await conn.run_sync(_current_revision)
            if current == HEAD_REVISION:
                return  # another process migrated while this one waited
            await conn.run_sync(_upgrade, current, self.where)


def _create_engine(url: URL, pool_size: int) -> AsyncEngine:
    if url.get_backend_name() == "postgresql":
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_pre_ping=True,
            connect_args={"application_name": "atelier"},
        )
        return engine
    engine = create_async_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by the "begin" hook below (pysqlite's own implicit
        # BEGIN would be DEFERRED and start only at the first write).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # journal_mode is persistent in the file; setting it on each connect is cheap.
        cursor.execute("PRAGMA journal_mode=WAL")
        mode = cursor.fetchone()
        if mode and str(mode[0]).lower() != "wal" and url.database not in (None, "", ":memory:"):
            log.warning("sqlite WAL mode unavailable; using rollback journal", mode=mode[0])
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("atelier_write"):
            durable = options.get("atelier_durable", True)
            conn.exec_driver_sql(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


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


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__


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
