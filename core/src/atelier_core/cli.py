"""The ``atelier-mcp`` command.

::

    atelier-mcp                     serve MCP over stdio (what MCP clients start)
    atelier-mcp serve [--http]      stdio, or streamable HTTP (127.0.0.1:8765/mcp by default)
    atelier-mcp models [--json]     the model catalogue
    atelier-mcp generate PROMPT     one-off generation; prints the saved path(s)
    atelier-mcp edit IMAGE...       one-off edit; prints the saved path(s)
    atelier-mcp doctor              settings, plugins and providers; spends nothing
    atelier-mcp usage [--days N]    spend by day, provider and model
    atelier-mcp demo                drives a real stdio server with the MCP client, offline

Logs go to stderr; stdout carries only the command's output. On a terminal, generate/edit
show a progress bar on stderr (rich) and a bare ``atelier-mcp`` says what it is waiting for.
Errors name options and commands (``--model``, ``atelier-mcp models``), not MCP tool
parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from atelier_core import __version__
from atelier_core.engine.progress import Progress
from atelier_core.plugin.errors import AtelierError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings, config_path, unknown_setting_warnings

__all__ = ["main"]

# Absolute: after a plain install the repository's docs/ folder is not on the user's disk.
CONFIGURATION_DOCS = "https://github.com/atelier-mcp/atelier/blob/main/docs/configuration.md"
STDIO_HINT = (
    "atelier-mcp: serving MCP over stdio, waiting for an MCP client to speak on stdin (Ctrl+C stops); "
    'to try it by hand: atelier-mcp demo, atelier-mcp generate "a fox" --model placeholder, atelier-mcp --help'
)
MAX_IMAGES = 100  # per call; each model's own limit is checked before anything is sent
MAX_DAYS = 3650
PLACEHOLDER_NOTICE = (
    "The placeholder provider draws placeholder pictures (a gradient, shapes and the prompt's "
    f"words) locally. They are NOT AI images. Configure a real provider for those: see {CONFIGURATION_DOCS}"
)


def _bounded(low: int, high: int, unit: str) -> Callable[[str], int]:
    """An argparse type: a whole number within [low, high], or an error that says what is allowed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number: use {low} to {high} {unit}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: use {low} to {high} {unit}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier-mcp",
        description="Atelier: one MCP server for every image model. Without a command, serves MCP "
        "over stdio (what MCP clients start).",
        epilog="Settings: ATELIER_* variables or atelier.toml (atelier-mcp doctor shows them); "
        f"every setting: {CONFIGURATION_DOCS}",
    )
    parser.add_argument("--version", action="version", version=f"atelier-mcp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, helptext: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")

    serve = command("serve", "serve MCP over stdio (the default), or over streamable HTTP with --http")
    serve.add_argument(
        "--http",
        action="store_true",
        help="serve streamable HTTP instead of stdio (default address 127.0.0.1:8765/mcp)",
    )
    serve.add_argument("--host", help="HTTP bind address (default: the http.host setting, 127.0.0.1)")
    serve.add_argument(
        "--port", type=_bounded(1, 65535, "(a TCP port)"), help="HTTP port (default: the http.port setting, 8765)"
    )

    models = command("models", "list the models and whether each is available (and why not)")
    models.add_argument("--json", action="store_true", help="print the whole catalogue as JSON")
    models.add_argument("--provider", help="only this provider's models, e.g. openai")
    models.add_argument("--capability", choices=[op.value for op in Operation], help="only models that can do this")

    for name, helptext in (
        ("generate", "generate image(s) from a prompt; prints the saved path(s)"),
        ("edit", "edit image(s), or make a variation; prints the saved path(s)"),
    ):
        one = command(name, helptext)
        if name == "generate":
            one.add_argument("prompt", help="what to draw")
        else:
            one.add_argument(
                "images", nargs="+", metavar="IMAGE", help="input image file(s) or URL(s); the first is the one edited"
            )
            one.add_argument("--prompt", help="the change to make (omit for a variation, where the model offers one)")
            one.add_argument("--mask", help="PNG of the image's size whose transparent pixels mark the area to change")
        one.add_argument(
            "--model",
            help="model id or alias, e.g. openai/gpt-image-2 (default: the "
            "default_model setting; `atelier-mcp models` lists them)",
        )
        one.add_argument("--size", help="WxH in pixels, auto, or an aspect ratio W:H")
        one.add_argument("--aspect-ratio", help="W:H, e.g. 16:9, for models that take a ratio")
        one.add_argument("--resolution", help="resolution class, e.g. 1K, 2K, 4K, for models that take one")
        one.add_argument("--quality", help="e.g. low, medium, high (the model's own values)")
        one.add_argument("--n", type=_bounded(1, MAX_IMAGES, "images"), default=1, help="number of images (default 1)")
        one.add_argument("--output-format", help="png, jpeg or webp (the model's own values)")
        one.add_argument(
            "--output-compression",
            type=_bounded(0, 100, "(100 = least compression)"),
            help="JPEG/WebP compression, 0 to 100",
        )
        one.add_argument("--background", help="transparent, opaque or auto, for models that offer it")
        one.add_argument(
            "--seed",
            type=_bounded(0, 2**32 - 1, "(a seed)"),
            help="seed for reproducible results, for models that take one",
        )
        one.add_argument("--negative-prompt", help="what to keep out of the picture, for models that take it")
        one.add_argument("--style", help="a named style, for models that offer styles")
        one.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=JSON",
            help="model-specific option (repeatable), e.g. --option moderation='\"low\"'",
        )
        one.add_argument("--filename", help="output path relative to the output directory")
        one.add_argument("--overwrite", action="store_true", help="replace an existing file at --filename")
        one.add_argument("--dry-run", action="store_true", help="validate and price the call, send nothing (free)")
        one.add_argument("--json", action="store_true", help="print the whole outcome as JSON")

    command("doctor", "check settings, plugins and providers (spends nothing)")
    usage = command("usage", "spend by day, provider and model (from the ledger)")
    usage.add_argument(
        "--days", type=_bounded(1, MAX_DAYS, "days"), default=30, help="how many UTC days back (default 30)"
    )
    usage.add_argument("--json", action="store_true", help="print the report as JSON")
    command("demo", "run an offline end-to-end demo: a real stdio server driven by the MCP client")
    gallery = command("gallery", "open the image gallery (search, filters, session trees, cost) in a browser")
    gallery.add_argument(
        "--port",
        type=_bounded(0, 65535, "(a TCP port; 0 picks a free one)"),
        default=0,
        help="port on 127.0.0.1 (default: a free one)",
    )
    gallery.add_argument("--no-open", action="store_true", help="print the address, do not open a browser")
    prune = command(
        "prune",
        "delete the oldest images beyond the retention limits (never one an open session or unfinished job needs)",
    )
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    prune.add_argument(
        "--max-total-bytes",
        type=_bounded(0, 2**62, "bytes"),
        help="keep the library under this size (default: the library.max_total_bytes setting)",
    )
    prune.add_argument(
        "--max-age-days",
        type=_bounded(1, 100_000, "days"),
        help="delete images older than this (default: the library.max_age_days setting)",
    )
    prune.add_argument("--json", action="store_true", help="print the plan as JSON")
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
    for warning in unknown_setting_warnings():
        print(f"atelier-mcp: warning: {warning}", file=sys.stderr)
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
        if command == "gallery":
            return _gallery(settings, args)
        if command == "prune":
            return asyncio.run(_prune(settings, args))
    except AtelierError as exc:
        print(f"atelier-mcp {command}: {_cli_words(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {command}")  # argparse restricts the choices


# Error messages are written for an MCP client's model (tool names, tool parameters); on the
# command line the same advice names commands and options.
_TOOL_WORDS = (
    (r"Call list_available_models", "Run `atelier-mcp models`"),
    (r"call list_available_models", "run `atelier-mcp models`"),
    (r"\(?list_available_models capability=(\w+)\)?", r"(`atelier-mcp models --capability \1`)"),
    (r"list_available_models", "`atelier-mcp models`"),
    (r"\buse edit_image\b", "use `atelier-mcp edit`"),
    (r"\bgenerate_image\b", "`atelier-mcp generate`"),
    (r"\bedit_image\b", "`atelier-mcp edit`"),
    (r" and restart the server", ""),
)
_OPTION_OF = {"options": "--option", "images": "IMAGE", "prompt": "the prompt"}


def _cli_words(message: str) -> str:
    """``message`` with MCP tool and parameter names replaced by commands and options."""
    for pattern, replacement in _TOOL_WORDS:
        message = re.sub(pattern, replacement, message)
    for field in ImageCall.model_fields:
        option = _OPTION_OF.get(field, "--" + field.replace("_", "-"))
        message = re.sub(rf"(?<![\w.-]){field}=None\b", option, message)
        message = re.sub(rf"(?<![\w.-]){field}=", f"{option} ", message)
        message = re.sub(rf"\b(pass|remove|values for|supports) {field}\b", rf"\1 {option}", message)
    return message


def _first_lines(exc: BaseException) -> str:
    return " ".join(str(exc).strip().splitlines()[:3])[:500]


def _configure_logs(settings: Settings) -> None:
    from atelier_core.logging import add_url_credentials, configure_logging, secrets_of

    add_url_credentials(settings.model_dump(mode="json"))
    configure_logging(settings.logging, secrets=secrets_of(settings))


def _build(settings: Settings) -> Any:
    from atelier_core.engine.pipeline import Pipeline

    return Pipeline.build(settings)


# -- usage ---------------------------------------------------------------------------------


def _usage(settings: Settings, args: argparse.Namespace) -> int:
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


# -- the image library ------------------------------------------------------------------


def _gallery(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.mcp.http import serve_gallery

    asyncio.run(serve_gallery(_build(settings), port=args.port, open_browser=not args.no_open))
    return 0


async def _prune(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.engine.jobs import build_jobs
    from atelier_core.engine.library import open_work_images
    from atelier_core.engine.sessions import SessionManager

    atelier = _build(settings)
    try:
        library = atelier.library
        library.max_total_bytes = (
            args.max_total_bytes if args.max_total_bytes is not None else settings.library.max_total_bytes
        )
        library.max_age_days = args.max_age_days if args.max_age_days is not None else settings.library.max_age_days
        if library.max_total_bytes is None and library.max_age_days is None:
            print(
                "atelier-mcp prune: no limit given: pass --max-total-bytes or --max-age-days, or set "
                "library.max_total_bytes / library.max_age_days (ATELIER_LIBRARY__MAX_TOTAL_BYTES, "
                "ATELIER_LIBRARY__MAX_AGE_DAYS)",
                file=sys.stderr,
            )
            return 2
        await library.backfill()
        sessions = SessionManager(atelier)
        jobs = build_jobs(atelier)

        async def protected() -> set[str]:
            return await open_work_images(library, sessions, jobs)

        library.protected = protected
        plan = await library.enforce_retention(dry_run=args.dry_run)
    finally:
        await atelier.aclose()
    verb = "would delete" if args.dry_run else "deleted"
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": args.dry_run,
                    "total_bytes": plan.total_bytes,
                    "freed_bytes": plan.freed_bytes,
                    "kept_in_use": plan.kept_protected,
                    "images": [
                        {
                            "path": e.relative,
                            "bytes": e.bytes,
                            "created": e.created_iso,
                            "reason": plan.reasons[e.relative],
                        }
                        for e in plan.remove
                    ],
                },
                indent=2,
            )
        )
        return 0
    for entry in plan.remove:
        print(f"{verb}: {entry.relative} ({entry.bytes:,} bytes, {entry.created_iso}; {plan.reasons[entry.relative]})")
    print(
        f"{len(plan.remove)} image(s), {plan.freed_bytes:,} of {plan.total_bytes:,} bytes {verb}; "
        f"{plan.kept_protected} kept because an open session or unfinished job needs them"
    )
    return 0


# -- serve ---------------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.mcp.app import serve_stdio
    from atelier_core.mcp.http import serve_http

    atelier = _build(settings)
    if getattr(args, "http", False):
        asyncio.run(serve_http(atelier, host=args.host, port=args.port))
    else:
        if sys.stdin.isatty():  # a person, not an MCP client (clients talk through a pipe)
            print(STDIO_HINT, file=sys.stderr, flush=True)
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
        "model": args.model,
        "n": args.n,
        "size": args.size,
        "aspect_ratio": args.aspect_ratio,
        "resolution": args.resolution,
        "quality": args.quality,
        "output_format": args.output_format,
        "output_compression": args.output_compression,
        "background": args.background,
        "seed": args.seed,
        "negative_prompt": args.negative_prompt,
        "style": args.style,
        "options": options,
    }
    if command == "generate":
        values["prompt"] = args.prompt
        operation = Operation.GENERATE
    else:
        # Paths given on the command line are the user's own files, relative to the current
        # folder: check them here, and allow their folders as input roots.
        missing = _missing_file(args)
        if missing:
            print(f"atelier-mcp {command}: {missing}", file=sys.stderr)
            return 2
        values.update(
            prompt=args.prompt,
            images=[_absolute(p) for p in args.images],
            mask=_absolute(args.mask) if args.mask else None,
        )
        extra = {str(Path(p).parent) for p in values["images"] if not _is_url(p)}
        if values["mask"] and not _is_url(values["mask"]):
            extra.add(str(Path(values["mask"]).parent))
        settings = settings.model_copy(
            update={
                "storage": settings.storage.model_copy(
                    update={"input_dirs": [*settings.storage.input_dirs, *map(Path, sorted(extra))]}
                )
            }
        )
        operation = Operation.EDIT
    call = ImageCall(**{k: v for k, v in values.items() if v is not None})
    atelier = _build(settings)
    try:
        with _progress_display(f"{command} {args.n} image(s)") as progress:
            outcome = await atelier.execute(
                call,
                operation,
                filename=args.filename,
                progress=progress,
                overwrite=args.overwrite,
                dry_run=args.dry_run,
            )
    finally:
        await atelier.aclose()
    if args.json:
        print(outcome.model_dump_json(indent=2))
        return 0
    if outcome.dry_run:
        estimate = outcome.cost.estimate_usd
        print(
            f"dry run: {outcome.model} accepts this call; estimated cost "
            f"{'unknown' if estimate is None else f'${estimate:.4f}'}"
        )
        print("applied: " + json.dumps(outcome.applied))
    for image in outcome.images:
        print(image.path)
    for failure in outcome.failures:
        print(f"image {failure.index} failed ({failure.code}): {failure.message}", file=sys.stderr)
    for note in outcome.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _missing_file(args: argparse.Namespace) -> str | None:
    """What is wrong when an input file named on the command line does not exist."""
    given = [("IMAGE", reference) for reference in args.images]
    if args.mask:
        given.append(("--mask", args.mask))
    for what, reference in given:
        path = Path(reference).expanduser()
        if not _is_url(reference) and not path.is_file():
            return f"{what} {reference}: no such file (looked for {path.absolute()})"
    return None


def _is_url(reference: str) -> bool:
    return "://" in reference or reference.startswith("data:")


def _absolute(reference: str) -> str:
    return reference if _is_url(reference) else str(Path(reference).expanduser().resolve())


@contextlib.contextmanager
def _progress_display(title: str) -> Iterator[Progress | None]:
    """A progress bar on stderr while a call runs, when stderr is a terminal (else nothing)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Bar(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(title, total=1.0)

        async def show(fraction: float, message: str) -> None:
            bar.update(task, completed=fraction, description=f"{title}: {message}")

        yield show


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


# -- demo ----------------------------------------------------------------------------------


async def _demo() -> int:
    from atelier_core.mcp.client import run_demo

    return await run_demo(PLACEHOLDER_NOTICE)
