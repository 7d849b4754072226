"""Helpers for the MiniMax tests: MiniMax-shaped answers, a well-behaved fake handler,
and requests built through the core's real validation path."""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

from atelier_core import CallContext, ImageRequest, InputImage, Operation
from atelier_core.engine.registry import ModelEntry
from atelier_core.engine.validation import validate_call
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import Recorded, Reply, make_image
from atelier_minimax import MiniMaxProvider
from atelier_minimax.models import RATIO_SIZES

KEY = "mm-test-key-0123456789"
PATH = "/v1/image_generation"


@lru_cache(maxsize=64)
def jpeg(width: int = 64, height: int = 64, shade: int = 0) -> bytes:
    """A real JPEG of the given size (cached: encoding 1024 px images is not free)."""
    return make_image(width, height, "jpeg", color=(200 - shade % 150, 60, 40))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def answer(
    images: list[bytes] | None = None,
    *,
    status_code: int = 0,
    status_msg: str = "success",
    success: int | str | None = None,
    failed: int | str | None = None,
    trace: str = "trace-abc",
) -> dict[str, Any]:
    """A MiniMax-shaped JSON answer (counts are strings, as MiniMax sends them)."""
    images = images if images is not None else [jpeg()]
    body: dict[str, Any] = {
        "id": trace,
        "base_resp": {"status_code": status_code, "status_msg": status_msg},
    }
    if status_code == 0:
        body["data"] = {"image_base64": [b64(i) for i in images]}
        body["metadata"] = {
            "success_count": str(len(images) if success is None else success),
            "failed_count": str(0 if failed is None else failed),
        }
    return body


def failure(code: int, msg: str) -> dict[str, Any]:
    return answer(status_code=code, status_msg=msg)


def draw(request: Recorded) -> Reply:
    """A well-behaved fake MiniMax: n JPEGs of the size the body asks for."""
    body = request.json()
    if "width" in body:
        width, height = body["width"], body["height"]
    else:
        width, height = (int(v) for v in RATIO_SIZES[body.get("aspect_ratio", "1:1")].split("x"))
    n = int(body.get("n", 1))
    return Reply(
        json=answer([jpeg(width, height, i) for i in range(n)], trace=f"trace-{len(body['prompt'])}"),
        headers={"Trace-Id": "hdr-trace-1"},
    )


def entry(provider: MiniMaxProvider, model: str) -> ModelEntry:
    spec = next(s for s in provider.catalog() if s.id == model)
    return ModelEntry(f"minimax/{model}", spec, provider, "minimax")


def validated(
    provider: MiniMaxProvider,
    model: str = "image-01",
    *,
    images: list[InputImage] | None = None,
    **call: Any,
) -> ImageRequest:
    """The request the core would hand the provider for this call (real validation)."""
    call.setdefault("prompt", "a lighthouse at dusk")
    return validate_call(
        ImageCall(model=model, **call), entry(provider, model), Operation.GENERATE, images or []
    ).request


def portrait(fmt: str = "jpeg", size: int = 96) -> InputImage:
    data = make_image(size, size, fmt)
    return InputImage(data=data, format=fmt, width=size, height=size, has_alpha=False, source=f"face.{fmt}")


def context(timeout_s: float = 5.0) -> CallContext:
    return CallContext(timeout_s=timeout_s)
