"""Shared pieces of the reliability suite: provider-shaped upstream answers, the canary
key, one Atelier wired to every real provider through one fault-injecting fake, and
checks on what ended up on disk.

(A uniquely named module, not a package: test folders here have no ``__init__.py``.)

Every answer below copies the shape the vendor really sends (see
``/work/shared/research/reliability.md`` §2.6 and the provider pages in ``docs/providers``):

- OpenAI Images: ``{"data": [{"b64_json": ...}], "usage": {...}}``; a moderation block
  is HTTP 400 with ``error.code = "moderation_blocked"``.
- Gemini ``generateContent``: ``candidates[].content.parts[].inlineData``; a prompt
  block has no candidates and ``promptFeedback.blockReason``; an output block is a
  candidate with ``finishReason`` such as ``IMAGE_SAFETY`` and no image part.
- MiniMax ``image_generation``: HTTP 200 always, ``base_resp.status_code`` says what
  happened (1026 = input refused by moderation, 1002 = rate limit, 1004 = bad key).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier_core.engine.pipeline import Pipeline
from atelier_core.media.storage import TEMP_PREFIX
from atelier_core.testing import FakeUpstream, Recorded, Reply, build_test_atelier, make_image

__all__ = [
    "CANARY",
    "CANARY_FRAGMENT",
    "GEMINI_ROUTE",
    "MINIMAX_ROUTE",
    "OPENAI_ROUTE",
    "PROVIDERS",
    "UpstreamShape",
    "assert_no_canary",
    "build_stack",
    "files_under",
    "image_files",
    "queue",
    "temp_leftovers",
    "verify_image_file",
]

#: A distinctive fake key, set for every provider. FRAGMENT also catches partial echoes
#: ("sk-relc****Zq81") that a naive masker might leave behind.
CANARY = "sk-relcanary-Q7v2Wm9Lx4Zq81Tb"
CANARY_FRAGMENT = "Q7v2Wm9Lx4"

OPENAI_ROUTE = "/v1/images/generations"
GEMINI_ROUTE = r"^/v1[a-z0-9]*/models/[^/:]+:generateContent$"
MINIMAX_ROUTE = "/v1/image_generation"


@functools.lru_cache(maxsize=32)
def _b64_image(width: int, height: int, fmt: str, shade: int = 0) -> str:
    return base64.b64encode(make_image(width, height, fmt, color=(40 + shade % 180, 90, 150))).decode()


def _truncated_b64(width: int, height: int, fmt: str) -> str:
    """Valid base64 of an image cut short: decodes, but the image is incomplete."""
    raw = base64.b64decode(_b64_image(width, height, fmt))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


# -- provider-shaped answers ----------------------------------------------------------


def openai_ok(n: int = 1, size: int = 64, *, truncate: int | None = None) -> dict[str, Any]:
    """An OpenAI Images answer with ``n`` PNGs; ``truncate`` cuts that item's image short."""
    items = [
        {"b64_json": _truncated_b64(size, size, "png") if i == truncate else _b64_image(size, size, "png", i)}
        for i in range(n)
    ]
    return {
        "created": 1_767_000_000,
        "data": items,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 100,
            "total_tokens": 120,
            "input_tokens_details": {"text_tokens": 20, "image_tokens": 0},
        },
    }


OPENAI_MODERATION = {
    "error": {
        "code": "moderation_blocked",
        "message": "Your request was rejected by the safety system. If you believe this is an error, "
        "contact us. safety_violations=[violence].",
        "param": None,
        "type": "image_generation_user_error",
    }
}


def openai_auth_echo() -> dict[str, Any]:
    """OpenAI's 401 body, which quotes the key it was given."""
    return {
        "error": {
            "message": f"Incorrect API key provided: {CANARY}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def gemini_ok(size: int = 64, *, truncate: bool = False) -> dict[str, Any]:
    data = _truncated_b64(size, size, "png") if truncate else _b64_image(size, size, "png")
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here you go."},
                        {"inlineData": {"mimeType": "image/png", "data": data}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1290, "totalTokenCount": 1300},
        "responseId": "resp-rel",
    }


GEMINI_PROMPT_BLOCKED = {
    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": "The prompt was blocked."},
    "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
}
GEMINI_IMAGE_SAFETY = {
    "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY"}],
    "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10},
}


def gemini_key_echo() -> dict[str, Any]:
    """Google's 400 for a bad key, plus a URL carrying ``?key=`` (the litellm #6963 leak shape)."""
    return {
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": f"API key not valid. Please pass a valid API key. "
            f"(https://generativelanguage.googleapis.com/v1beta/models?key={CANARY})",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "metadata": {"key": CANARY},
                }
            ],
        }
    }


def minimax_ok(n: int = 1, size: int = 64, *, truncate: int | None = None) -> dict[str, Any]:
    images = [
        _truncated_b64(size, size, "jpeg") if i == truncate else _b64_image(size, size, "jpeg", i) for i in range(n)
    ]
    return {
        "id": "trace-rel",
        "data": {"image_base64": images},
        "metadata": {"success_count": str(n), "failed_count": "0"},
        "base_resp": {"status_code": 0, "status_msg": "success"},
    }


def minimax_status(code: int, message: str) -> dict[str, Any]:
    return {"id": "trace-rel", "base_resp": {"status_code": code, "status_msg": message}}


# -- one provider as the fault matrix sees it ---------------------------------------


@dataclass(frozen=True)
class UpstreamShape:
    """How one provider looks on the wire: its route, a good answer, its refusal shapes."""

    provider: str
    model: str
    route: str
    ok: Callable[[], Reply]
    truncated: Callable[[], Reply]
    refusals: tuple[tuple[str, Callable[[], Reply]], ...]
    auth_echo: Callable[[], Reply]
    rate_limited: Callable[[], Reply]


def _openai_rate_limited() -> Reply:
    return Reply(
        status=429,
        headers={"retry-after": "0.05"},
        json={
            "error": {
                "code": "rate_limit_exceeded",
                "type": "requests",
                "message": "Rate limit reached for images per minute",
            }
        },
    )


def _gemini_rate_limited() -> Reply:
    return Reply(
        status=429,
        headers={"retry-after": "0.05"},
        json={
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "Resource has been exhausted (e.g. check quota).",
            }
        },
    )


def _minimax_rate_limited() -> Reply:
    # MiniMax says "rate limit" inside an HTTP 200 (§2.3): HTTP 200 is not success.
    return Reply(json=minimax_status(1002, "rate limit exceeded"))


PROVIDERS: dict[str, UpstreamShape] = {
    "openai": UpstreamShape(
        provider="openai",
        model="openai/gpt-image-1-mini",
        route=OPENAI_ROUTE,
        ok=lambda: Reply(json=openai_ok(), headers={"x-request-id": "req_rel"}),
        truncated=lambda: Reply(json=openai_ok(truncate=0)),
        refusals=(("moderation_blocked", lambda: Reply(status=400, json=OPENAI_MODERATION)),),
        auth_echo=lambda: Reply(status=401, json=openai_auth_echo()),
        rate_limited=_openai_rate_limited,
    ),
    "gemini": UpstreamShape(
        provider="gemini",
        model="gemini/gemini-2.5-flash-image",
        route=GEMINI_ROUTE,
        ok=lambda: Reply(json=gemini_ok()),
        truncated=lambda: Reply(json=gemini_ok(truncate=True)),
        refusals=(
            ("prompt_blocked", lambda: Reply(json=GEMINI_PROMPT_BLOCKED)),
            ("image_safety", lambda: Reply(json=GEMINI_IMAGE_SAFETY)),
        ),
        auth_echo=lambda: Reply(status=400, json=gemini_key_echo()),
        rate_limited=_gemini_rate_limited,
    ),
    "minimax": UpstreamShape(
        provider="minimax",
        model="minimax/image-01",
        route=MINIMAX_ROUTE,
        ok=lambda: Reply(json=minimax_ok(), headers={"Trace-Id": "hdr-rel"}),
        truncated=lambda: Reply(json=minimax_ok(truncate=0)),
        refusals=(("input_sensitive", lambda: Reply(json=minimax_status(1026, "input new_sensitive"))),),
        auth_echo=lambda: Reply(json=minimax_status(1004, f"login fail: invalid api key {CANARY}")),
        rate_limited=_minimax_rate_limited,
    ),
}


def provider_settings(upstream: FakeUpstream, **common: Any) -> dict[str, dict[str, Any]]:
    """Settings pointing OpenAI, Gemini and MiniMax at ``upstream``, keyed with the canary.

    Small timeouts and backoffs keep fault tests in milliseconds; ``common`` overrides
    apply to every provider (e.g. ``max_concurrency=2``).
    """
    base: dict[str, Any] = {
        "api_key": CANARY,
        "timeout_s": 10.0,
        "max_retries": 2,
        "backoff_base_s": 0.01,
        "retry_after_cap_s": 5.0,
        "requests_per_minute": None,
        **common,
    }
    return {
        "openai": {**base, "base_url": upstream.url + "/v1"},
        "gemini": {**base, "base_url": upstream.url},
        "minimax": {**base, "base_url": upstream.url},
    }


def build_stack(
    tmp_path: Path, upstream: FakeUpstream, *, per_provider: dict[str, dict[str, Any]] | None = None, **overrides: Any
) -> Pipeline:
    """The full service with the real OpenAI, Gemini, MiniMax and placeholder plugins,
    every vendor SDK aimed at ``upstream``. ``overrides`` are settings sections."""
    import atelier_gemini
    import atelier_minimax
    import atelier_openai
    import atelier_placeholder

    providers = provider_settings(upstream)
    for name, extra in (per_provider or {}).items():
        providers[name] = {**providers[name], **extra}
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    overrides.setdefault("storage", {"output_dir": tmp_path / "images", "input_dirs": [inputs]})
    return build_test_atelier(
        tmp_path,
        [atelier_openai, atelier_gemini, atelier_minimax, atelier_placeholder],
        providers=providers,
        **overrides,
    )


# -- what is on disk ------------------------------------------------------------------


def files_under(root: Path) -> Iterator[Path]:
    if root.exists():
        yield from (p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def image_files(root: Path) -> list[Path]:
    """Published images (no sidecars, no hidden temp files)."""
    return sorted(
        p
        for p in files_under(root)
        if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".gif"} and not p.name.startswith(".")
    )


def temp_leftovers(root: Path) -> list[Path]:
    return sorted(p for p in files_under(root) if p.name.startswith(TEMP_PREFIX))


def verify_image_file(path: Path) -> tuple[int, int]:
    """Pillow ``verify()`` plus a full decode: a torn or truncated file fails here."""
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        image.load()
        return image.size


def assert_no_canary(blob: bytes | str, where: str) -> None:
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    assert CANARY not in text and CANARY_FRAGMENT not in text, f"the canary key leaked into {where}"


def database_bytes(data_dir: Path) -> bytes:
    """Every byte of the state database (main file, WAL and shared memory), after a checkpoint."""
    out = b""
    db_files = sorted(data_dir.rglob("*.db*")) + sorted(data_dir.rglob("*.sqlite*"))
    for path in db_files:
        if path.suffix == ".db":
            try:
                with sqlite3.connect(path) as conn:
                    conn.execute("PRAGMA wal_checkpoint(FULL)")
            except sqlite3.Error:
                pass
    for path in db_files:
        out += path.read_bytes()
    return out


def queue(upstream: FakeUpstream, route: str, *replies: Reply) -> None:
    """Queue ready-made :class:`Reply` objects on a route, in order (FakeUpstream.reply
    takes the same fields as keyword arguments)."""
    for reply in replies:
        upstream.reply("POST", route, **{f.name: getattr(reply, f.name) for f in dataclasses.fields(reply)})


def request_mentions(requests: list[Recorded], needle: bytes) -> bool:
    return any(needle in r.body for r in requests)


def rss_kib(pid: int) -> int:
    """Resident set size of a live process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def env_without_atelier() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
