"""Generate docs/providers.md — the model table — from the registry.

The page is built from the providers' own model specs (loaded through entry points, as
the server loads them), so it cannot drift from the code: a test regenerates it and
fails when the committed file differs. Regenerate with::

    python -m atelier_core.engine.catalog_docs --write docs/providers.md

``--check docs/providers.md`` exits 1 when the file is stale. Provider settings are the
defaults (no config file, no ``ATELIER_*`` variables), so the page is the same on every
machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from atelier_core.engine.registry import Registry, build_registry
from atelier_core.plugin.provider import Provider
from atelier_core.plugin.spec import ModelSpec, Operation, Pricing
from atelier_core.settings import ExplicitSettings

__all__ = ["REGENERATE", "builtin_plugins", "catalog_registry", "main", "providers_markdown"]

REGENERATE = "python -m atelier_core.engine.catalog_docs --write docs/providers.md"
HOST_DISTRIBUTION = "atelier-mcp"
_ENTRY_POINT_GROUP = "atelier"


def builtin_plugins(host: str = HOST_DISTRIBUTION) -> list[str]:
    """Entry-point names of the plugins ``host`` depends on (the built-in providers)."""
    requirements = importlib.metadata.requires(host) or []
    names = {re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0].lower() for req in requirements}
    found: set[str] = set()
    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower().replace("_", "-") not in names:
            continue
        found.update(ep.name for ep in dist.entry_points if ep.group == _ENTRY_POINT_GROUP)
    return sorted(found)


def catalog_registry(plugins: Iterable[str] | None = None) -> Registry:
    """The registry the page documents: ``plugins`` (default: the built-ins), strictly."""
    allow = sorted(plugins) if plugins is not None else builtin_plugins()
    settings = ExplicitSettings(plugins={"allow": allow, "strict": True})
    return build_registry(settings, entry_points=True)


def providers_markdown(registry: Registry) -> str:
    """The whole docs/providers.md page for ``registry``."""
    lines = [
        "# Providers and models",
        "",
        "<!-- Generated from the model specs by atelier_core.engine.catalog_docs; do not edit. -->",
        f"<!-- Regenerate: {REGENERATE} -->",
        "",
        "Every model Atelier ships, generated from the providers' own model specs (the same",
        "data `list_available_models` reports and requests are validated against). Call a",
        "model by its canonical id (`provider/model`) or by an alias when it is unambiguous.",
        "Prices are indicative, in USD, as of the date shown; `atelier-mcp models` and",
        "`list_available_models` also say whether each model is available with your",
        "configuration. Third-party plugins add their own providers (see",
        "[writing-a-provider.md](writing-a-provider.md)).",
        "",
        "| Provider | Models | Key |",
        "|---|---|---|",
    ]
    providers = sorted(registry.providers.values(), key=lambda p: p.name)
    for provider in providers:
        count = len(registry.entries(provider=provider.name))
        lines.append(
            f"| [{_cell(provider.title or provider.name)}](#{_anchor(provider.name)}) "
            f"| {count} | {_cell(_key_text(provider))} |"
        )
    for provider in providers:
        lines += ["", *_provider_section(provider, registry)]
    return "\n".join(lines).rstrip() + "\n"


def _provider_section(provider: Provider, registry: Registry) -> list[str]:
    lines = [f"## {provider.name}", ""]
    if provider.title:
        lines += [f"**{provider.title}.** {_key_text(provider)}", ""]
    lines += [
        "| Model | Aliases | Does | Sizes | Formats | n | Quality | Also | Price |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in registry.entries(provider=provider.name):
        spec = entry.spec
        lines.append(
            "| "
            + " | ".join(
                _cell(value)
                for value in (
                    f"`{entry.canonical_id}`",
                    ", ".join(f"`{a}`" for a in spec.aliases) or "—",
                    _operations(spec),
                    spec.sizes.describe(),
                    ", ".join(spec.output_formats),
                    str(spec.n_max),
                    ", ".join(spec.qualities) or "—",
                    _extras(spec) or "—",
                    _price(spec.pricing),
                )
            )
            + " |"
        )
    described = [e for e in registry.entries(provider=provider.name) if e.spec.description]
    if described:
        lines.append("")
        lines += [f"- `{e.canonical_id}`: {e.spec.description}" for e in described]
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for entry in registry.entries(provider=provider.name):
        props = entry.spec.describe_options()
        if props:
            key = json.dumps(props, sort_keys=True, default=str)
            groups.setdefault(key, ([], props))[0].append(entry.canonical_id)
    if groups:
        lines += ["", "Model-specific `options`:", ""]
        for ids, props in groups.values():
            lines.append(", ".join(f"`{i}`" for i in ids) + ":")
            lines.append("")
            lines += [
                f"- `{name}` ({_option_type(schema)})"
                + (f": {schema['description']}" if schema.get("description") else "")
                for name, schema in props.items()
            ]
            lines.append("")
        lines.pop()
    if provider.retired:
        lines += ["", "Retired (calls explain the replacement):", ""]
        lines += [f"- `{r.id}`: retired {r.retired_on}; use `{r.replacement}`" for r in provider.retired]
    return lines


def _key_text(provider: Provider) -> str:
    if not provider.needs_key:
        if provider.key_env_vars:
            listed = " or ".join(f"`{n}`" for n in provider.key_env_vars)
            return f"Credentials: {listed}, or another mode the provider supports."
        return "No key needed."
    names = [*provider.key_env_vars, f"ATELIER_PROVIDERS__{provider.name.upper()}__API_KEY"]
    return "Key: " + " or ".join(f"`{n}`" for n in names) + "."


def _operations(spec: ModelSpec) -> str:
    return ", ".join(op.value for op in Operation if op in spec.operations)


def _extras(spec: ModelSpec) -> str:
    out: list[str] = []
    if spec.input_images is not None and spec.operations - {Operation.GENERATE}:
        rules = spec.input_images
        text = f"up to {rules.max_count} input image(s)"
        if rules.mask is not None:
            text += " + mask"
        out.append(text)
    if spec.reference_images is not None:
        out.append(f"up to {spec.reference_images.max_count} reference image(s)")
    if spec.backgrounds:
        out.append("background " + "/".join(spec.backgrounds))
    if spec.compression_formats:
        out.append("compression")
    if spec.seed:
        out.append("seed")
    if spec.negative_prompt:
        out.append("negative prompt")
    if spec.styles:
        out.append("styles " + "/".join(spec.styles))
    if spec.streams_partial_images:
        out.append("partial previews")
    if spec.options is not None:
        out.append("options")
    return "; ".join(out)


def _price(pricing: Pricing | None) -> str:
    if pricing is None:
        return "not published"
    parts: list[str] = []
    if pricing.per_image_by_quality_size:
        values = sorted(pricing.per_image_by_quality_size.values())
        parts.append(f"${values[0]:g}–${values[-1]:g}/image")
    elif pricing.per_image_by_quality:
        parts.append(", ".join(f"{q} ${v:g}" for q, v in pricing.per_image_by_quality.items()) + " per image")
    elif pricing.per_image_by_size:
        parts.append(", ".join(f"{s} ${v:g}" for s, v in pricing.per_image_by_size.items()) + " per image")
    elif pricing.per_image is not None:
        parts.append(f"${pricing.per_image:g}/image")
    if pricing.output_image_per_mtok is not None:
        parts.append(f"${pricing.output_image_per_mtok:g}/M output image tokens")
    body = "; ".join(parts) or "see notes"
    return f"{body} (as of {pricing.as_of})"


def _option_type(schema: dict[str, Any]) -> str:
    any_of = schema.get("anyOf")
    variants: list[Any] = any_of if isinstance(any_of, list) else [schema]
    names: list[str] = []
    optional = False
    for variant in variants:
        if not isinstance(variant, dict):
            continue
        if isinstance(variant.get("enum"), list):
            names.append(" \\| ".join(f"`{v}`" for v in variant["enum"]))
        elif "const" in variant:
            names.append(f"`{variant['const']}`")
        elif variant.get("type") == "null":
            optional = True
        elif isinstance(variant.get("type"), str):
            names.append(str(variant["type"]))
    text = " or ".join(names) or "value"
    return f"{text}, optional" if optional else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", name.lower().replace(" ", "-"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m atelier_core.engine.catalog_docs", description="Generate docs/providers.md."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="write the page to PATH")
    group.add_argument("--check", metavar="PATH", help="exit 1 if PATH differs from the generated page")
    args = parser.parse_args(argv)
    page = providers_markdown(catalog_registry())
    if args.write:
        Path(args.write).write_text(page, encoding="utf-8")
        return 0
    if args.check:
        current = Path(args.check).read_text(encoding="utf-8") if Path(args.check).is_file() else ""
        if current != page:
            print(f"{args.check} is out of date; regenerate: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
