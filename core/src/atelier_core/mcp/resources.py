"""``atelier://images/<path>``: every saved image as an MCP resource, read within bounds.

A ``resources/read`` of an image is answered by the handler :func:`install_image_reads`
puts in front of the SDK's template path, which would read the whole file, base64-encode
it into a second buffer, decode that into a third, all on top of the answer it then
serialises (a 300 MB file took a server from 78 MB to 1.68 GB). Here:

- the file is opened without following a final symlink, and its size is taken with
  ``fstat`` **before** anything is read: above ``storage.max_resource_bytes`` the read is
  refused with a JSON-RPC error that names the file, the size, the limit and the fix;
- the reading and encoding run in a worker thread, never on the event loop, so other
  requests keep being answered while a large image is read;
- the file is base64-encoded chunk by chunk straight into the answer's buffer: the raw
  bytes are never held whole, and the server keeps one encoded copy (over stdio the answer
  line is then serialised once, to bytes, by ``mcp/stdio.py``).

The templates stay registered so ``resources/templates/list`` advertises the URIs; their
reader is only reached without that handler, and applies the same limit.
"""

from __future__ import annotations

import binascii
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import BlobResourceContents, ReadResourceResult

from atelier_core.engine.pipeline import Pipeline
from atelier_core.media.storage import RESOURCE_PREFIX
from atelier_core.plugin.errors import AtelierError, NotFoundError, RequestError

__all__ = ["add_image_resources", "install_image_reads", "read_base64"]

_MIME_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
_CHUNK = 3 * 1024 * 1024  # a multiple of 3: chunk encodings concatenate to the whole file's
_INVALID_PARAMS = -32602
_INTERNAL_ERROR = -32603


class ResourceTooLarge(RequestError):
    """A file above ``storage.max_resource_bytes``."""


def _open_checked(path: Path, uri: str, max_bytes: int) -> tuple[int, int]:
    """``(fd, size)`` of a regular file within ``max_bytes``; nothing read yet."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        raise NotFoundError(
            f"uri={uri}: no such image in the output root",
            code="image_not_found",
            parameter="uri",
            fix="use a resource URI returned by this server",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotFoundError(
                f"uri={uri}: not a regular file",
                code="image_not_found",
                parameter="uri",
                fix="use a resource URI returned by this server",
            )
        if st.st_size > max_bytes:
            raise ResourceTooLarge(
                f"uri={uri}: the file is {st.st_size:,} bytes, above the limit of {max_bytes:,} bytes "
                "for resources/read (storage.max_resource_bytes); nothing was read",
                code="resource_too_large",
                parameter="uri",
                allowed=f"files of at most {max_bytes:,} bytes",
                fix=f"open the file from disk instead ({path}), or raise storage.max_resource_bytes",
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _read_exactly(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; fewer bytes only at end of file."""
    got = 0
    while got < len(view):
        step = os.readv(fd, [view[got:]])
        if step == 0:
            break
        got += step
    return got


def read_base64(path: Path, uri: str, max_bytes: int) -> str:
    """The base64 text of the file at ``path``, encoded chunk by chunk into one buffer
    (blocking: call it in a worker thread). Raises :class:`ResourceTooLarge` above
    ``max_bytes`` before reading, and NotFoundError for anything but a regular file."""
    fd, size = _open_checked(path, uri, max_bytes)
    try:
        out = bytearray(4 * -(-size // 3))
        view = memoryview(bytearray(min(_CHUNK, size) or 1))
        done = position = 0
        while done < size:
            want = min(_CHUNK, size - done)  # a multiple of 3 except for the last chunk
            if _read_exactly(fd, view[:want]) < want:
                raise NotFoundError(
                    f"uri={uri}: the file shrank while it was read",
                    code="image_not_found",
                    parameter="uri",
                    fix="read it again",
                )
            encoded = binascii.b2a_base64(view[:want], newline=False)
            out[position : position + len(encoded)] = encoded
            position += len(encoded)
            done += want
        return out.decode("ascii")
    finally:
        os.close(fd)


async def read_bucket_base64(atelier: Pipeline, uri: str, max_bytes: int) -> str:
    """The base64 text of the image behind ``uri`` in the bucket (``storage.url``), streamed
    and encoded chunk by chunk; refused above ``max_bytes`` from the object's size, before
    any byte is read. The key is the current principal's, so nobody reads another's."""
    assert atelier.bucket is not None
    key = atelier.store.key_of(unquote(uri[len(RESOURCE_PREFIX) :]))
    try:
        info, chunks = await atelier.bucket.stream(key)
    except NotFoundError:
        raise NotFoundError(
            f"uri={uri}: no such image in the output root or the bucket",
            code="image_not_found",
            parameter="uri",
            fix="use a resource URI returned by this server",
        ) from None
    if info.size > max_bytes:
        raise ResourceTooLarge(
            f"uri={uri}: the image is {info.size:,} bytes, above the limit of {max_bytes:,} bytes "
            "for resources/read (storage.max_resource_bytes); nothing was read",
            code="resource_too_large",
            parameter="uri",
            allowed=f"images of at most {max_bytes:,} bytes",
            fix="fetch it with the pre-signed URL in the result (storage.presign_ttl_s), or raise "
            "storage.max_resource_bytes",
        )
    out = bytearray()
    carry = b""
    async for chunk in chunks:
        data = carry + chunk
        whole = len(data) - len(data) % 3  # encode whole 3-byte groups; the rest waits
        out += binascii.b2a_base64(data[:whole], newline=False)
        carry = data[whole:]
    out += binascii.b2a_base64(carry, newline=False) if carry else b""
    return out.decode("ascii")


def install_image_reads(server: MCPServer[Pipeline], atelier: Pipeline) -> None:
    """Answer ``resources/read`` of ``atelier://images/…`` within bounds (see the module
    docstring); any other URI goes to the SDK's own handler, which stays in place.

    The handler is swapped on the SDK's low-level server (``add_request_handler`` is its
    public API; MCPServer keeps that server in ``_lowlevel_server``), so the result still
    passes through the SDK's outbound envelope (cache hints, per-version shape)."""
    lowlevel = server._lowlevel_server  # no public accessor; tested
    sdk = lowlevel.get_request_handler("resources/read")
    if sdk is None:
        raise RuntimeError("the MCP SDK registered no resources/read handler")
    limit = atelier.settings.storage.max_resource_bytes

    async def read(ctx: Any, params: Any) -> Any:
        uri = str(params.uri)
        if not uri.startswith(RESOURCE_PREFIX):
            return await sdk.handler(ctx, params)
        mime = _MIME_BY_EXT.get(uri.rsplit(".", 1)[-1].lower())
        try:
            if mime is None:
                raise NotFoundError(
                    f"uri={uri}: not an image resource",
                    code="image_not_found",
                    parameter="uri",
                    allowed=sorted(_MIME_BY_EXT),
                    fix="use a resource URI returned by this server",
                )
            try:
                path = atelier.store.resolve_resource(uri)
            except NotFoundError:
                if atelier.bucket is None:
                    raise
                # Made by another replica: its disk is not ours, the bucket is shared.
                blob = await read_bucket_base64(atelier, uri, limit)
            else:
                blob = await anyio.to_thread.run_sync(read_base64, path, uri, limit)
        except AtelierError as exc:
            code = _INVALID_PARAMS if isinstance(exc, RequestError) else _INTERNAL_ERROR
            raise MCPError(code=code, message=str(exc), data={"uri": uri, "code": exc.code}) from None
        return ReadResourceResult(contents=[BlobResourceContents(uri=uri, blob=blob, mime_type=mime)])

    lowlevel.add_request_handler("resources/read", sdk.params_type, read)


def add_image_resources(server: MCPServer[Pipeline], atelier: Pipeline) -> None:
    """``atelier://images/<relative path>``: every saved image, confined to the output root.

    One template per extension because a template's MIME type is fixed.
    """
    from mcp.server.mcpserver.exceptions import ResourceError

    limit = atelier.settings.storage.max_resource_bytes

    def reader(ext: str) -> Callable[[str], bytes]:
        def read(path: str) -> bytes:
            uri = f"{RESOURCE_PREFIX}{path}.{ext}"
            try:
                fd, size = _open_checked(atelier.store.resolve_resource(uri), uri, limit)
            except AtelierError as exc:
                raise ResourceError(str(exc)) from None
            with os.fdopen(fd, "rb") as file:
                return file.read(size)

        return read

    for ext, mime in _MIME_BY_EXT.items():
        server.resource(
            f"{RESOURCE_PREFIX}{{+path}}.{ext}",
            name=f"image-{ext}",
            mime_type=mime,
            description=f"A saved {ext} image",
        )(reader(ext))
