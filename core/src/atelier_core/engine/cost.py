"""Cost: quotes from price tables, spend limits enforced before a call, and the ledger.

Every call is quoted before it is sent (``Quote``). The :class:`SpendGuard` refuses a
call that would cross a configured limit — per call, per UTC day, per server run — with
the figures and how to raise the limit, and reserves the quote while the call runs so
concurrent calls cannot overspend together. After the call, the :class:`Ledger` records
what was billed; failed calls that were not billed are not recorded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from atelier_core.plugin.errors import ConfigurationError, SpendLimitError
from atelier_core.settings import CostSettings
from atelier_core.plugin.spec import ModelSpec, Pricing
from atelier_core.state.database import StateStore

__all__ = [
    "Ledger",
    "LedgerEntry",
    "Quote",
    "SpendGuard",
    "apply_price_override",
    "usage_report",
]

Verdict = Literal["ok", "ask"]


class Quote(BaseModel):
    """The price of one call, estimated before it is sent."""

    estimate_usd: float | None
    images: int
    basis: str
    pricing_as_of: str | None = None
    pricing_source: str | None = None


def apply_price_override(spec: ModelSpec, canonical_id: str, settings: CostSettings) -> ModelSpec:
    """The spec with ``cost.prices[<canonical id>]`` merged over its price table."""
    override = settings.prices.get(canonical_id) or settings.prices.get(spec.id)
    if not override:
        return spec
    base = spec.pricing.model_dump() if spec.pricing else {"as_of": "configured"}
    merged = {**base, **override}
    merged.setdefault("source", "configuration")
    if "as_of" not in override:
        merged["as_of"] = "configured"
        merged["source"] = "configuration"
    try:
        pricing = Pricing.model_validate(merged)
    except Exception as exc:
        raise ConfigurationError(
            f"cost.prices[{canonical_id!r}] is invalid: {str(exc).splitlines()[0]}",
            fix="use keys per_image, per_image_by_quality, per_image_by_size, "
            "per_image_by_quality_size, input_text_per_mtok, input_image_per_mtok, "
            "output_image_per_mtok, as_of",
        ) from None
    return spec.model_copy(update={"pricing": pricing})


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


@dataclass(slots=True)
class LedgerEntry:
    at: float
    day: str
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


# Schema history of the ledger component (append only; see store.py).
_MIGRATIONS = ["""
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    day TEXT NOT NULL,
    run_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    images INTEGER NOT NULL,
    estimate_usd REAL,
    cost_usd REAL,
    status TEXT NOT NULL,
    usage TEXT,
    request_id TEXT,
    job_id TEXT
);
CREATE INDEX ledger_day ON ledger(day);
CREATE INDEX ledger_run ON ledger(run_id);
"""]


class Ledger:
    """Billed calls, in the state database (table ``ledger``)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        store.migrate("ledger", _MIGRATIONS)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = self._store.connect()
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def record(self, entry: LedgerEntry) -> None:
        with self._lock, self._conn() as conn:
            conn.execute(
                "INSERT INTO ledger (at, day, run_id, provider, model, operation, images,"
                " estimate_usd, cost_usd, status, usage, request_id, job_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.at, entry.day, entry.run_id, entry.provider, entry.model,
                    entry.operation, entry.images, entry.estimate_usd, entry.cost_usd,
                    entry.status, json.dumps(entry.usage) if entry.usage else None,
                    entry.request_id, entry.job_id,
                ),
            )

    def spent(self, *, day: str | None = None, run_id: str | None = None) -> float:
        """USD billed on a UTC day or in a server run (actual cost, else the estimate)."""
        clauses, args = [], []
        if day is not None:
            clauses.append("day = ?")
            args.append(day)
        if run_id is not None:
            clauses.append("run_id = ?")
            args.append(run_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT COALESCE(SUM(COALESCE(cost_usd, estimate_usd, 0)), 0) FROM ledger {where}",
                args,
            ).fetchone()
        return float(row[0])

    def rows(self, *, since_day: str) -> list[dict[str, Any]]:
        with self._conn() as conn:
            conn.row_factory = sqlite3.Row
            cursor = conn.execute("SELECT * FROM ledger WHERE day >= ? ORDER BY at", (since_day,))
            return [dict(row) for row in cursor.fetchall()]


def usage_report(ledger: Ledger, *, days: int = 30) -> dict[str, Any]:
    """Spend by day, provider and model over the last ``days`` UTC days."""
    since = (datetime.now(UTC) - timedelta(days=max(0, days - 1))).strftime("%Y-%m-%d")
    rows = ledger.rows(since_day=since)
    by_day: dict[str, float] = {}
    by_provider: dict[str, float] = {}
    by_model: dict[str, dict[str, float]] = {}
    total = 0.0
    images = 0
    for row in rows:
        usd = row["cost_usd"] if row["cost_usd"] is not None else (row["estimate_usd"] or 0.0)
        total += usd
        images += row["images"]
        by_day[row["day"]] = by_day.get(row["day"], 0.0) + usd
        by_provider[row["provider"]] = by_provider.get(row["provider"], 0.0) + usd
        model = by_model.setdefault(row["model"], {"usd": 0.0, "images": 0, "calls": 0})
        model["usd"] += usd
        model["images"] += row["images"]
        model["calls"] += 1
    rounded = {k: round(v, 6) for k, v in by_day.items()}
    return {
        "since": since,
        "days": days,
        "total_usd": round(total, 6),
        "calls": len(rows),
        "images": images,
        "by_day": dict(sorted(rounded.items())),
        "by_provider": {k: round(v, 6) for k, v in sorted(by_provider.items())},
        "by_model": {
            k: {"usd": round(v["usd"], 6), "images": int(v["images"]), "calls": int(v["calls"])}
            for k, v in sorted(by_model.items())
        },
    }


class SpendGuard:
    """Enforces the spend limits of :class:`~atelier_core.settings.CostSettings`.

    ``check`` returns ``"ok"`` or ``"ask"`` (above the ask-first threshold) or raises
    :class:`SpendLimitError`. ``admit`` checks a quote and holds it until ``release``.
    """

    def __init__(
        self, settings: CostSettings, ledger: Ledger | Callable[[], Ledger] | None, run_id: str
    ) -> None:
        self.settings = settings
        self._ledger = ledger
        self.run_id = run_id
        self._pending: dict[int, float] = {}
        self._next = 0
        self._lock = threading.Lock()

    @property
    def ledger(self) -> Ledger | None:
        """The ledger (opened on first use when given as a factory)."""
        if self._ledger is not None and not isinstance(self._ledger, Ledger):
            self._ledger = self._ledger()
        return self._ledger

    @property
    def limited(self) -> bool:
        s = self.settings
        return any(
            v is not None
            for v in (s.max_per_call_usd, s.max_per_day_usd, s.max_per_run_usd, s.ask_above_usd)
        )

    def _pending_total(self) -> float:
        return sum(self._pending.values())

    def check(self, quote: Quote, model: str) -> Verdict:
        s = self.settings
        if not self.limited:
            return "ok"
        if quote.estimate_usd is None:
            if s.allow_unpriced:
                return "ok"
            raise SpendLimitError(
                f"{model} has no known price, and spend limits are configured",
                parameter="model",
                value=model,
                fix=f"set a price with cost.prices.{model!r} (e.g. per_image = 0.04) or "
                "set cost.allow_unpriced = true (ATELIER_COST__ALLOW_UNPRICED=true)",
            )
        estimate = quote.estimate_usd
        if s.max_per_call_usd is not None and estimate > s.max_per_call_usd:
            raise self._refusal("per-call", s.max_per_call_usd, 0.0, estimate, "MAX_PER_CALL_USD")
        pending = self._pending_total()
        if s.max_per_day_usd is not None:
            spent = (self.ledger.spent(day=_today()) if self.ledger else 0.0) + pending
            if spent + estimate > s.max_per_day_usd + 1e-12:
                raise self._refusal("daily", s.max_per_day_usd, spent, estimate, "MAX_PER_DAY_USD")
        if s.max_per_run_usd is not None:
            spent = (self.ledger.spent(run_id=self.run_id) if self.ledger else 0.0) + pending
            if spent + estimate > s.max_per_run_usd + 1e-12:
                raise self._refusal("per-run", s.max_per_run_usd, spent, estimate, "MAX_PER_RUN_USD")
        if s.ask_above_usd is not None and estimate > s.ask_above_usd:
            return "ask"
        return "ok"

    def _refusal(self, kind: str, limit: float, spent: float, estimate: float, var: str) -> SpendLimitError:
        key = var.lower()
        return SpendLimitError(
            f"refused before sending: this call's estimate ${estimate:.4f} would exceed the "
            f"{kind} spend limit of ${limit:.2f} (already spent ${spent:.4f})",
            fix=f"raise cost.{key} in the config file or ATELIER_COST__{var}, "
            "or ask for fewer/cheaper images (dry_run=true shows the quote)",
        )

    def ask_refusal(self, quote: Quote, *, asked: bool = True) -> SpendLimitError:
        threshold = self.settings.ask_above_usd or 0.0
        why = "the user did not confirm" if asked else "this client cannot ask the user (no elicitation)"
        return SpendLimitError(
            f"refused before sending: the estimate ${quote.estimate_usd or 0:.4f} is above the "
            f"ask-first threshold ${threshold:.2f} and {why}",
            fix="confirm when asked, or raise cost.ask_above_usd (ATELIER_COST__ASK_ABOVE_USD)",
        )

    def admit(self, quote: Quote, model: str) -> tuple[Verdict, int]:
        """Check ``quote`` and, if allowed, hold it until :meth:`release` (atomically, so
        concurrent calls cannot pass the same check and overspend together)."""
        with self._lock:
            verdict = self.check(quote, model)
            self._next += 1
            token = self._next
            self._pending[token] = quote.estimate_usd or 0.0
        return verdict, token

    def release(self, token: int) -> None:
        with self._lock:
            self._pending.pop(token, None)

    def record(
        self,
        *,
        provider: str,
        model: str,
        operation: str,
        images: int,
        quote: Quote,
        cost_usd: float | None,
        status: str,
        usage: dict[str, Any] | None,
        request_id: str | None,
        job_id: str | None = None,
    ) -> None:
        if self.ledger is None:
            return
        self.ledger.record(
            LedgerEntry(
                at=time.time(), day=_today(), run_id=self.run_id, provider=provider, model=model,
                operation=operation, images=images, estimate_usd=quote.estimate_usd,
                cost_usd=cost_usd, status=status, usage=usage, request_id=request_id, job_id=job_id,
            )
        )
