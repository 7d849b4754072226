"""A fake Pixel Forge: answers like the real API, with images of the size asked for.

Built on atelier_core.testing.FakeUpstream (an HTTP server on 127.0.0.1), so the
provider's real HTTP code runs. Queue one-off replies with ``upstream.reply(...)``;
``refuse_next()`` makes the next call (generate or edit) a safety refusal.
"""

from __future__ import annotations

import base64
import threading

from atelier_core.testing import FakeUpstream, Recorded, Reply, make_image

KEY = "test-pixelforge-key"
REFUSAL = {"error": {"type": "content_policy", "message": "prompt not allowed"}}


class FakePixelForge:
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.url = upstream.url + "/v1"
        self._refusals = 0
        self._lock = threading.Lock()  # the fake server answers from its own threads
        upstream.handle("POST", "/v1/images", self.draw)
        upstream.handle("POST", "/v1/images/edits", self.draw)

    def refuse_next(self) -> None:
        with self._lock:
            self._refusals += 1

    def draw(self, request: Recorded) -> Reply:
        """Answer one generate or edit call the way Pixel Forge does."""
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return Reply(status=401, json={"error": {"type": "auth", "message": "bad key"}})
        with self._lock:
            if self._refusals:
                self._refusals -= 1
                return Reply(status=422, json=REFUSAL)
        body = request.json()
        fmt = body.get("format", "png")
        images = [
            {
                "b64": base64.b64encode(make_image(body["width"], body["height"], fmt)).decode(),
                "format": fmt,
                "seed": body.get("seed", 0) + i,
            }
            for i in range(body["count"])
        ]
        return Reply(json={"id": "req_1", "images": images}, headers={"x-request-id": "req_1"})
