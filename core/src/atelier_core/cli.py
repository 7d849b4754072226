"""The ``atelier-mcp`` command.

::

    atelier-mcp                     serve MCP over stdio (what MCP clients start)
    atelier-mcp serve [--http]      stdio, or streamable HTTP (127.0.0.1:8765/mcp by default)
    atelier-mcp models [--json]     the model catalogue
    atelier-mcp generate PROMPT     one-off generation; prints the saved path(s)
    atelier-mcp edit IMAGE...       one-off edit; prints the saved path(s)
    atelier-mcp doctor              settings, plugins and providers; spends nothing
    atelier-mcp demo                drives a real stdio server with the MCP client, offline

Logs go to stderr; stdout carries only the command's output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atelier_core import __version__
from atelier_core.plugin.errors import AtelierError
from atelier_core.settings import Settings, config_path
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall

__all__ = ["main"]

# Absolute: after a plain install the repository's docs/ folder is not on the user's disk.
CONFIGURATION_DOCS = "https://github.com/atelier-mcp/atelier/blob/main/docs/configuration.md"
PLACEHOLDER_NOTICE = (
    "The placeholder provider draws placeholder pictures (a gradient, shapes and the prompt's "
    f"words) locally. They are NOT AI images. Configure a real provider for those: see {CONFIGURATION_DOCS}"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier-mcp",
        description="Atelier: one MCP server for every image model. Without a command, serves MCP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"atelier-mcp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve MCP (stdio by default)")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", help="HTTP bind address (default: http.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default: http.port, 8765)")

    models = sub.add_parser("models", help="list models and whether each is available")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.add_argument("--provider", help="only this provider")
    models.add_argument("--capability", choices=[op.value for op in Operation], help="only models that can")

    for name, helptext in (("generate", "generate image(s) from a prompt"), ("edit", "edit image(s)")):
        command = sub.add_parser(name, help=helptext)
        if name == "generate":
            command.add_argument("prompt", help="what to draw")
        else:
            command.add_argument("images", nargs="+", help="input image(s); the first is edited")
            command.add_argument("--prompt", help="the change (omit for a variation where supported)")
            command.add_argument("--mask", help="PNG whose transparent pixels mark the area to change")
        command.add_argument("--model", help="model id or alias (default: default_model)")
        command.add_argument("--size", help="WxH, auto or W:H")
        command.add_argument("--aspect-ratio")
        command.add_argument("--resolution")
        command.add_argument("--quality")
        command.add_argument("--n", type=int, default=1, help="number of images")
        command.add_argument("--output-format")
        command.add_argument("--output-compression", type=int)
        command.add_argument("--background")
        command.add_argument("--seed", type=int)
        command.add_argument("--negative-prompt")
        command.add_argument("--style")
        command.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                             help="model-specific option (repeatable), e.g. --option moderation='\"low\"'")
        command.add_argument("--filename", help="output path relative to the output directory")
        command.add_argument("--overwrite", action="store_true")
        command.add_argument("--dry-run", action="store_true", help="validate and price only")
        command.add_argument("--json", action="store_true", help="print the whole outcome as JSON")

    sub.add_parser("doctor", help="check settings, plugins and providers (spends nothing)")
    usage = sub.add_parser("usage", help="spend by day, provider and model (from the ledger)")
    usage.add_argument("--days", type=int, default=30, help="how many UTC days back (default 30)")
    usage.add_argument("--json", action="store_true", help="print the report as JSON")
    demo = sub.add_parser("demo", help="run an offline end-to-end demo over stdio")
    demo.add_argument("--keep-quiet", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``atelier-mcp``."""
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    try:
        settings = Settings()
    except Exception as exc:  # a bad config file or variable: say which, no traceback
        print(f"atelier-mcp: invalid settings: {_first_lines(exc)}", file=sys.stderr)
        print(f"config file: {config_path()}", file=sys.stderr)
        return 2
    if command == "demo":
        return asyncio.run(_demo())
    _configure_logs(settings)
    try:
        if command == "serve":
            return _serve(settings, args)
        if command == "models":
            return _models(settings, args)
        if command in ("generate", "edit"):
            return asyncio.run(_one_off(settings, args, command))
        if command == "doctor":
            return asyncio.run(_doctor(settings))
        if command == "usage":
            return _usage(settings, args)
    except AtelierError as exc:
        print(f"atelier-mcp {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {command}")  # argparse restricts the choices


def _first_lines(exc: BaseException) -> str:
    return " ".join(str(exc).strip().splitlines()[:3])[:500]


def _configure_logs(settings: Settings) -> None:
    from atelier_core.logging import add_url_credentials, configure_logging

    add_url_credentials(settings.model_dump(mode="json"))
    configure_logging(settings.logging, secrets=_secret_values(settings))


def _secret_values(settings: Settings) -> list[str]:
    """Secrets known before providers are configured (for redaction)."""
    found = [settings.http.auth_token.get_secret_value()] if settings.http.auth_token else []
    for table in settings.providers.values():
        for key, value in table.items():
            if "key" in key.lower() or "token" in key.lower() or "secret" in key.lower():
                if isinstance(value, str) and value:
                    found.append(value)
    return found


def _build(settings: Settings) -> Any:
    from atelier_core.engine.pipeline import Pipeline

    return Pipeline.build(settings)


# -- usage ---------------------------------------------------------------------------------


def _usage(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.engine.cost import Ledger, usage_report
    from atelier_core.state.database import StateStore

    report = usage_report(Ledger(StateStore.open(settings.resolved_data_dir)), days=max(1, args.days))
    limits = settings.cost.model_dump(exclude={"prices"}, exclude_none=True)
    if args.json:
        print(json.dumps({**report, "limits": limits}, indent=2))
        return 0
    print(f"Spend since {report['since']} (UTC): ${report['total_usd']:.4f} on "
          f"{report['images']} image(s) in {report['calls']} call(s)")
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


# -- serve ---------------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.mcp.app import serve_stdio
    from atelier_core.mcp.http import serve_http

    atelier = _build(settings)
    if getattr(args, "http", False):
        asyncio.run(serve_http(atelier, host=args.host, port=args.port))
    else:
        serve_stdio(atelier)
    return 0


# -- models --------------------------------------------------------------------------------


def _models(settings: Settings, args: argparse.Namespace) -> int:
    atelier = _build(settings)
    data = atelier.describe_models(provider=args.provider, capability=args.capability)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [("MODEL", "AVAILABLE", "OPERATIONS", "SIZES")]
    for model in data["models"]:
        sizes = model["sizes"]
        shown = ", ".join(sizes.get("presets", [])[:3] or sizes.get("aspect_ratios", [])[:4]) or "-"
        rows.append((model["id"], "yes" if model["available"] else "no",
                     ",".join(model["operations"]), shown))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
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


# -- generate / edit ------------------------------------------------------------------------


async def _one_off(settings: Settings, args: argparse.Namespace, command: str) -> int:
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, raw = item.partition("=")
        if not sep:
            print(f"atelier-mcp {command}: --option {item!r} must be KEY=VALUE", file=sys.stderr)
            return 2
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    values: dict[str, Any] = {
        "model": args.model, "n": args.n, "size": args.size, "aspect_ratio": args.aspect_ratio,
        "resolution": args.resolution, "quality": args.quality, "output_format": args.output_format,
        "output_compression": args.output_compression, "background": args.background,
        "seed": args.seed, "negative_prompt": args.negative_prompt, "style": args.style,
        "options": options,
    }
    if command == "generate":
        values["prompt"] = args.prompt
        operation = Operation.GENERATE
    else:
        # Paths given on the command line are the user's own files: allow their folders.
        values.update(prompt=args.prompt, images=[_absolute(p) for p in args.images],
                      mask=_absolute(args.mask) if args.mask else None)
        extra = {str(Path(p).parent) for p in values["images"] if "://" not in p and not p.startswith("data:")}
        if values["mask"]:
            extra.add(str(Path(values["mask"]).parent))
        settings = settings.model_copy(update={"storage": settings.storage.model_copy(
            update={"input_dirs": [*settings.storage.input_dirs, *map(Path, sorted(extra))]})})
        operation = Operation.EDIT
    call = ImageCall(**{k: v for k, v in values.items() if v is not None})
    atelier = _build(settings)
    try:
        outcome = await atelier.execute(call, operation, filename=args.filename,
                                        overwrite=args.overwrite, dry_run=args.dry_run)
    finally:
        await atelier.aclose()
    if args.json:
        print(outcome.model_dump_json(indent=2))
        return 0
    if outcome.dry_run:
        estimate = outcome.cost.estimate_usd
        print(f"dry run: {outcome.model} accepts this call; estimated cost "
              f"{'unknown' if estimate is None else f'${estimate:.4f}'}")
        print("applied: " + json.dumps(outcome.applied))
    for image in outcome.images:
        print(image.path)
    for failure in outcome.failures:
        print(f"image {failure.index} failed ({failure.code}): {failure.message}", file=sys.stderr)
    for note in outcome.notes:
        print(f"note: {note}", file=sys.stderr)
    if outcome.provider == "placeholder" and not outcome.dry_run:
        print(f"note: {PLACEHOLDER_NOTICE}", file=sys.stderr)
    return 0


def _absolute(reference: str) -> str:
    if "://" in reference or reference.startswith("data:"):
        return reference
    path = Path(reference).expanduser()
    return str(path.resolve()) if path.exists() else reference


# -- doctor --------------------------------------------------------------------------------


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


async def _doctor(settings: Settings) -> int:
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
    atelier = _build(settings)
    registry = atelier.registry
    print("plugins:")
    for record in registry.plugins:
        line = f"  {record.name}: {record.status} ({record.source})"
        if record.providers:
            line += f" providers={','.join(record.providers)}"
        if record.error:
            line += f" error={record.error}"
        print(line)
    for problem in registry.problems:
        print(f"  problem: {problem}")
    print("providers:")
    for name, provider in sorted(registry.providers.items()):
        add_url_credentials(dict(provider.settings))
        shown = _show_secrets(dict(provider.settings))
        print(f"  {name}: {json.dumps(shown, default=str)}")
        for entry in registry.entries(provider=name):
            reason = entry.unavailable_reason()
            print(f"    {entry.canonical_id}: {'available' if reason is None else 'unavailable: ' + reason}")
    ready = [e.canonical_id for e in registry.entries() if e.unavailable_reason() is None]
    print(f"ready: {len(ready)} model(s) available" + (f": {', '.join(ready)}" if ready else ""))
    await atelier.aclose()
    return 0


# -- demo ----------------------------------------------------------------------------------


async def _demo() -> int:
    from atelier_core.mcp.client import run_demo

    return await run_demo(PLACEHOLDER_NOTICE)
