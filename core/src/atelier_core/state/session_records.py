"""Session rows: multi-turn edit sessions and their turns (the logic is ``engine/sessions.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, func, insert, select, update

from atelier_core.state.db import Database
from atelier_core.state.tables import LOCAL_PRINCIPAL, session_turns, sessions

__all__ = ["SessionRecord", "SessionRecords", "TurnRecord"]


@dataclass(slots=True)
class TurnRecord:
    turn: int
    parent: int | None
    created_at: float
    operation: str
    prompt: str | None
    model: str | None
    parameters: dict[str, Any]
    image_path: str
    resource_uri: str | None
    sha256: str
    outcome: dict[str, Any] | None = None


@dataclass(slots=True)
class SessionRecord:
    id: str
    status: str
    created_at: float
    last_used: float
    head: int | None
    defaults: dict[str, Any]
    ended_reason: str | None = None
    principal: str = LOCAL_PRINCIPAL
    turns: list[TurnRecord] = field(default_factory=list)


def _turn(row: Row[Any]) -> TurnRecord:
    m = row._mapping
    return TurnRecord(
        turn=m["turn"],
        parent=m["parent"],
        created_at=m["created_at"],
        operation=m["operation"],
        prompt=m["prompt"],
        model=m["model"],
        parameters=m["parameters"] or {},
        image_path=m["image_path"],
        resource_uri=m["resource_uri"],
        sha256=m["sha256"],
        outcome=m["outcome"],
    )


def _turn_values(session_id: str, turn: TurnRecord) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "turn": turn.turn,
        "parent": turn.parent,
        "created_at": turn.created_at,
        "operation": turn.operation,
        "prompt": turn.prompt,
        "model": turn.model,
        "parameters": turn.parameters,
        "image_path": turn.image_path,
        "resource_uri": turn.resource_uri,
        "sha256": turn.sha256,
        "outcome": turn.outcome or None,
    }


class SessionRecords:
    """The ``sessions`` and ``session_turns`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, record: SessionRecord, first: TurnRecord) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                insert(sessions).values(
                    id=record.id,
                    principal=record.principal,
                    created_at=record.created_at,
                    last_used=record.last_used,
                    status=record.status,
                    head=record.head,
                    defaults=record.defaults,
                )
            )
            await conn.execute(insert(session_turns).values(**_turn_values(record.id, first)))

    async def add_turn(self, session_id: str, turn: TurnRecord, *, defaults: dict[str, Any], now: float) -> None:
        """Append ``turn`` and make it the head, in one transaction."""
        async with self._db.write() as conn:
            await conn.execute(insert(session_turns).values(**_turn_values(session_id, turn)))
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == session_id)
                .values(
                    head=turn.turn,
                    last_used=now,
                    defaults=defaults,
                )
            )

    async def count_turns(self, session_id: str) -> int:
        query = select(func.count()).select_from(session_turns).where(session_turns.c.session_id == session_id)
        async with self._db.read(single=True) as conn:
            return int((await conn.execute(query)).scalar_one())

    async def get(
        self, session_id: str, *, with_turns: bool = True, principal: str | None = None
    ) -> SessionRecord | None:
        query = select(sessions).where(sessions.c.id == session_id)
        if principal is not None:
            query = query.where(sessions.c.principal == principal)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            turns: list[TurnRecord] = []
            if with_turns:
                turns = [
                    _turn(t)
                    for t in (
                        await conn.execute(
                            select(session_turns)
                            .where(session_turns.c.session_id == session_id)
                            .order_by(session_turns.c.turn)
                        )
                    ).all()
                ]
        m = row._mapping
        return SessionRecord(
            id=m["id"],
            status=m["status"],
            created_at=m["created_at"],
            last_used=m["last_used"],
            head=m["head"],
            defaults=m["defaults"] or {},
            ended_reason=m["ended_reason"],
            principal=m["principal"],
            turns=turns,
        )

    async def ids(self, *, include_ended: bool = False, limit: int = 50, principal: str | None = None) -> list[str]:
        """Session ids, most recently used first."""
        query = select(sessions.c.id)
        if not include_ended:
            query = query.where(sessions.c.status == "open")
        if principal is not None:
            query = query.where(sessions.c.principal == principal)
        query = query.order_by(sessions.c.last_used.desc()).limit(limit)
        async with self._db.read(single=True) as conn:
            return list((await conn.execute(query)).scalars())

    async def end(self, session_id: str, *, reason: str, now: float | None = None) -> bool:
        """End an open session; ``False`` if it was not open."""
        values: dict[str, Any] = {"status": "ended", "ended_reason": reason}
        if now is not None:
            values["last_used"] = now
        async with self._db.write() as conn:
            result = await conn.execute(
                update(sessions).where(sessions.c.id == session_id, sessions.c.status == "open").values(**values)
            )
        return bool(result.rowcount)

    async def evict(self, *, now: float, idle_ttl_s: float, max_open: int) -> list[tuple[str, str]]:
        """End sessions idle past ``idle_ttl_s`` and those beyond ``max_open`` (0 = no
        limit); returns ``(id, reason)`` of each one ended."""
        ended: list[tuple[str, str]] = []
        async with self._db.write() as conn:
            if idle_ttl_s and idle_ttl_s > 0:
                reason = f"idle for more than {idle_ttl_s:g} s (sessions.idle_ttl_s)"
                idle = list(
                    (
                        await conn.execute(
                            select(sessions.c.id).where(
                                sessions.c.status == "open", sessions.c.last_used < now - idle_ttl_s
                            )
                        )
                    ).scalars()
                )
                if idle:
                    await conn.execute(
                        update(sessions).where(sessions.c.id.in_(idle)).values(status="ended", ended_reason=reason)
                    )
                    ended += [(i, reason) for i in idle]
            if max_open and max_open > 0:
                reason = f"evicted: more than {max_open} open sessions (sessions.max_sessions)"
                beyond = list(
                    (
                        await conn.execute(
                            select(sessions.c.id)
                            .where(sessions.c.status == "open")
                            .order_by(sessions.c.last_used.desc())
                            .offset(max_open)
                        )
                    ).scalars()
                )
                if beyond:
                    await conn.execute(
                        update(sessions).where(sessions.c.id.in_(beyond)).values(status="ended", ended_reason=reason)
                    )
                    ended += [(i, reason) for i in beyond]
        return ended
