"""Helpers for the OpenAI provider tests: tiny images, canned answers, a recording context.

(A uniquely named module: test directories have no ``__init__.py`` here, because a
``tests/providers/openai`` package would shadow the ``openai`` SDK.)"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from atelier_core import CallContext, InputImage, Operation
from atelier_core.engine.registry import ModelEntry, Registry
from atelier_core.engine.validation import Validated, validate_call
from atelier_core.plugin.types import ImageCall

KEY = "sk-test-CANARY-0123456789abcdef"

#: make_registry(**settings) -> Registry with only the OpenAI plugin, aimed at the fake.
RegistryFactory = Callable[..., Registry]
GEN = "/v1/images/generations"
EDIT = "/v1/images/edits"


def png_bytes(width: int = 8, height: int = 8, *, alpha: bool = False, colour: str = "red") -> bytes:
    buf = io.BytesIO()
    mode = "RGBA" if alpha else "RGB"
    fill: Any = (255, 0, 0, 0) if alpha else colour
    Image.new(mode, (width, height), fill).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def input_image(width: int = 8, height: int = 8, *, alpha: bool = False, source: str = "a.png") -> InputImage:
    return InputImage(
        data=png_bytes(width, height, alpha=alpha),
        format="png",
        width=width,
        height=height,
        has_alpha=alpha,
        source=source,
    )


def images_json(count: int = 1, *, usage: bool = True, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"created": 1, "data": [{"b64_json": b64(png_bytes())} for _ in range(count)]}
    if usage:
        body["usage"] = {
            "input_tokens": 50,
            "output_tokens": 100,
            "total_tokens": 150,
            "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
        }
    body.update(extra)
    return body


class Recorder:
    """A CallContext that remembers progress and partial images."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.progress: list[tuple[float, str]] = []
        self.partials: list[tuple[int, bytes]] = []
        self.ctx = CallContext(timeout_s=timeout_s, progress=self._progress, partial_image=self._partial)

    async def _progress(self, fraction: float, message: str) -> None:
        self.progress.append((fraction, message))

    async def _partial(self, data: bytes, index: int) -> None:
        self.partials.append((index, data))


def validated(
    entry: ModelEntry,
    operation: Operation = Operation.GENERATE,
    images: tuple[InputImage, ...] = (),
    mask: InputImage | None = None,
    **call: Any,
) -> Validated:
    call.setdefault("prompt", "a lighthouse at dusk")
    return validate_call(ImageCall(**call), entry, operation, images, mask)
