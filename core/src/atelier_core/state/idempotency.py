"""Idempotency keys: a client's key for a request, mapped to the job that answers it.

The primary key ``(principal, key)`` decides races: of two calls (on one replica or two)
that insert the same key, exactly one commits; the other finds the winner's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from atelier_core.state.db import Database
from atelier_core.state.tables import LOCAL_PRINCIPAL, idempotency_keys

__all__ = ["IdempotencyKeys", "KeyUse"]


@dataclass(slots=True, frozen=True)
class KeyUse:
    """What a key was first used for."""

    job_id: str
    fingerprint: str


class IdempotencyKeys:
    """The ``idempotency_keys`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(self, key: str, *, principal: str = LOCAL_PRINCIPAL) -> KeyUse | None:
        query = select(idempotency_keys.c.job_id, idempotency_keys.c.fingerprint).where(
            idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
        )
        async with self._db.read(single=True) as conn:
            row = (await conn.execute(query)).first()
        return KeyUse(row[0], row[1]) if row else None

    @staticmethod
    async def claim(
        conn: AsyncConnection,
        key: str,
        fingerprint: str,
        job_id: str,
        now: float,
        *,
        principal: str = LOCAL_PRINCIPAL,
    ) -> None:
        """Insert the key inside the caller's transaction (``IntegrityError`` if taken)."""
        await conn.execute(
            insert(idempotency_keys).values(
                principal=principal,
                key=key,
                fingerprint=fingerprint,
                job_id=job_id,
                created_at=now,
            )
        )
