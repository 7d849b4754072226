"""Z4, schema-driven: arguments generated from each image tool's published ``inputSchema``
— valid values, wrong types, out-of-range numbers, unknown keys, hostile strings — sent
through the MCP client. Whatever arrives, the answer is a result (never a protocol error
or an internal error), and a refused call costs nothing: the provider's call count only
moves for calls that succeed.

(A seeded generator rather than ``hypothesis-jsonschema``, which is not installed; the
seed makes any failure reproducible.)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from atelier_core.testing import FakeProvider, build_test_atelier, connect, make_image

pytestmark = pytest.mark.anyio

CASES_PER_TOOL = 120
HOSTILE = [
    "",
    " ",
    "../../x",
    "\x00",
    "C:\\x.png",
    "a" * 5000,
    "🐱" * 50,
    "\u202e",
    "null",
    "{}",
    "-1",
    "1024x1024",
    "auto",
    "16:9",
    "png",
    "atelier://images/../../etc/passwd",
    "data:image/png;base64,@@",
    "file:///etc/passwd",
    "https://169.254.169.254/latest/meta-data",
]


def _value(schema: dict[str, Any], rng: random.Random, good: dict[str, list[Any]], name: str) -> Any:
    roll = rng.random()
    if roll < 0.8 and name in good:
        return rng.choice(good[name])
    if roll < 0.92:  # a value of the declared type, perhaps out of range
        kind = schema.get("type")
        if kind == "integer":
            return rng.choice([-1, 0, 1, 2, 4, 11, 101, 2**40])
        if kind == "boolean":
            return rng.choice([True, False])
        if kind == "array":
            return [rng.choice(HOSTILE) for _ in range(rng.randint(0, 3))]
        if kind == "object":
            return rng.choice([{}, {"x": 1}, {"partial_images": 2}])
        if "enum" in schema:
            return rng.choice(schema["enum"])
        return rng.choice(HOSTILE)
    return rng.choice([None, 1.5, True, "2", [], {}, ["a"], -3, rng.choice(HOSTILE)])  # type confusion


async def test_generated_arguments_never_break_the_server(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "photo.png").write_bytes(make_image(64, 64))
    fake = FakeProvider()
    atelier = build_test_atelier(
        tmp_path,
        [fake],
        default_model="fake/fake-image",
        storage={"output_dir": tmp_path / "images", "input_dirs": [inputs]},
    )
    good: dict[str, list[Any]] = {
        "prompt": ["a fox", "a lighthouse"],
        "model": ["fake/fake-image", "fake-image"],
        "size": ["256x256", "512x512", "auto"],
        "n": [1, 2],
        "output_format": ["png", "jpeg", "webp"],
        "quality": ["low", "high"],
        "images": [[str(inputs / "photo.png")]],
        "filename": ["ok/a.png", None],
        "return_image": ["none", "preview"],
        "dry_run": [True, False],
        "as_job": [False],
    }
    rng = random.Random(20261121)
    refused = 0
    async with connect(atelier) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in ("generate_image", "edit_image"):
            schema = tools[name].input_schema
            properties: dict[str, Any] = schema["properties"]
            required = set(schema.get("required", []))
            for case in range(CASES_PER_TOOL):
                args = {
                    key: _value(spec, rng, good, key)
                    for key, spec in properties.items()
                    if key in required or rng.random() < 0.2
                }
                args = {k: v for k, v in args.items() if v is not None or rng.random() < 0.5}
                # Synchronous calls only, so the call count moves only for the call at hand
                # (a background job would finish later and blur the "no spend" check).
                args.pop("as_job", None)
                if rng.random() < 0.05:
                    args[rng.choice(["api_key", "extra", "Prompt", "sizes"])] = "x"
                before = len(fake.calls)
                result = await client.call_tool(name, args)  # a protocol error would raise here
                text = "\n".join(getattr(block, "text", "") for block in result.content)
                assert "internal error" not in text.lower(), (name, case, args, text)
                assert "Traceback" not in text
                if result.is_error:
                    refused += 1
                    assert len(fake.calls) == before, (name, case, args, text)  # refused: no spend
                    assert text.strip(), (name, case, args)
                else:
                    for record in (result.structured_content or {}).get("images", []):
                        assert Path(record["path"]).resolve().is_relative_to((tmp_path / "images").resolve())
    # Both sides must be exercised, or the generator proves nothing.
    assert len(fake.calls) >= CASES_PER_TOOL // 5 and refused >= CASES_PER_TOOL // 5, (len(fake.calls), refused)
