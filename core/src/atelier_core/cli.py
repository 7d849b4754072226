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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from atelier_core import __version__
from atelier_core.commands import build
from atelier_core.commands.library import gallery, prune
from atelier_core.commands.report import doctor, models, usage
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
            return models(settings, args)
        if command in ("generate", "edit"):
            return asyncio.run(_one_off(settings, args, command))
        if command == "doctor":
            return asyncio.run(doctor(settings))
        if command == "usage":
            return usage(settings, args)
        if command == "gallery":
            return gallery(settings, args)
        if command == "prune":
            return asyncio.run(prune(settings, args))
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


# -- serve ---------------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.mcp.app import serve_stdio
    from atelier_core.mcp.http import serve_http

    atelier = build(settings)
    if getattr(args, "http", False):
        asyncio.run(serve_http(atelier, host=args.host, port=args.port))
    else:
        if sys.stdin.isatty():  # a person, not an MCP client (clients talk through a pipe)
            print(STDIO_HINT, file=sys.stderr, flush=True)
        serve_stdio(atelier)
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
    atelier = build(settings)
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


# -- demo ----------------------------------------------------------------------------------


async def _demo() -> int:
    from atelier_core.mcp.client import run_demo

    return await run_demo(PLACEHOLDER_NOTICE)
