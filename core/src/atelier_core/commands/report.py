"""``atelier-mcp models``, ``usage`` and ``doctor``: what is configured, available and spent."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from atelier_core import __version__
from atelier_core.commands import build
from atelier_core.settings import Settings, config_path

__all__ = ["doctor", "models", "usage"]


def usage(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.engine.cost import usage_report
    from atelier_core.state.store import StateStore

    async def read() -> dict[str, Any]:
        state = await StateStore.open(settings)
        try:
            return await usage_report(state.ledger, days=max(1, args.days))
        finally:
            await state.aclose()

    report = asyncio.run(read())
    limits = settings.cost.model_dump(exclude={"prices"}, exclude_none=True)
    if args.json:
        print(json.dumps({**report, "limits": limits}, indent=2))
        return 0
    print(
        f"Spend since {report['since']} (UTC): ${report['total_usd']:.4f} on "
        f"{report['images']} image(s) in {report['calls']} call(s)"
    )
    for title, rows in (("By day", report["by_day"]), ("By provider", report["by_provider"])):
        print(f"{title}:")
        for key, usd in rows.items():
            print(f"  {key:<24} ${usd:.4f}")
    print("By model:")
    for model, row in report["by_model"].items():
        print(f"  {model:<32} ${row['usd']:.4f}  {row['images']} image(s), {row['calls']} call(s)")
    shown = {k: v for k, v in limits.items() if k != "allow_unpriced" or v}
    print("Limits: " + (", ".join(f"{k}={v}" for k, v in shown.items()) or "none configured"))
    return 0


def models(settings: Settings, args: argparse.Namespace) -> int:
    atelier = build(settings)
    data = atelier.describe_models(provider=args.provider, capability=args.capability)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [("MODEL", "AVAILABLE", "OPERATIONS", "SIZES")]
    for model in data["models"]:
        sizes = model["sizes"]
        shown = _first_of([*sizes.get("presets", []), *sizes.get("aspect_ratios", [])], 3)
        if sizes.get("custom"):
            shown += " + custom WxH"
        rows.append((model["id"], "yes" if model["available"] else "no", ",".join(model["operations"]), shown))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if any("more)" in row[3] for row in rows[1:]):
        print("(SIZES shows the first few; atelier-mcp models --json lists every size)")
    reasons: dict[str, list[str]] = {}
    for model in data["models"]:
        if not model["available"]:
            reasons.setdefault(model["reason"], []).append(model["id"])
    for reason, ids in reasons.items():
        print(f"unavailable ({len(ids)} model(s), e.g. {ids[0]}): {reason}")
    problems = data.get("plugin_problems")
    if problems:
        for plugin in problems["plugins"]:
            print(f"plugin {plugin['name']}: {plugin['status']} {plugin.get('error', '')}".rstrip())
        for problem in problems["problems"]:
            print(f"problem: {problem}")
    return 0


def _first_of(values: list[str], count: int) -> str:
    """The first ``count`` values, saying how many more there are when cut short."""
    if not values:
        return "-"
    shown = ", ".join(values[:count])
    return shown if len(values) <= count else f"{shown}, … (+{len(values) - count} more)"


def _show_secrets(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if hasattr(value, "get_secret_value"):
            out[key] = "set" if value.get_secret_value() else "missing"
        elif isinstance(value, dict):
            out[key] = _show_secrets(value)
        elif value is None and any(word in key for word in ("key", "token", "secret")):
            out[key] = "missing"
        else:
            out[key] = value
    return out


def _needs_no_key(provider: Any) -> bool:
    """A provider that works without a key: it reads none (placeholder), or is set up not to."""
    if getattr(provider.settings, "needs_key", True) is False:
        return True
    return not provider.needs_key and not provider.key_env_vars


def _writable(directory: Path) -> str:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-", delete=True):
            pass
        return "writable"
    except OSError as exc:
        return f"NOT writable ({exc.strerror or type(exc).__name__})"


def _print(text: str) -> None:
    """A doctor line, through the core's one redaction (keys, URL credentials)."""
    from atelier_core.logging import scrub

    print(scrub(text))


async def doctor(settings: Settings) -> int:
    from atelier_core.logging import add_url_credentials

    add_url_credentials(settings.model_dump(mode="json"))
    print = _print  # every doctor line below goes through the redaction
    path = config_path()
    print(f"atelier-mcp {__version__} on Python {sys.version.split()[0]}")
    print(f"config file: {path} ({'found' if path.is_file() else 'not found; using defaults and ATELIER_* variables'})")
    print(f"output dir:  {settings.output_dir} ({_writable(settings.output_dir)})")
    print(f"data dir:    {settings.resolved_data_dir} ({_writable(settings.resolved_data_dir)})")
    print(f"default model: {settings.default_model or '(none: callers must name a model)'}")
    core = settings.model_dump(exclude={"providers"})
    core["http"]["auth_token"] = settings.http.auth_token
    print("settings:")
    for section, values in _show_secrets(core).items():
        print(f"  {section}: {json.dumps(values, default=str)}")
    atelier = build(settings)
    registry = atelier.registry
    print("plugins:")
    for record in registry.plugins:
        line = f"  {record.name}: {record.status} ({record.source})"
        if record.providers:
            line += f" providers={','.join(record.providers)}"
        if record.error:
            line += f" error={record.error}"
        print(line)
        if record.traceback:  # plugins.trace: where a plugin's import or hook failed
            print("    " + record.traceback.rstrip().replace("\n", "\n    "))
    for problem in registry.problems:
        print(f"  problem: {problem}")
    print("providers:")
    for name, provider in sorted(registry.providers.items()):
        add_url_credentials(dict(provider.settings))
        shown = _show_secrets(dict(provider.settings))
        if shown.get("api_key") == "missing" and _needs_no_key(provider):
            shown["api_key"] = "not needed"
        print(f"  {name}: {json.dumps(shown, default=str)}")
        for entry in registry.entries(provider=name):
            reason = entry.unavailable_reason()
            print(f"    {entry.canonical_id}: {'available' if reason is None else 'unavailable: ' + reason}")
    ready = [e.canonical_id for e in registry.entries() if e.unavailable_reason() is None]
    print(f"ready: {len(ready)} model(s) available" + (f": {', '.join(ready)}" if ready else ""))
    await atelier.aclose()
    return 0
