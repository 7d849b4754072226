"""Image rows: one per saved image, searchable by prompt words and filters (the logic
is ``engine/library.py``).

Every image Atelier publishes (a direct call, a background job, a session turn) gets a
row: where it is (relative path in the output root), what made it (prompt, model,
provider, operation, applied parameters, seed, cost), when, in which session/turn or
job, which earlier image it was edited from (lineage), and its sha256 and size. Prompts
are indexed with SQLite FTS5 (an external-content table kept in step by triggers, see
migration 0002); PostgreSQL matches them with ``to_tsvector('simple', prompt) @@
to_tsquery(...)``. Both treat each word as a prefix (``fox`` finds ``foxes``).

Queries page newest first with a keyset cursor (``created_at``, ``id``), so a page
never repeats or skips rows while new images arrive. All methods are blocking (one
short SQLite transaction each); async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, literal_column, or_, select, text, update

from atelier_core.identity import LOCAL_PRINCIPAL
from atelier_core.plugin.errors import InvalidParameterError
from atelier_core.state.db import Database
from atelier_core.state.tables import images, library_meta

__all__ = ["ImageEntry", "ImageQuery", "ImageRecords", "parse_when"]

_COLUMNS = (
    "principal",
    "relative",
    "created_at",
    "prompt",
    "model",
    "provider",
    "operation",
    "applied",
    "seed",
    "cost_usd",
    "width",
    "height",
    "format",
    "bytes",
    "sha256",
    "session_id",
    "turn",
    "job_id",
    "edited_from",
    "embedded",
)
MAX_PAGE = 100
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(slots=True)
class ImageEntry:
    """One indexed image (``relative`` is its path inside the output root)."""

    relative: str
    created_at: float
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    prompt: str | None = None
    model: str | None = None
    provider: str | None = None
    operation: str | None = None
    applied: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    turn: int | None = None
    job_id: str | None = None
    edited_from: str | None = None
    embedded: bool = False
    principal: str = LOCAL_PRINCIPAL
    id: int | None = None

    @property
    def created_iso(self) -> str:
        return _dt.datetime.fromtimestamp(self.created_at, _dt.UTC).isoformat(timespec="seconds")

    def values(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _COLUMNS}
        values["applied"] = json.loads(json.dumps(self.applied, default=str))
        return values


@dataclass(slots=True)
class ImageQuery:
    """Filters for :meth:`ImageIndex.search`; every field optional."""

    text: str | None = None
    model: str | None = None
    provider: str | None = None
    since: float | None = None
    until: float | None = None
    session_id: str | None = None
    job_id: str | None = None
    edited_from: str | None = None
    principal: str | None = LOCAL_PRINCIPAL
    limit: int = 20
    cursor: str | None = None


def parse_when(value: str, parameter: str, *, end: bool = False) -> float:
    """An ISO date (``2026-12-03``) or date-time (``2026-12-03T10:00:00Z``) as a timestamp.

    A bare date means the start of that day (UTC), or its end when ``end`` is set.
    """
    text = value.strip() if isinstance(value, str) else ""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.UTC)
            return (day + _dt.timedelta(days=1)).timestamp() - 1e-6 if end else day.timestamp()
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidParameterError(
            parameter,
            value,
            "is not an ISO date or date-time",
            allowed="YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[+HH:MM|Z]",
            fix=f"pass e.g. {parameter}=2026-12-03 or 2026-12-03T14:30:00Z",
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.timestamp()


def _words(value: str) -> list[str]:
    """The words of a search: operators and punctuation in the input are never syntax."""
    return _WORD.findall(value)[:32]


def _encode_cursor(created_at: float, row_id: int) -> str:
    raw = json.dumps([created_at, row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return float(created_at), int(row_id)
    except (ValueError, TypeError):
        raise InvalidParameterError(
            "cursor",
            cursor,
            "is not a cursor returned by this server",
            fix="pass next_cursor from the previous page unchanged, or omit it for the first page",
        ) from None


def _entry(row: Row[Any]) -> ImageEntry:
    m = row._mapping
    return ImageEntry(
        id=m["id"],
        principal=m["principal"],
        relative=m["relative"],
        created_at=m["created_at"],
        prompt=m["prompt"],
        model=m["model"],
        provider=m["provider"],
        operation=m["operation"],
        applied=m["applied"] or {},
        seed=m["seed"],
        cost_usd=m["cost_usd"],
        width=m["width"],
        height=m["height"],
        format=m["format"],
        bytes=m["bytes"],
        sha256=m["sha256"],
        session_id=m["session_id"],
        turn=m["turn"],
        job_id=m["job_id"],
        edited_from=m["edited_from"],
        embedded=bool(m["embedded"]),
    )


class ImageRecords:
    """The ``images`` table (and ``library_meta``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writing ---------------------------------------------------------------------

    async def add(self, entry: ImageEntry) -> ImageEntry:
        """Insert (or replace: a file overwritten in place) the row for one image."""
        async with self._db.write(durable=False) as conn:
            await conn.execute(delete(images).where(images.c.relative == entry.relative))
            result = await conn.execute(insert(images).values(**entry.values()).returning(images.c.id))
            entry.id = int(result.scalar_one())
        return entry

    async def add_many(self, entries: Sequence[ImageEntry]) -> int:
        """Insert rows for images not yet indexed (by relative path); returns how many."""
        if not entries:
            return 0
        dialect_insert: Any
        if self._db.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        async with self._db.write() as conn:
            known = set((await conn.execute(select(images.c.relative))).scalars())
            fresh = [e.values() for e in entries if e.relative not in known]
            if not fresh:
                return 0
            # A call may index one of these images meanwhile: its row wins, quietly.
            await conn.execute(dialect_insert(images).on_conflict_do_nothing(index_elements=["relative"]), fresh)
            after = set((await conn.execute(select(images.c.relative))).scalars())
        return len(after - known)

    async def tag_turn(self, relatives: Sequence[str], session_id: str, turn: int | None) -> None:
        """Record which session turn made these images (known once the turn is recorded)."""
        if not relatives:
            return
        async with self._db.write(durable=False) as conn:
            await conn.execute(
                update(images).where(images.c.relative.in_(list(relatives))).values(session_id=session_id, turn=turn)
            )

    async def remove(self, relatives: Sequence[str]) -> int:
        if not relatives:
            return 0
        async with self._db.write() as conn:
            result = await conn.execute(delete(images).where(images.c.relative.in_(list(relatives))))
            return int(result.rowcount or 0)

    async def get_meta(self, key: str) -> str | None:
        async with self._db.read() as conn:
            return (await conn.execute(select(library_meta.c.value).where(library_meta.c.key == key))).scalar()

    async def set_meta(self, key: str, value: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(library_meta).where(library_meta.c.key == key))
            await conn.execute(insert(library_meta).values(key=key, value=value))

    # -- reading ---------------------------------------------------------------------

    async def get(self, relative: str) -> ImageEntry | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(images).where(images.c.relative == relative))).first()
        return None if row is None else _entry(row)

    async def by_sha256(self, sha256: str, *, principal: str | None = None) -> ImageEntry | None:
        """The newest image with these exact bytes (how an input is recognised as one of ours)."""
        query = select(images).where(images.c.sha256 == sha256)
        if principal is not None:
            query = query.where(images.c.principal == principal)
        query = query.order_by(images.c.created_at.desc(), images.c.id.desc()).limit(1)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _entry(row)

    def _text_match(self, words: list[str]) -> Any:
        if self._db.dialect == "sqlite":
            match = " ".join(f'"{word}"*' for word in words)
            return images.c.id.in_(
                select(literal_column("rowid"))
                .select_from(text("images_fts"))
                .where(text("images_fts MATCH :match").bindparams(match=match))
            )
        tsquery = " & ".join(f"{word}:*" for word in (w.replace("'", "") for w in words) if word)
        vector = func.to_tsvector("simple", func.coalesce(images.c.prompt, ""))
        return vector.op("@@")(func.to_tsquery("simple", tsquery))

    async def search(self, query: ImageQuery) -> tuple[list[ImageEntry], str | None]:
        """One page, newest first, and the cursor of the next page (None at the end)."""
        if not 1 <= query.limit <= MAX_PAGE:
            raise InvalidParameterError(
                "limit",
                query.limit,
                f"must be between 1 and {MAX_PAGE}",
                fix=f"pass limit between 1 and {MAX_PAGE} and page with cursor",
            )
        where: list[Any] = []
        if query.text is not None and query.text.strip():
            words = _words(query.text)
            if not words:
                raise InvalidParameterError(
                    "query",
                    query.text,
                    "has no words to search for",
                    fix="pass words from the prompt, e.g. query='red fox'",
                )
            where.append(self._text_match(words))
        for name in ("principal", "model", "provider", "session_id", "job_id", "edited_from"):
            value = getattr(query, name)
            if value is not None:
                where.append(images.c[name] == value)
        if query.since is not None:
            where.append(images.c.created_at >= query.since)
        if query.until is not None:
            where.append(images.c.created_at <= query.until)
        if query.cursor:
            created_at, row_id = _decode_cursor(query.cursor)
            where.append(
                or_(images.c.created_at < created_at, and_(images.c.created_at == created_at, images.c.id < row_id))
            )
        statement = (
            select(images).where(*where).order_by(images.c.created_at.desc(), images.c.id.desc()).limit(query.limit + 1)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(statement)).all()
        entries = [_entry(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return entries, (self.cursor_after(entries[-1]) if more and entries else None)

    @staticmethod
    def cursor_after(entry: ImageEntry) -> str:
        """The cursor of the page that starts after ``entry``."""
        assert entry.id is not None
        return _encode_cursor(entry.created_at, entry.id)

    async def oldest_first(self) -> list[ImageEntry]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(images).order_by(images.c.created_at, images.c.id))).all()
        return [_entry(row) for row in rows]

    async def totals(self, *, principal: str | None = None) -> tuple[int, int]:
        """(number of images, total bytes)."""
        query = select(func.count(), func.coalesce(func.sum(images.c.bytes), 0))
        if principal is not None:
            query = query.where(images.c.principal == principal)
        async with self._db.read() as conn:
            count, total = (await conn.execute(query)).one()
        return int(count), int(total)

    async def cost_per_day(self, *, principal: str | None = None, limit: int = 60) -> list[dict[str, Any]]:
        """Spend and image count per UTC day, newest first."""
        query = select(images.c.created_at, images.c.cost_usd)
        if principal is not None:
            query = query.where(images.c.principal == principal)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        days: dict[str, list[float]] = {}
        for created_at, cost in rows:
            day = _dt.datetime.fromtimestamp(created_at, _dt.UTC).date().isoformat()
            count_cost = days.setdefault(day, [0, 0.0])
            count_cost[0] += 1
            count_cost[1] += cost or 0.0
        ordered = sorted(days.items(), reverse=True)[:limit]
        return [{"day": day, "images": int(n), "cost_usd": round(total, 6)} for day, (n, total) in ordered]

    async def sessions(self, *, principal: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Edit sessions with images, the most recently used first."""
        latest = func.max(images.c.created_at)
        query = (
            select(images.c.session_id, func.count(), latest, func.sum(images.c.cost_usd))
            .where(images.c.session_id.is_not(None))
            .group_by(images.c.session_id)
            .order_by(latest.desc())
            .limit(limit)
        )
        if principal is not None:
            query = query.where(images.c.principal == principal)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            {
                "session_id": sid,
                "images": int(n),
                "last": _dt.datetime.fromtimestamp(last, _dt.UTC).isoformat(timespec="seconds"),
                "cost_usd": round(cost, 6) if cost is not None else None,
            }
            for sid, n, last, cost in rows
        ]

    async def distinct(self, column: str, *, principal: str | None = None) -> list[str]:
        """The distinct non-empty values of ``model`` or ``provider`` (for filter menus)."""
        if column not in ("model", "provider"):
            raise ValueError(column)
        col = images.c[column]
        query = select(col).where(col.is_not(None)).distinct().order_by(col)
        if principal is not None:
            query = query.where(images.c.principal == principal)
        async with self._db.read() as conn:
            return [str(v) for v in (await conn.execute(query)).scalars()]
