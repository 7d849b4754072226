"""Money in the state database: the ledger of calls that may have been billed, and the
spend reservations that hold a quote while its call runs.

A reservation is taken inside one write transaction that first locks the principal's
budget (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), sums what the
ledger and the live reservations already hold, lets the caller's policy refuse, and
inserts the reservation. Two calls racing on two replicas therefore see each other: a
daily limit holds. Recording a call moves its amount from the reservation to the ledger
in one transaction. A reservation whose process died expires (``expires_at``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from atelier_core.state.db import Database
from atelier_core.state.tables import LOCAL_PRINCIPAL, ledger, spend_reservations

__all__ = ["Ledger", "LedgerEntry", "SpendReservations", "Spent", "UsageRow"]

_USD = func.coalesce(ledger.c.cost_usd, ledger.c.estimate_usd, 0.0)


@dataclass(slots=True)
class LedgerEntry:
    """One call that was (or may have been) billed."""

    at: float
    day: str  # UTC YYYY-MM-DD
    run_id: str
    provider: str
    model: str
    operation: str
    images: int
    estimate_usd: float | None
    cost_usd: float | None
    status: str  # "billed" | "partial" | "maybe_billed"
    usage: dict[str, Any] | None = None
    request_id: str | None = None
    job_id: str | None = None
    principal: str = LOCAL_PRINCIPAL


@dataclass(slots=True, frozen=True)
class UsageRow:
    """Spend of one (day, provider, model), summed in SQL."""

    day: str
    provider: str
    model: str
    usd: float
    images: int
    calls: int


@dataclass(slots=True, frozen=True)
class Spent:
    """What a principal has spent and holds in reservations, for a limit check."""

    day: float
    run: float


class Ledger:
    """The ``ledger`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, entry: LedgerEntry, *, release: str | None = None) -> None:
        """Add ``entry``; with ``release``, drop that reservation in the same transaction."""
        async with self._db.write() as conn:
            await conn.execute(
                insert(ledger).values(
                    principal=entry.principal,
                    at=entry.at,
                    day=entry.day,
                    run_id=entry.run_id,
                    provider=entry.provider,
                    model=entry.model,
                    operation=entry.operation,
                    images=entry.images,
                    estimate_usd=entry.estimate_usd,
                    cost_usd=entry.cost_usd,
                    status=entry.status,
                    usage=entry.usage or None,
                    request_id=entry.request_id,
                    job_id=entry.job_id,
                )
            )
            if release is not None:
                await conn.execute(delete(spend_reservations).where(spend_reservations.c.id == release))

    async def spent(
        self, *, day: str | None = None, run_id: str | None = None, principal: str = LOCAL_PRINCIPAL
    ) -> float:
        """USD billed on a UTC day or in a server run (actual cost, else the estimate)."""
        async with self._db.read(single=True) as conn:
            return await _ledger_sum(conn, principal, day=day, run_id=run_id)

    async def usage(self, *, since_day: str, principal: str = LOCAL_PRINCIPAL) -> list[UsageRow]:
        """Spend, images and calls per (day, provider, model) from ``since_day`` on."""
        query = (
            select(
                ledger.c.day, ledger.c.provider, ledger.c.model, func.sum(_USD), func.sum(ledger.c.images), func.count()
            )
            .where(ledger.c.principal == principal, ledger.c.day >= since_day)
            .group_by(ledger.c.day, ledger.c.provider, ledger.c.model)
        )
        async with self._db.read(single=True) as conn:
            rows = (await conn.execute(query)).all()
        return [UsageRow(r[0], r[1], r[2], float(r[3] or 0.0), int(r[4] or 0), int(r[5])) for r in rows]

    async def entries(self, *, since_day: str, principal: str = LOCAL_PRINCIPAL) -> list[dict[str, Any]]:
        """The raw rows from ``since_day`` on, oldest first (for export and tests)."""
        query = select(ledger).where(ledger.c.principal == principal, ledger.c.day >= since_day).order_by(ledger.c.at)
        async with self._db.read(single=True) as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]


class SpendReservations:
    """The ``spend_reservations`` table: quotes held while their calls run."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def spent(self, *, day: str, run_id: str, principal: str = LOCAL_PRINCIPAL) -> Spent:
        """Ledger plus live reservations, without reserving (dry runs, ask-first checks)."""
        async with self._db.read() as conn:
            return await self._spent(conn, principal, day, run_id)

    async def reserve(
        self,
        amount_usd: float,
        *,
        day: str,
        run_id: str,
        ttl_s: float,
        check: Callable[[Spent], None],
        principal: str = LOCAL_PRINCIPAL,
    ) -> str:
        """Hold ``amount_usd`` unless ``check`` (which sees what is spent and held so far)
        raises; atomically across processes and replicas. Returns the reservation id."""
        now = self._clock()
        token = "rsv_" + secrets.token_urlsafe(12)
        async with self._db.write() as conn:
            await self._db.lock(conn, f"spend:{principal}")
            await conn.execute(delete(spend_reservations).where(spend_reservations.c.expires_at < now))
            check(await self._spent(conn, principal, day, run_id))
            await conn.execute(
                insert(spend_reservations).values(
                    id=token,
                    principal=principal,
                    day=day,
                    run_id=run_id,
                    amount_usd=amount_usd,
                    created_at=now,
                    expires_at=now + ttl_s,
                )
            )
        return token

    async def release(self, token: str) -> None:
        """Drop a reservation (the call was not billed, or was recorded elsewhere)."""
        async with self._db.write(durable=False, single=True) as conn:
            await conn.execute(delete(spend_reservations).where(spend_reservations.c.id == token))

    async def held(self, *, principal: str = LOCAL_PRINCIPAL) -> float:
        """USD held by live reservations (for reports and tests)."""
        now = self._clock()
        query = select(func.coalesce(func.sum(spend_reservations.c.amount_usd), 0.0)).where(
            spend_reservations.c.principal == principal, spend_reservations.c.expires_at >= now
        )
        async with self._db.read(single=True) as conn:
            return float((await conn.execute(query)).scalar_one())

    async def _spent(self, conn: AsyncConnection, principal: str, day: str, run_id: str) -> Spent:
        now = self._clock()
        live = (spend_reservations.c.principal == principal) & (spend_reservations.c.expires_at >= now)
        held = func.coalesce(func.sum(spend_reservations.c.amount_usd), 0.0)
        held_day = (await conn.execute(select(held).where(live, spend_reservations.c.day == day))).scalar_one()
        held_run = (await conn.execute(select(held).where(live, spend_reservations.c.run_id == run_id))).scalar_one()
        return Spent(
            day=await _ledger_sum(conn, principal, day=day) + float(held_day),
            run=await _ledger_sum(conn, principal, run_id=run_id) + float(held_run),
        )


async def _ledger_sum(
    conn: AsyncConnection, principal: str, *, day: str | None = None, run_id: str | None = None
) -> float:
    query = select(func.coalesce(func.sum(_USD), 0.0)).where(ledger.c.principal == principal)
    if day is not None:
        query = query.where(ledger.c.day == day)
    if run_id is not None:
        query = query.where(ledger.c.run_id == run_id)
    return float((await conn.execute(query)).scalar_one())
