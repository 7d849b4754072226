"""A fast fake of OpenAI's Images API for the benchmark (plain asyncio, own process).

Run it as a separate process so its work never competes with the measured server for a
GIL. It prints ``ready <port>`` on stdout once every image is built, then serves until
killed::

    python bench/fake_upstream.py --sizes 1024x1024,3840x2160 [--scale 1.0] [--port 0]

``POST .../images/generations`` (and ``.../images/edits``, multipart) answers like gpt-image: ``{"data": [{"b64_json": ...}],
"usage": ...}``. The image is a noisy PNG of the requested ``size`` (about 2.4 MB at
1024x1024, 19 MB at 3840x2160 — realistic, incompressible payloads), built once and cached
under ``bench/.cache``; ``--scale`` serves a smaller image than asked for (the smoke test
uses tiny images). Latency is chosen per call by the prompt: a word ``delay_ms=2000``
makes the answer wait two seconds, and ``serve=4096x4096`` answers with an image of that
size whatever size was asked for (the model's own size rules would not allow every size
of the benchmark's curve), so one fake and one server process cover every scenario. The response bodies are prebuilt bytes: serving costs one socket write.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
_DELAY = re.compile(r"delay_ms=(\d+)")
_SERVE = re.compile(r"serve=(\d+x\d+)")  # answer with an image of this size, whatever was asked
_FORM_FIELD = re.compile(r'name="(prompt|size|n|quality)"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]*)\r\n')
_NOISE_SIGMA = 24  # gives ~2.4 MB at 1024x1024, like a detailed photo-like PNG


def noisy_png(width: int, height: int) -> bytes:
    """A deterministic-size noisy RGB PNG (gradients blended with Gaussian noise)."""
    path = CACHE / f"noise-{width}x{height}-s{_NOISE_SIGMA}.png"
    if path.is_file():
        return path.read_bytes()
    from PIL import Image

    base = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    channels = [
        Image.blend(layer, Image.effect_noise((width, height), _NOISE_SIGMA), 0.5)
        for layer in (base, radial, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    ]
    out = io.BytesIO()
    Image.merge("RGB", channels).save(out, "PNG", compress_level=6)
    data = out.getvalue()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


class FakeImages:
    """Prebuilt answers per requested size."""

    def __init__(self, sizes: list[str], scale: float) -> None:
        self.scale = scale
        self.items: dict[str, bytes] = {}  # size -> JSON fragment of one data item
        for size in sizes:
            self._build(size)
        self.default = sizes[0]

    def _build(self, size: str) -> bytes:
        if size not in self.items:
            width, height = _parse_size(size)
            served = (max(16, round(width * self.scale)), max(16, round(height * self.scale)))
            b64 = base64.b64encode(noisy_png(*served)).decode("ascii")
            self.items[size] = json.dumps({"b64_json": b64, "revised_prompt": None}).encode()
        return self.items[size]

    def body(self, request: dict[str, object]) -> bytes:
        size = str(request.get("size") or self.default)
        served = _SERVE.search(str(request.get("prompt", "")))
        if served:
            size = served.group(1)
        if size not in self.items and re.fullmatch(r"\d+x\d+", size) is None:
            size = self.default
        item = self._build(size)
        n = int(request.get("n") or 1)  # type: ignore[call-overload]
        head = json.dumps(
            {
                "created": int(time.time()),
                "background": "opaque",
                "output_format": "png",
                "quality": request.get("quality") or "low",
                "size": size,
                "usage": {
                    "input_tokens": 12,
                    "output_tokens": 272,
                    "total_tokens": 284,
                    "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
                },
            }
        ).encode()
        return head[:-1] + b', "data": [' + b", ".join([item] * n) + b"]}"


def _response(status: int, body: bytes, request_id: str) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-request-id: {request_id}\r\n\r\n"
    )
    return head.encode() + body


async def serve(images: FakeImages, port: int) -> None:
    counter = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        try:
            while True:  # keep-alive: the SDKs pool connections
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                counter += 1
                request_id = f"req_bench_{counter}"
                if method != "POST" or not path.endswith(("/images/generations", "/images/edits")):
                    writer.write(_response(404, b'{"error": {"message": "not faked"}}', request_id))
                    await writer.drain()
                    continue
                try:
                    if path.endswith("/images/edits"):  # multipart: only the text fields matter
                        request = dict(_FORM_FIELD.findall(raw.decode("latin-1")))
                    else:
                        request = json.loads(raw or b"{}")
                except ValueError:
                    writer.write(_response(400, b'{"error": {"message": "bad json"}}', request_id))
                    await writer.drain()
                    continue
                match = _DELAY.search(str(request.get("prompt", "")))
                if match:
                    await asyncio.sleep(int(match.group(1)) / 1000)
                writer.write(_response(200, images.body(request), request_id))
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20, backlog=256)
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sizes", default="1024x1024,3840x2160", help="sizes to build up front")
    parser.add_argument("--scale", type=float, default=1.0, help="serve images this much smaller")
    args = parser.parse_args(argv)
    images = FakeImages([s for s in args.sizes.split(",") if s], args.scale)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(images, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
