"""Fake Gemini API replies and a provider factory for the Gemini tests."""

from __future__ import annotations

import base64
import functools
from typing import Any

from atelier_core import Provider
from atelier_core.testing import FakeUpstream, Recorded, Reply, configured, make_image

KEY = "test-gemini-key-7f3a"

# Sizes the fake "produces": the ones the specs declare, so the contract can check them.
_GEMINI_PATH = r"^/v1[a-z0-9]*/(publishers/google/)?models/[^/:]+:generateContent$"
_PREDICT_PATH = r"^/v1[a-z0-9]*/publishers/google/models/[^/:]+:predict$"


def _model_of(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(":", 1)[0]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@functools.lru_cache(maxsize=64)
def _picture(width: int, height: int, fmt: str) -> str:
    """Base64 of a solid test picture (cached: the contract asks for the same sizes often)."""
    return _b64(make_image(width, height, fmt))


def gemini_reply(request: Recorded) -> Reply:
    """A well-behaved generateContent: one image of the declared size, plus a text part."""
    from atelier_gemini.models import MODELS

    body = request.json()
    spec = next(s for s in MODELS if s.id == _model_of(request.path))
    image_config = body.get("generationConfig", {}).get("imageConfig", {})
    ratio = image_config.get("aspectRatio", "1:1")
    tier = image_config.get("imageSize")
    size = spec.sizes.ratio_sizes.get(f"{ratio}@{tier or '1K'}") or spec.sizes.ratio_sizes.get(ratio)
    if size is None:
        a, b = (int(v) for v in ratio.split(":"))
        size = f"{1024}x{round(1024 * b / a)}" if a >= b else f"{round(1024 * a / b)}x1024"
    w, h = (int(v) for v in size.split("x"))
    mime = image_config.get("imageOutputOptions", {}).get("mimeType", "image/png")
    fmt = mime.split("/")[1]
    return Reply(
        json={
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "Here is your picture."},
                            {"inlineData": {"mimeType": mime, "data": _picture(w, h, fmt)}},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1290, "totalTokenCount": 1300},
            "responseId": "resp-1",
        }
    )


def imagen_reply(request: Recorded) -> Reply:
    """A well-behaved :predict: sampleCount images of the declared size and mime type."""

    body = request.json()
    params = body.get("parameters", {})
    ratio = params.get("aspectRatio", "1:1")
    a, b = (int(v) for v in ratio.split(":"))
    size = f"1024x{round(1024 * b / a)}" if a >= b else f"{round(1024 * a / b)}x1024"
    if body["instances"][0].get("referenceImages"):
        size = "256x256"  # edits keep the input's size
    w, h = (int(v) for v in size.split("x"))
    mime = params.get("outputOptions", {}).get("mimeType", "image/png")
    fmt = mime.split("/")[1]
    image = _picture(w, h, fmt)
    return Reply(
        json={
            "predictions": [
                {"bytesBase64Encoded": image, "mimeType": mime} for _ in range(params.get("sampleCount", 1))
            ]
        }
    )


def make_provider(up: FakeUpstream, **settings: Any) -> Provider:
    from atelier_gemini import GeminiProvider

    values: dict[str, Any] = {"api_key": KEY, "base_url": up.url, "timeout_s": 10.0}
    values.update(settings)
    return configured(GeminiProvider(), **values)


GEMINI_PATH = _GEMINI_PATH
PREDICT_PATH = _PREDICT_PATH
