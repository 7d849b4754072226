"""The state wing's interface: one object, five record sets, two backends.

::

    state = await StateStore.open(settings)        # SQLite file, or ATELIER_STATE__URL
    await state.jobs.insert(...)                   # JobStore
    await state.sessions.get(session_id)           # SessionRecords
    await state.ledger.record(entry, release=hold) # Ledger
    await state.reservations.reserve(...)          # SpendReservations
    await state.idempotency.find(key)              # IdempotencyKeys
    await state.images.search(query)               # ImageRecords
    await state.aclose()

Everything is async and goes through SQLAlchemy Core on one
:class:`~atelier_core.state.db.Database` (aiosqlite or psycopg 3): nothing blocks the
event loop, and there is one way to touch the database. The tables are in
``state/tables.py``; the schema history in ``state/migrations``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from atelier_core.state.db import Database
from atelier_core.state.idempotency import IdempotencyKeys
from atelier_core.state.image_records import ImageRecords
from atelier_core.state.jobs import JobStore
from atelier_core.state.ledger import Ledger, SpendReservations
from atelier_core.state.session_records import SessionRecords

if TYPE_CHECKING:
    from atelier_core.settings import Settings

__all__ = ["StateStore"]


class StateStore:
    """The state database and its record sets. One per process; it connects and migrates
    on first use; :meth:`aclose` it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.jobs = JobStore(db)
        self.sessions = SessionRecords(db)
        self.ledger = Ledger(db)
        self.reservations = SpendReservations(db)
        self.idempotency = IdempotencyKeys(db)
        self.images = ImageRecords(db)

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        """``state.url`` (default: ``<data dir>/state.sqlite3``); nothing is opened yet."""
        url = settings.state.url.get_secret_value() if settings.state.url else None
        return cls(Database(url, settings.resolved_data_dir, pool_size=settings.state.pool_size))

    @classmethod
    async def open(cls, settings: Settings) -> StateStore:
        """:meth:`from_settings`, connected and migrated now."""
        store = cls.from_settings(settings)
        await store.ready()
        return store

    @classmethod
    async def open_url(cls, url: str | None, data_dir: Path, *, pool_size: int = 5) -> StateStore:
        return cls(await Database.open(url, data_dir, pool_size=pool_size))

    @property
    def where(self) -> str:
        """The database for messages (a file path, or the URL without its password)."""
        return self.db.where

    async def ready(self) -> None:
        """Connect and migrate now (otherwise the first query does)."""
        try:
            await self.db.ready()
        except BaseException:
            await self.db.aclose()
            raise

    async def aclose(self) -> None:
        await self.db.aclose()
