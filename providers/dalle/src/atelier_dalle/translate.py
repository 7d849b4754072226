"""Pure translation: our request → the SDK's keyword arguments; the server's JSON → items.

Nothing here does I/O or imports the SDK, so every mapping is tested without a server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from atelier_core import ImageRequest, Operation, SafetyRefusalError, UpstreamProtocolError, decode_base64
from atelier_core.plugin.errors import shorten

from .models import Wire
from .settings import ResponseFormat

__all__ = [
    "Item",
    "decode_b64",
    "error_in_ok_answer",
    "is_safety",
    "parse_response",
    "request_kwargs",
    "sniff_mime",
]

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_WS = re.compile(r"\s+")


def request_kwargs(
    request: ImageRequest, wire: Wire, *, response_format: ResponseFormat, upstream_model: str
) -> dict[str, Any]:
    """Keyword arguments for ``images.generate`` / ``edit`` / ``create_variation``.

    Input files are added by the caller (they need conversion first). Parameters the
    model does not take are never sent: some compatible servers reject unknown fields.
    """
    kwargs: dict[str, Any] = {"model": upstream_model, "n": request.n}
    if request.operation is not Operation.VARIATION:
        kwargs["prompt"] = request.prompt or ""
    if request.size:
        kwargs["size"] = request.size
    if response_format != "omit":
        kwargs["response_format"] = response_format
    # The API takes quality on generations and edits, style on generations only; the
    # variations endpoint takes neither.
    if wire.send_quality and request.quality and request.operation is not Operation.VARIATION:
        kwargs["quality"] = request.quality
    if wire.send_style and request.style and request.operation is Operation.GENERATE:
        kwargs["style"] = request.style
    if wire.send_output_format and request.output_format:
        kwargs["output_format"] = request.output_format
    if wire.extra_body:
        kwargs["extra_body"] = dict(wire.extra_body)
    return kwargs


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of the answer's ``data``: image bytes, a URL to fetch, or what was wrong."""

    index: int
    data: bytes | None = None
    url: str | None = None
    revised_prompt: str | None = None
    problem: str | None = None


def decode_b64(text: str) -> bytes:
    """Strict base64 (a data: URL prefix and whitespace tolerated); ValueError otherwise.

    ``base64.b64decode`` without ``validate=True`` silently drops junk characters and
    would turn a corrupted answer into a corrupted image.
    """
    try:  # one C pass for the usual, clean answer (a regex over MBs of text costs ~10 ms)
        return decode_base64(text, what="the base64 image")
    except ValueError:
        return decode_base64(_WS.sub("", text), what="the base64 image")


def parse_response(body: bytes, *, model: str, base_url: str, provider: str) -> list[Item]:
    """The items of an images answer. Raises for an answer that holds no image at all.

    A 200 answer that is not JSON, has no ``data`` or carries an ``error`` object is an
    error for the whole call; a bad single entry becomes an item with a ``problem``.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamProtocolError(
            f"{model}: the server's answer is not JSON ({len(body):,} bytes: "
            f"{shorten(body[:200].decode('utf-8', 'replace'), 160)})",
            code="upstream_protocol_error",
            fix="check that base_url points at the server's OpenAI-compatible /v1 API",
            provider=provider,
        ) from None
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(
            f"{model}: the server answered {type(payload).__name__} JSON, not an object",
            provider=provider,
        )
    error = payload.get("error")
    if error and not payload.get("data"):
        raise error_in_ok_answer(error, model=model, provider=provider)
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        raise UpstreamProtocolError(
            f"{model}: the server returned no image (data is {shorten(data, 60)})",
            code="no_image_returned",
            fix="try again; if it persists, check the server's logs",
            provider=provider,
        )
    items: list[Item] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            items.append(Item(index, problem=f"entry {index} is {type(entry).__name__}, not an object"))
            continue
        revised = entry.get("revised_prompt") if isinstance(entry.get("revised_prompt"), str) else None
        b64 = entry.get("b64_json")
        url = entry.get("url")
        if isinstance(b64, str) and b64:
            try:
                items.append(Item(index, data=decode_b64(b64), revised_prompt=revised))
            except ValueError as exc:
                items.append(Item(index, problem=f"entry {index} has bad base64: {exc}"))
        elif isinstance(url, str) and url:
            if _DATA_URL.match(url):
                try:
                    items.append(Item(index, data=decode_b64(url), revised_prompt=revised))
                except ValueError as exc:
                    items.append(Item(index, problem=f"entry {index} has a bad data: URL: {exc}"))
            else:
                items.append(Item(index, url=urljoin(base_url, url), revised_prompt=revised))
        else:
            items.append(Item(index, problem=f"entry {index} has neither b64_json nor url"))
    return items


def error_in_ok_answer(error: Any, *, model: str, provider: str) -> Exception:
    """Some compatible servers answer HTTP 200 with an ``error`` object."""
    message = error.get("message") if isinstance(error, dict) else error
    code = error.get("code") if isinstance(error, dict) else None
    text = shorten(str(message or code or error), 300)
    if is_safety(str(code or ""), str(message or "")):
        return SafetyRefusalError(
            f'{model}: the server\'s safety system refused the request: "{text}"',
            fix="rephrase the prompt; do not retry it unchanged",
            provider=provider,
        )
    return UpstreamProtocolError(f"{model}: the server answered HTTP 200 with an error: {text}", provider=provider)


_SAFETY_CODES = {
    "content_policy_violation",
    "moderation_blocked",
    "contentfilter",
    "content_filter",
    "responsibleaipolicyviolation",
    "image_content_policy_violation",
}


def is_safety(code: str, message: str) -> bool:
    """Whether an error is a content-policy refusal (OpenAI, Azure and lookalikes)."""
    if code.lower() in _SAFETY_CODES:
        return True
    lowered = message.lower()
    return "safety system" in lowered or "content policy" in lowered or "content filter" in lowered


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def sniff_mime(data: bytes) -> str | None:
    """The image type from the first bytes (the core verifies the whole image later)."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
