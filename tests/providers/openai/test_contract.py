"""The OpenAI provider passes the core's provider contract, against a fake OpenAI Images
server that answers like the real one (images of the asked size, format and count)."""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import atelier_openai
from atelier_core import Provider
from atelier_core.testing import FakeUpstream, ProviderContract, Recorded, Reply, configured
from atelier_core.testing.samples import make_image
from atelier_openai import OpenAIProvider

_FIELD = re.compile(rb'name="(size|output_format|n)"\r\n\r\n([^\r]*)\r\n')
MODERATION = {
    "error": {
        "code": "moderation_blocked",
        "type": "image_generation_user_error",
        "message": "Your request was rejected by the safety system. safety_violations=[violence].",
    }
}


class FakeOpenAIImages:
    """Answers /v1/images/generations (JSON) and /v1/images/edits (multipart) with real
    images; ``refuse_next()`` makes the next call a moderation block."""

    def __init__(self) -> None:
        self._refuse = 0

    def refuse_next(self) -> None:
        self._refuse += 1

    def __call__(self, request: Recorded) -> Reply:
        if self._refuse:
            self._refuse -= 1
            return Reply(status=400, json=MODERATION, headers={"x-request-id": "req_refused"})
        if request.path.endswith("/edits"):
            # Only the small text fields matter; parsing every uploaded image part with the
            # email parser would dominate the suite's time.
            fields = {m[1].decode(): m[2].decode() for m in _FIELD.finditer(request.body)}
        else:
            fields = {k: str(v) for k, v in request.json().items()}
        size = fields.get("size", "auto")
        width, height = (1024, 1024) if size == "auto" else (int(v) for v in size.split("x"))
        fmt = fields.get("output_format", "png")
        n = int(fields.get("n", "1"))
        data = _encoded(width, height, fmt)
        return Reply(
            json={
                "created": 1,
                "size": f"{width}x{height}",
                "output_format": fmt,
                "data": [{"b64_json": data} for _ in range(n)],
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 100,
                    "total_tokens": 110,
                    "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                },
            },
            headers={"x-request-id": "req_contract"},
        )


@functools.lru_cache(maxsize=32)
def _encoded(width: int, height: int, fmt: str) -> str:
    # Encoding a 1536x1024 picture per call would dominate the suite's time; the answer's
    # bytes need not differ between calls.
    return base64.b64encode(make_image(width, height, fmt)).decode()


@pytest.fixture
def fake() -> FakeOpenAIImages:
    return FakeOpenAIImages()


@pytest.fixture
def upstream(fake: FakeOpenAIImages) -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        up.handle("POST", "/v1/images/generations", fake)
        up.handle("POST", "/v1/images/edits", fake)
        yield up


class TestOpenAIContract(ProviderContract):
    @pytest.fixture
    def plugin(self) -> object:
        return atelier_openai

    @pytest.fixture
    def provider(self, upstream: FakeUpstream) -> Provider:
        return configured(
            OpenAIProvider(), api_key="sk-contract-key-123", base_url=upstream.url + "/v1", timeout_s=20.0
        )

    @pytest.fixture
    def refuse(self, fake: FakeOpenAIImages) -> Callable[[], Any]:
        return fake.refuse_next
