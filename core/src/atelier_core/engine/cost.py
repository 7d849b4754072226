"""Cost: quotes from price tables, spend limits enforced before a call, and the ledger.

Every call is quoted before it is sent (``Quote``). The :class:`SpendGuard` refuses a
call that would cross a configured limit — per call, per UTC day, per server run — with
the figures and how to raise the limit, and reserves the quote while the call runs so
concurrent calls cannot overspend together. After the call, the :class:`Ledger` records
what was billed; failed calls that were not billed are not recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from atelier_core.identity import current_principal
from atelier_core.plugin.errors import ConfigurationError, SpendLimitError
from atelier_core.plugin.spec import ModelSpec, Pricing
from atelier_core.settings import CostSettings
from atelier_core.state.ledger import Ledger, LedgerEntry, Spent
from atelier_core.state.store import StateStore

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


async def usage_report(ledger: Ledger, *, days: int = 30, principal: str | None = None) -> dict[str, Any]:
    """Spend by day, provider and model over the last ``days`` UTC days (summed in SQL),
    of ``principal`` (default: the one the current call acts for)."""
    since = (datetime.now(UTC) - timedelta(days=max(0, days - 1))).strftime("%Y-%m-%d")
    rows = await ledger.usage(since_day=since, principal=principal or current_principal())
    by_day: dict[str, float] = {}
    by_provider: dict[str, float] = {}
    by_model: dict[str, dict[str, float]] = {}
    total = 0.0
    images = 0
    calls = 0
    for row in rows:
        total += row.usd
        images += row.images
        calls += row.calls
        by_day[row.day] = by_day.get(row.day, 0.0) + row.usd
        by_provider[row.provider] = by_provider.get(row.provider, 0.0) + row.usd
        model = by_model.setdefault(row.model, {"usd": 0.0, "images": 0, "calls": 0})
        model["usd"] += row.usd
        model["images"] += row.images
        model["calls"] += row.calls
    rounded = {k: round(v, 6) for k, v in by_day.items()}
    return {
        "since": since,
        "days": days,
        "total_usd": round(total, 6),
        "calls": calls,
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
    :class:`SpendLimitError`. ``admit`` does the same and, when a daily or per-run limit
    is set, holds the quote in the state database until ``record`` or ``release``:
    atomically across processes and replicas, so racing calls cannot overspend together.
    """

    #: A hold outlives a process that died mid-call by at most this long.
    reservation_ttl_s = 3600.0

    def __init__(
        self, settings: CostSettings, state: StateStore | Callable[[], StateStore] | None, run_id: str
    ) -> None:
        self.settings = settings
        self._state = state
        self.run_id = run_id

    @property
    def state(self) -> StateStore | None:
        """The state database (opened on first use when given as a factory)."""
        if self._state is not None and not isinstance(self._state, StateStore):
            self._state = self._state()
        return self._state

    @property
    def limited(self) -> bool:
        s = self.settings
        return any(v is not None for v in (s.max_per_call_usd, s.max_per_day_usd, s.max_per_run_usd, s.ask_above_usd))

    @property
    def _budgeted(self) -> bool:
        """A limit that needs what was already spent (and held)."""
        return self.settings.max_per_day_usd is not None or self.settings.max_per_run_usd is not None

    async def check(self, quote: Quote, model: str) -> Verdict:
        """The verdict for ``quote`` now, holding nothing (dry runs, asking first)."""
        if not self._needs_spent(quote):
            return self._verdict(quote, model, None)
        assert self.state is not None
        spent = await self.state.reservations.spent(day=_today(), run_id=self.run_id, principal=current_principal())
        return self._verdict(quote, model, spent)

    async def admit(self, quote: Quote, model: str) -> tuple[Verdict, str | None]:
        """Check ``quote`` and, under a daily or per-run limit, hold it until :meth:`record`
        or :meth:`release`. Returns the verdict and the hold (``None`` when none is needed)."""
        if not self._needs_spent(quote):
            return self._verdict(quote, model, None), None
        assert self.state is not None and quote.estimate_usd is not None
        verdicts: list[Verdict] = []

        def policy(spent: Spent) -> None:
            verdicts.append(self._verdict(quote, model, spent))

        self._verdict(quote, model, None, budget=False)  # per-call refusals need no database
        hold = await self.state.reservations.reserve(
            quote.estimate_usd,
            day=_today(),
            run_id=self.run_id,
            ttl_s=self.reservation_ttl_s,
            check=policy,
            principal=current_principal(),
        )
        return verdicts[0], hold

    async def release(self, hold: str | None) -> None:
        if hold is not None and self.state is not None:
            await self.state.reservations.release(hold)

    def _needs_spent(self, quote: Quote) -> bool:
        return self.state is not None and self._budgeted and quote.estimate_usd is not None

    def _verdict(self, quote: Quote, model: str, spent: Spent | None, *, budget: bool = True) -> Verdict:
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
        if budget:
            day, run = (spent.day, spent.run) if spent is not None else (0.0, 0.0)
            if s.max_per_day_usd is not None and day + estimate > s.max_per_day_usd + 1e-12:
                raise self._refusal("daily", s.max_per_day_usd, day, estimate, "MAX_PER_DAY_USD")
            if s.max_per_run_usd is not None and run + estimate > s.max_per_run_usd + 1e-12:
                raise self._refusal("per-run", s.max_per_run_usd, run, estimate, "MAX_PER_RUN_USD")
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

    async def record(
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
        hold: str | None = None,
    ) -> None:
        """Add the call to the ledger; its ``hold`` (if any) ends in the same transaction."""
        if self.state is None:
            return
        await self.state.ledger.record(
            LedgerEntry(
                at=time.time(),
                day=_today(),
                run_id=self.run_id,
                provider=provider,
                model=model,
                operation=operation,
                images=images,
                estimate_usd=quote.estimate_usd,
                cost_usd=cost_usd,
                status=status,
                usage=usage,
                request_id=request_id,
                job_id=job_id,
                principal=current_principal(),
            ),
            release=hold,
        )
