"""The health view (the ``health`` tool): is this server ready to make images?

Gathered from what is already known locally — settings, the registry, the folders, the
job store and the ledger. It sends nothing to any provider and bills nothing.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from atelier_core import __version__
from atelier_core.identity import current_principal

if TYPE_CHECKING:
    from atelier_core.engine.jobs import JobManager
    from atelier_core.engine.pipeline import Pipeline

__all__ = ["health_report"]


def _writable(directory: Path) -> str:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".health-", delete=True):
            pass
        return "writable"
    except OSError as exc:
        return f"not writable ({exc.strerror or type(exc).__name__})"


async def health_report(pipe: Pipeline, jobs: JobManager | None = None) -> dict[str, Any]:
    """``status`` (ok, degraded, or no_models) and the facts behind it."""
    settings = pipe.settings
    registry = pipe.registry
    providers: dict[str, dict[str, Any]] = {}
    for name in sorted(registry.providers):
        entries = list(registry.entries(provider=name))
        reasons = [entry.unavailable_reason() for entry in entries]
        usable = sum(reason is None for reason in reasons)
        info: dict[str, Any] = {"models": len(entries), "available": usable}
        if entries and not usable:
            info["reason"] = next(r for r in reasons if r)
        providers[name] = info
    diagnostics = registry.diagnostics()
    problems = [p for p in diagnostics.get("plugins", []) if p.get("status") != "loaded"]
    problems += [{"problem": text} for text in diagnostics.get("problems", [])]
    folders = {
        "output": await anyio.to_thread.run_sync(_writable, settings.output_dir),
        "data": await anyio.to_thread.run_sync(_writable, settings.resolved_data_dir),
    }
    available = sum(info["available"] for info in providers.values())
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    report: dict[str, Any] = {
        "version": __version__,
        "models": {"total": sum(info["models"] for info in providers.values()), "available": available},
        "providers": providers,
        "folders": folders,
        "spend": {
            "today_usd": round(await pipe.ledger.spent(day=today, principal=current_principal()), 6),
            "limits": settings.cost.model_dump(exclude={"prices"}, exclude_none=True),
        },
    }
    if settings.default_model:
        report["default_model"] = settings.default_model
    if problems:
        report["plugin_problems"] = problems
    if jobs is not None:
        report["jobs"] = {"unfinished": len(await jobs.recent(limit=1000, include_finished=False))}
    broken = problems or any(state != "writable" for state in folders.values())
    report["status"] = "no_models" if not available else "degraded" if broken else "ok"
    return report
