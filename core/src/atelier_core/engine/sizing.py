"""Sizing: a call's size, aspect ratio and resolution tier against a model's size rules.

Pixel sizes are checked against presets or a custom rule (multiples, edges, pixels,
aspect), mapped to an aspect ratio for ratio-only models, and tiers to a long edge for
pixel models; every refusal names the nearest valid size.
"""

from __future__ import annotations

from dataclasses import dataclass

from atelier_core.plugin.errors import InvalidParameterError
from atelier_core.plugin.spec import SizeRules, parse_ratio, parse_size
from atelier_core.plugin.types import ImageCall

__all__ = ["RESOLUTION_LONG_EDGE", "Sizing", "size_of"]

# Long edge of a resolution tier, for pixel-size models asked for a tier.
RESOLUTION_LONG_EDGE = {"0.5K": 512, "1K": 1024, "2K": 2048, "4K": 3840}
_RATIO_TOLERANCE = 0.03  # a WxH maps to an aspect ratio only if within 3%


@dataclass(slots=True)
class Sizing:
    """What the call will be sent with: pixels, or an aspect ratio and a resolution tier."""

    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None


def size_of(call: ImageCall, rules: SizeRules, name: str, notes: list[str], tier: str | None) -> Sizing:
    """The size a call asks for under ``rules``: pixels, or an aspect ratio and a tier
    (``tier`` already checked against ``rules.resolutions``); notes say what was mapped."""
    size = call.size.strip().lower() if call.size else None
    ratio = call.aspect_ratio.strip() if call.aspect_ratio else None
    if size and parse_ratio(size) and not parse_size(size):
        if ratio and ratio != size:
            raise InvalidParameterError("size", call.size, f"conflicts with aspect_ratio={ratio}")
        ratio, size = size, None
    if size and ratio:
        raise InvalidParameterError(
            "size",
            call.size,
            "and aspect_ratio were both given",
            fix="give either size (WxH) or aspect_ratio, not both",
        )
    if size == "auto":
        if rules.allow_auto:
            return Sizing(resolution=tier)
        if rules.aspect_ratios and not rules.takes_pixels:
            return Sizing(aspect_ratio=rules.default_aspect_ratio, resolution=tier or rules.default_resolution)
        raise InvalidParameterError("size", "auto", f"is not allowed for {name}", allowed=rules.describe())
    if size:
        wh = parse_size(size)
        if wh is None:
            raise InvalidParameterError(
                "size",
                call.size,
                "is not a size",
                allowed=rules.describe(),
                fix='write sizes as "WIDTHxHEIGHT", e.g. "1024x1024"',
            )
        return _pixel_size(wh, call.size or size, rules, name, notes, tier)
    if ratio:
        return _ratio_size(ratio, rules, name, notes, tier)
    if tier and rules.takes_pixels and not rules.aspect_ratios:
        return _ratio_size("1:1", rules, name, notes, tier)
    # Defaults.
    if rules.aspect_ratios and not rules.default:
        return Sizing(aspect_ratio=rules.default_aspect_ratio, resolution=tier or rules.default_resolution)
    if rules.default and rules.default != "auto":
        w, h = parse_size(rules.default) or (None, None)
        return Sizing(width=w, height=h, resolution=tier)
    return Sizing(resolution=tier or rules.default_resolution)


def _pixel_size(
    wh: tuple[int, int], given: str, rules: SizeRules, name: str, notes: list[str], tier: str | None
) -> Sizing:
    width, height = wh
    text = f"{width}x{height}"
    if width <= 0 or height <= 0:  # before any ratio arithmetic ("0x0" on a ratio model)
        raise InvalidParameterError(
            "size",
            given,
            "must have positive edges",
            allowed=rules.describe(),
            fix='write sizes as "WIDTHxHEIGHT" with positive edges, e.g. "1024x1024"',
        )
    if text in rules.presets:
        return Sizing(width=width, height=height, resolution=tier)
    if rules.custom is not None:
        problems = rules.custom.problems(width, height)
        if not problems:
            return Sizing(width=width, height=height, resolution=tier)
        nearest = rules.custom.nearest(width, height)
        raise InvalidParameterError(
            "size",
            given,
            f"is not allowed for {name}: {'; '.join(problems)}",
            allowed=rules.describe(),
            fix=f"nearest valid size is {nearest[0]}x{nearest[1]}" if nearest else "pick an allowed size",
            code="size_not_supported",
        )
    if rules.aspect_ratios:
        mapped = _map_to_ratio(width, height, rules)
        if mapped is not None:
            ratio, mapped_tier = mapped
            notes.append(
                f"size {text} mapped to aspect_ratio {ratio}" + (f", resolution {mapped_tier}" if mapped_tier else "")
            )
            return Sizing(aspect_ratio=ratio, resolution=tier or mapped_tier)
    allowed = list(rules.presets) or [rules.describe()]
    fix = "pick one of the allowed sizes"
    if rules.presets:
        best = min(rules.presets, key=lambda p: _distance(parse_size(p) or (0, 0), (width, height)))
        fix = f"nearest allowed size is {best}"
    elif rules.aspect_ratios:
        fix = f"use aspect_ratio (one of {', '.join(rules.aspect_ratios)})"
    raise InvalidParameterError(
        "size", given, f"is not allowed for {name}", allowed=allowed, fix=fix, code="size_not_supported"
    )


def _ratio_size(ratio: str, rules: SizeRules, name: str, notes: list[str], tier: str | None) -> Sizing:
    parsed = parse_ratio(ratio)
    if parsed is None:
        raise InvalidParameterError(
            "aspect_ratio",
            ratio,
            "is not a ratio",
            fix='write ratios as "W:H", e.g. "16:9"',
            allowed=list(rules.aspect_ratios) or None,
        )
    if rules.aspect_ratios:
        for option in rules.aspect_ratios:
            if parse_ratio(option) == parsed or option == ratio:
                return Sizing(aspect_ratio=option, resolution=tier or rules.default_resolution)
        if not rules.takes_pixels:
            raise InvalidParameterError(
                "aspect_ratio",
                ratio,
                f"is not allowed for {name}",
                allowed=list(rules.aspect_ratios),
                fix="use the closest allowed ratio",
            )
    # Pixel model asked for a ratio: pick a matching preset, else build a custom size.
    target = parsed[0] / parsed[1]
    candidates = []
    for preset in rules.presets:
        w, h = parse_size(preset) or (1, 1)
        error = abs(w / h - target) / target
        if error <= _RATIO_TOLERANCE and (tier is None or max(w, h) == RESOLUTION_LONG_EDGE.get(tier)):
            candidates.append((error, -w * h, preset, w, h))
    if candidates:  # the closest shape, then the largest
        _, _, preset, w, h = min(candidates)
        notes.append(f"aspect_ratio {ratio} mapped to size {preset}")
        return Sizing(width=w, height=h)
    if rules.custom is not None:
        long_edge = RESOLUTION_LONG_EDGE.get(tier or "", 0) or _default_long_edge(rules)
        if target >= 1:
            w0, h0 = long_edge, round(long_edge / target)
        else:
            w0, h0 = round(long_edge * target), long_edge
        nearest = rules.custom.nearest(w0, h0)
        if nearest is not None and abs(nearest[0] / nearest[1] - target) / target <= _RATIO_TOLERANCE:
            notes.append(f"aspect_ratio {ratio} mapped to size {nearest[0]}x{nearest[1]}")
            return Sizing(width=nearest[0], height=nearest[1])
    raise InvalidParameterError(
        "aspect_ratio",
        ratio,
        f"cannot be produced by {name}",
        allowed=rules.describe(),
        fix="use one of the allowed sizes",
    )


def _default_long_edge(rules: SizeRules) -> int:
    if rules.default and rules.default != "auto":
        w, h = parse_size(rules.default) or (1024, 1024)
        return max(w, h)
    if rules.presets:
        return max(max(parse_size(p) or (1024, 1024)) for p in rules.presets)
    return 1024


def _map_to_ratio(width: int, height: int, rules: SizeRules) -> tuple[str, str | None] | None:
    """Nearest declared aspect ratio (and tier) for a pixel size, if the match is honest."""
    for key, produced in rules.ratio_sizes.items():
        if parse_size(produced) == (width, height):
            ratio, _, named_tier = key.partition("@")
            return ratio, named_tier or None
    target = width / height
    best: tuple[float, str] | None = None
    for option in rules.aspect_ratios:
        w, h = parse_ratio(option) or (1, 1)
        error = abs(w / h - target) / target
        if best is None or error < best[0]:
            best = (error, option)
    if best is None or best[0] > _RATIO_TOLERANCE:
        return None
    tier: str | None = None
    if rules.resolutions:
        long_edge = max(width, height)
        tier = min(
            (t for t in rules.resolutions if t in RESOLUTION_LONG_EDGE),
            key=lambda t: abs(RESOLUTION_LONG_EDGE[t] - long_edge),
            default=None,
        )
    return best[1], tier


def _distance(a: tuple[int, int], b: tuple[int, int]) -> float:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])
