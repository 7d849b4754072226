"""Guarantee 4: invalid requests are refused before any provider call, with an error
naming the parameter, what is allowed and the fix.

Property-based over the real model specs of every shipped provider (sizes and other
parameters), then a matrix of bad calls through the MCP tools with the real providers
aimed at the fake upstream: every one is a tool error and the fake's request log stays
empty ("no spend").
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_kit import image_files

from atelier_core import InvalidParameterError, Operation, RequestError
from atelier_core.engine.pipeline import Pipeline
from atelier_core.engine.registry import Registry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.errors import AtelierError
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeUpstream, build_test_registry, connect, make_image

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# One model per sizing style: free WxH with a rule, presets only, aspect ratios, MiniMax's own rule.
MODELS = [
    "openai/gpt-image-2",
    "openai/gpt-image-1.5",
    "gemini/gemini-3-pro-image",
    "minimax/image-01",
    "dalle/dall-e-3",
    "placeholder/placeholder",
]


def _registry() -> Registry:
    import atelier_dalle
    import atelier_gemini
    import atelier_minimax
    import atelier_openai
    import atelier_placeholder

    url = "http://127.0.0.1:9"  # never contacted: validation sends nothing
    return build_test_registry(
        [atelier_openai, atelier_gemini, atelier_minimax, atelier_dalle, atelier_placeholder],
        providers={
            name: {"api_key": "k", "base_url": url + ("/v1" if name in ("openai", "dalle") else "")}
            for name in ("openai", "gemini", "minimax", "dalle")
        },
    )


REGISTRY = _registry()


def _check_error(error: AtelierError, parameter: str | None = None) -> None:
    """What every refusal carries (§4.3): a code, the parameter it names, and a fix or
    the allowed values; bounded and free of tracebacks."""
    assert error.code and error.code != "internal_error"
    assert error.parameter, f"refusal names no parameter: {error}"
    if parameter is not None:
        assert error.parameter == parameter, (error.parameter, str(error))
    text = str(error)
    assert error.parameter.split("[")[0] in text
    assert error.fix or error.allowed, f"no fix and no allowed values: {text}"
    assert "Traceback" not in text and len(text) < 2048


sizes = st.tuples(st.integers(-64, 5000), st.integers(-64, 5000)).map(lambda wh: f"{wh[0]}x{wh[1]}")


@pytest.mark.parametrize("model", MODELS)
@PROPERTY
@given(
    size=st.one_of(
        sizes,
        st.sampled_from(
            [
                "auto",
                "0x0",
                "1024",
                "1024x",
                "x1024",
                "1024*1024",
                "big",
                "1e3x1e3",
                "16:9",
                "1:1",
                "7:3",
                "1024x1024x3",
                " 1024X1024 ",
            ]
        ),
    )
)
def test_every_size_is_refused_naming_it_or_satisfies_the_rule(model: str, size: str) -> None:
    entry = REGISTRY.resolve(model)
    spec = entry.spec
    try:
        validated = validate_call(ImageCall(model=model, prompt="p", size=size), entry, Operation.GENERATE, [])
    except InvalidParameterError as exc:
        _check_error(exc)
        assert exc.parameter in ("size", "aspect_ratio")
        nearest = re.search(r"nearest (?:valid|allowed) size is (\d+x\d+)", exc.fix or "")
        if nearest:  # the suggested fix must itself be accepted
            validate_call(ImageCall(model=model, prompt="p", size=nearest.group(1)), entry, Operation.GENERATE, [])
        return
    request = validated.request
    if request.width and request.height:
        wh = (request.width, request.height)
        preset = f"{wh[0]}x{wh[1]}" in spec.sizes.presets
        assert preset or (spec.sizes.custom is not None and spec.sizes.custom.problems(*wh) == []), (size, wh)
    else:  # auto, or mapped onto the model's aspect ratios
        assert (
            request.aspect_ratio is None
            or request.aspect_ratio in spec.sizes.aspect_ratios
            or not spec.sizes.aspect_ratios
        )
        if size.strip().lower() == "auto":  # "auto" = the model's own default shape
            assert spec.sizes.allow_auto or spec.sizes.aspect_ratios


params = st.fixed_dictionaries(
    {},
    optional={
        "n": st.integers(-2, 14),
        "quality": st.sampled_from(["low", "medium", "high", "hd", "standard", "ultra", ""]),
        "output_format": st.sampled_from(["png", "jpeg", "webp", "gif", "bmp", "svg", "JPEG"]),
        "output_compression": st.integers(-5, 120),
        "background": st.sampled_from(["auto", "opaque", "transparent", "green"]),
        "style": st.sampled_from(["vivid", "natural", "anime", "x"]),
        "resolution": st.sampled_from(["1K", "2K", "4K", "8K", "hd"]),
        "aspect_ratio": st.sampled_from(["1:1", "16:9", "21:9", "5:1", "0:1", "wide"]),
        "seed": st.integers(-2, 2**33),
        "prompt": st.sampled_from(["", "   ", "a fox", "x" * 1501, "x" * 4001, "x" * 32_001]),
        "negative_prompt": st.sampled_from(["blur", ""]),
        "options": st.sampled_from([{}, {"nonsense": 1}, {"moderation": "low"}, {"partial_images": 9}]),
    },
)


@pytest.mark.parametrize("model", MODELS)
@PROPERTY
@given(args=params)
def test_every_refusal_names_a_parameter_the_caller_gave(model: str, args: dict[str, Any]) -> None:
    entry = REGISTRY.resolve(model)
    args.setdefault("prompt", "a fox")
    try:
        validated = validate_call(ImageCall(model=model, **args), entry, Operation.GENERATE, [])
    except RequestError as exc:
        _check_error(exc)
        given_names = set(args) | {"model"}
        root = exc.parameter.split(".")[0].split("[")[0] if exc.parameter else ""
        assert root in given_names or root == "size", (exc.parameter, args)
        return
    request = validated.request
    assert 1 <= request.n <= entry.spec.n_max
    if request.output_format:
        assert request.output_format in entry.spec.output_formats


# -- through MCP, real providers, zero upstream requests ------------------------------


def _png_b64(width: int = 64, height: int = 64) -> str:
    return "data:image/png;base64," + base64.b64encode(make_image(width, height)).decode()


def _bomb_png() -> bytes:
    """A PNG whose header declares 50 000 x 50 000 pixels (the IDAT is a few bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _bad_calls(tmp_path: Path) -> list[tuple[str, str, dict[str, Any], str]]:
    """(id, tool, arguments, text the error must contain) — each must cost nothing."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.png").write_bytes(make_image(32, 32))
    inputs = tmp_path / "inputs"
    (inputs / "notes.png").write_text("SECRET=hunter2 — a text file with an image name")
    (inputs / "bomb.png").write_bytes(_bomb_png())
    (inputs / "escape").symlink_to(outside, target_is_directory=True)
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "taken.png").write_bytes(make_image(16, 16))
    gen = "generate_image"
    edit = "edit_image"
    m = "openai/gpt-image-2"
    return [
        ("unknown-model", gen, {"prompt": "x", "model": "openai/gpt-image-9"}, "model"),
        ("n-zero", gen, {"prompt": "x", "model": m, "n": 0}, "n"),
        ("n-over-max", gen, {"prompt": "x", "model": "minimax/image-01", "n": 10}, "n"),
        ("n-as-text", gen, {"prompt": "x", "model": m, "n": "two"}, "n"),
        ("prompt-empty", gen, {"prompt": "   ", "model": m}, "prompt"),
        ("prompt-too-long", gen, {"prompt": "x" * 1501, "model": "minimax/image-01"}, "prompt"),
        ("size-step", gen, {"prompt": "x", "model": m, "size": "1000x1000"}, "size"),
        ("size-aspect", gen, {"prompt": "x", "model": m, "size": "4000x1000"}, "size"),
        ("size-preset", gen, {"prompt": "x", "model": "openai/gpt-image-1.5", "size": "1792x1024"}, "size"),
        (
            "ratio-unknown",
            gen,
            {"prompt": "x", "model": "gemini/gemini-3-pro-image", "aspect_ratio": "5:1"},
            "aspect_ratio",
        ),
        ("quality", gen, {"prompt": "x", "model": m, "quality": "hd"}, "quality"),
        ("format", gen, {"prompt": "x", "model": "minimax/image-01", "output_format": "png"}, "output_format"),
        (
            "compression-on-png",
            gen,
            {"prompt": "x", "model": m, "output_format": "png", "output_compression": 50},
            "output_compression",
        ),
        ("extra-field", gen, {"prompt": "x", "model": m, "api_key": "sk-from-the-model"}, "api_key"),
        ("option-unknown", gen, {"prompt": "x", "model": m, "options": {"nonsense": 1}}, "nonsense"),
        ("filename-escape", gen, {"prompt": "x", "model": m, "filename": "../x.png"}, "filename"),
        ("filename-abs", gen, {"prompt": "x", "model": m, "filename": str(outside / "x.png")}, "filename"),
        ("filename-ext", gen, {"prompt": "x", "model": m, "filename": "x.jpg"}, "filename"),
        ("filename-taken", gen, {"prompt": "x", "model": m, "filename": "taken.png"}, "taken.png"),
        ("filename-windows", gen, {"prompt": "x", "model": m, "filename": "C:\\x.png"}, "filename"),
        ("input-outside", edit, {"prompt": "x", "model": m, "images": [str(outside / "secret.png")]}, "images[0]"),
        ("input-symlink-out", edit, {"prompt": "x", "model": m, "images": ["escape/secret.png"]}, "images[0]"),
        ("input-text-as-png", edit, {"prompt": "x", "model": m, "images": [str(inputs / "notes.png")]}, "images[0]"),
        ("input-bomb", edit, {"prompt": "x", "model": m, "images": [str(inputs / "bomb.png")]}, "images[0]"),
        ("input-bad-base64", edit, {"prompt": "x", "model": m, "images": ["data:image/png;base64,@@@!"]}, "images[0]"),
        ("input-remote-off", edit, {"prompt": "x", "model": m, "images": ["https://example.com/a.png"]}, "images[0]"),
        (
            "mask-size",
            edit,
            {"prompt": "x", "model": m, "images": [_png_b64(64, 64)], "mask": _png_b64(32, 32)},
            "mask",
        ),
        (
            "too-many-images",
            edit,
            {"prompt": "x", "model": "gemini/gemini-2.5-flash-image", "images": [_png_b64()] * 20},
            "images",
        ),
    ]


async def test_bad_calls_through_mcp_cost_nothing(tmp_path: Path, stack: Pipeline, upstream: FakeUpstream) -> None:
    cases = _bad_calls(tmp_path)
    outside_bytes = (tmp_path / "outside" / "secret.png").read_bytes()
    seen: dict[str, str] = {}
    async with connect(stack) as client:
        for case_id, tool, args, expected in cases:
            result = await client.call_tool(tool, args)
            text = "\n".join(getattr(block, "text", "") for block in result.content)
            assert result.is_error, f"{case_id} was accepted: {text[:300]}"
            assert expected in text, f"{case_id}: {expected!r} not named in {text[:400]!r}"
            assert "Traceback" not in text and len(text) < 4096, case_id
            seen[case_id] = text
    assert upstream.requests == [], [r.path for r in upstream.requests]  # no spend, for every case
    assert image_files(tmp_path / "images") == [tmp_path / "images" / "taken.png"]
    assert not any(outside_bytes in r.body for r in upstream.requests)
    assert list((tmp_path / "outside").iterdir()) == [tmp_path / "outside" / "secret.png"]
    assert "hunter2" not in seen["input-text-as-png"]  # a refused file's content is not echoed
