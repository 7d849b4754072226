"""P9/P10 and O16: prompts in any script — CJK, emoji, combining marks, RTL, newlines,
ANSI escapes, quotes and slashes, 30 000 characters — reach the provider byte for byte,
never break a log line or a file name, and the automatic file name is a bounded, safe slug."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from reliability_kit import OPENAI_ROUTE, openai_ok

from atelier_core import Operation
from atelier_core.engine.pipeline import Pipeline
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeUpstream

pytestmark = pytest.mark.anyio

PROMPTS = [
    "一只在雨中的猫 🐈‍⬛ — かわいい",
    "e\u0301te\u0301 cafe\u0301 (NFD) and ﬁ ligature",
    "שלום \u202e evil.exe \u202c עולם",
    "line one\nline two\r\n\tTabbed \x1b[31mred\x1b[0m",
    "../../etc/passwd \"quoted\" 'single' / back\\slash : colon",
    "x" * 30_000,
]


@pytest.mark.parametrize("prompt", PROMPTS, ids=["cjk-emoji", "nfd", "rtl", "controls", "path-like", "long"])
async def test_prompts_are_forwarded_intact_and_named_safely(
    prompt: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.reply("POST", OPENAI_ROUTE, json=openai_ok())
    outcome = await stack.execute(ImageCall(model="openai/gpt-image-1-mini", prompt=prompt), Operation.GENERATE)
    (sent,) = upstream.requests
    assert sent.json()["prompt"] == prompt  # verbatim: not normalised, not stripped
    path = Path(outcome.images[0].path)
    assert path.is_relative_to(tmp_path / "images")
    assert re.fullmatch(r"\d{6}-[a-z0-9-]{1,40}-[0-9a-f]{8}\.png", path.name), path.name
    assert len(path.parent.relative_to(tmp_path / "images").parts) == 1  # the date folder only
