"""Short texts for the catalogue and health tools.

``list_available_models`` without filters must stay small (it lands in a model's
context): :func:`summarize_model` keeps per model what is needed to choose one, and
:func:`catalogue_text` is a few lines, never a copy of the structured content.
"""

from __future__ import annotations

from typing import Any

__all__ = ["catalogue_text", "health_text", "summarize_model"]


def _price(entry: dict[str, Any]) -> float | None:
    price = entry.get("price_usd") or {}
    if price.get("per_image") is not None:
        return float(price["per_image"])
    table = [
        *price.get("per_image_by_quality", {}).values(),
        *price.get("per_image_by_size", {}).values(),
        *price.get("per_image_by_quality_size", {}).values(),
    ]
    return float(min(table)) if table else None


def _sizes(entry: dict[str, Any]) -> str:
    sizes = entry.get("sizes") or {}
    parts = []
    if sizes.get("custom"):
        parts.append("custom WxH")
    elif sizes.get("presets"):
        parts.append(f"{len(sizes['presets'])} sizes")
    if sizes.get("aspect_ratios"):
        parts.append(f"{len(sizes['aspect_ratios'])} ratios")
    if sizes.get("resolutions"):
        parts.append("/".join(sizes["resolutions"]))
    return ", ".join(parts)


def summarize_model(entry: dict[str, Any]) -> dict[str, Any]:
    """One model in a few fields: enough to choose it, not to fill every argument."""
    out: dict[str, Any] = {"id": entry["id"], "available": entry["available"]}
    if entry.get("aliases"):
        out["aliases"] = entry["aliases"]
    if entry.get("reason"):
        out["reason"] = entry["reason"]
    out["ops"] = entry.get("operations", [])
    sizes = _sizes(entry)
    if sizes:
        out["sizes"] = sizes
    out["formats"] = entry.get("formats", [])
    price = _price(entry)
    if price is not None:
        out["from_usd"] = price
    return out


def catalogue_text(data: dict[str, Any], *, full: bool) -> str:
    """A few lines: what is usable now, what is not and why (grouped), how to see more."""
    models = data["models"]
    ready = [m["id"] for m in models if m["available"]]
    lines = [f"{len(models)} model(s), {len(ready)} available now: {', '.join(ready) or 'none'}."]
    blocked: dict[str, list[str]] = {}
    for m in models:
        if not m["available"]:
            blocked.setdefault(m.get("reason") or "unavailable", []).append(m["id"].split("/", 1)[0])
    for reason, owners in blocked.items():
        lines.append(f"Unavailable ({len(owners)} from {', '.join(sorted(set(owners)))}): {reason}")
    if "default_model" in data:
        lines.append(f"Default model: {data['default_model']}.")
    if "plugin_problems" in data:
        lines.append("Some plugins failed to load (see plugin_problems).")
    if full:
        lines.append("Full per-model detail (sizes, qualities, options, limits, prices) is in the structured content.")
    else:
        lines.append(
            "Per model: id, availability, operations, sizes, formats and the lowest price in the structured "
            "content; full detail with model=<id>, provider=<name> or detail=true."
        )
    return "\n".join(lines)


def health_text(report: dict[str, Any]) -> str:
    models = report["models"]
    lines = [
        f"Atelier {report['version']}: {report['status']}. {models['available']} of {models['total']} model(s) usable."
    ]
    for name, info in report["providers"].items():
        state = f"{info['available']}/{info['models']} usable" + (f" — {info['reason']}" if "reason" in info else "")
        lines.append(f"  {name}: {state}")
    lines.append("Folders: " + ", ".join(f"{k} {v}" for k, v in report["folders"].items()) + ".")
    if "jobs" in report:
        lines.append(f"Unfinished jobs: {report['jobs']['unfinished']}.")
    spend = report["spend"]
    lines.append(
        f"Spent today: ${spend['today_usd']:.4f}"
        + ("; limits " + ", ".join(f"{k}={v}" for k, v in spend["limits"].items()) if spend["limits"] else "")
        + "."
    )
    for problem in report.get("plugin_problems", []):
        lines.append(f"Problem: {problem.get('name', '')} {problem.get('error') or problem.get('problem', '')}".strip())
    return "\n".join(lines)
