"""Helpers for the dalle provider tests: a fake DALL·E-style images server and builders."""

from __future__ import annotations

import base64
import functools
from typing import Any

from atelier_core import CallContext
from atelier_core.testing import FakeUpstream, Recorded, Reply, make_image
from atelier_dalle import DalleProvider, DalleSettings


def fields(recorded: Recorded) -> dict[str, Any]:
    """The request's parameters, from JSON or multipart (files as (name, type, bytes))."""
    if recorded.headers.get("content-type", "").startswith("multipart/"):
        return {k: v[0] if len(v) == 1 else v for k, v in recorded.form().items()}
    body = recorded.json()
    assert isinstance(body, dict)
    return body


@functools.lru_cache(maxsize=32)
def picture(width: int, height: int, index: int = 0) -> bytes:
    """A PNG of the given size (cached: encoding large PNGs dominates these tests' time)."""
    return make_image(width, height, "png", color=(10 * index % 250, 100, 150))


def route(operation: str) -> str:
    """The fake's path pattern for an images endpoint (OpenAI-style and Azure-style)."""
    return f"^(/v1|/openai/deployments/[^/]+|/openai)/images/{operation}$"


class ImagesServer:
    """Answers /images/* like the DALL·E API: n images of the requested size.

    It answers in the ``response_format`` asked for (``url`` when none, as the API did):
    URLs point at ``/files/<n>.png`` on the same server. ``revised`` adds a revised prompt.
    """

    def __init__(self, upstream: FakeUpstream) -> None:
        self.up = upstream
        self.revised: str | None = None
        self.files: dict[str, bytes] = {}
        for operation in ("generations", "edits", "variations"):
            upstream.handle("POST", route(operation), self.answer)
        upstream.handle("GET", "^/files/.*$", self.serve_file)

    def refuse_next(self) -> None:
        """The next call to any images endpoint is refused by the "safety system"."""
        body = {
            "error": {
                "code": "content_policy_violation",
                "type": "invalid_request_error",
                "message": "Your request was rejected as a result of our safety system.",
            }
        }
        for operation in ("generations", "edits", "variations"):
            self.up.reply("POST", route(operation), status=400, json=body)

    def answer(self, recorded: Recorded) -> Reply:
        params = fields(recorded)
        size = str(params.get("size") or "1024x1024")
        width, height = (int(v) for v in size.split("x"))
        n = int(params.get("n") or 1)
        mode = str(params.get("response_format") or "url")
        data = []
        for index in range(n):
            image = picture(width, height, index)
            entry: dict[str, Any]
            if mode == "b64_json":
                entry = {"b64_json": base64.b64encode(image).decode()}
            else:
                name = f"{len(self.files)}.png"
                self.files[name] = image
                entry = {"url": f"{self.up.url}/files/{name}"}
            if self.revised:
                entry["revised_prompt"] = self.revised
            data.append(entry)
        return Reply(json={"created": 1_700_000_000, "data": data}, headers={"x-request-id": "req_fake"})

    def serve_file(self, recorded: Recorded) -> Reply:
        name = recorded.path.rsplit("/", 1)[-1]
        if name not in self.files:
            return Reply(status=404, body=b"gone")
        return Reply(body=self.files[name], content_type="image/png")


def make_provider(**settings: Any) -> DalleProvider:
    provider = DalleProvider()
    provider.configure(DalleSettings(**settings))
    return provider


def fetching_context(upstream: FakeUpstream, *, timeout_s: float = 5.0) -> CallContext:
    """A CallContext whose download fetches from the fake through the core's SafeFetcher."""
    from atelier_core.media.fetch import SafeFetcher

    fetcher = SafeFetcher(timeout_s=timeout_s, max_bytes=10 * 1024 * 1024)

    async def download(url: str, hosts: Any) -> bytes:
        return await fetcher.fetch(url, allowed_hosts=list(hosts), parameter="provider image URL")

    return CallContext(timeout_s=timeout_s, download=download)
