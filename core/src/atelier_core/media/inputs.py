"""Input images: turn whatever reference a caller sent into checked bytes.

:meth:`InputIntake.load` accepts, decided explicitly and in this order:

1. ``data:image/<type>;base64,<data>`` — a data URL (the declared type is ignored;
   the bytes are sniffed).
2. ``atelier://images/<path>`` — an image this server saved (see the storage module).
3. ``file://`` URLs — percent-decoded, then treated exactly like a local path.
4. ``https://`` URLs — only with ``storage.allow_remote_inputs`` on, through
   :class:`~atelier_core.media.fetch.SafeFetcher` (public addresses only, capped, timed).
   ``http://`` and every other scheme are refused.
5. Raw base64 — recognised by the encoded signature of a PNG/JPEG/WebP/GIF
   (``iVBORw0KGgo``, ``/9j/``, ``UklGR``, ``R0lGOD``) or by a length no path can have.
   Decoding is strict (``validate=True``); spaces and line breaks are removed
   explicitly first; the length is checked before decoding.
6. Anything else is a local path: absolute, ``~``-prefixed, or relative — relative
   paths are tried against each input root in order, never the process's working
   directory. The resolved file (``realpath``, so symlinks are followed and judged by
   their target) must lie inside one of the **input roots** (the output root plus
   ``storage.input_dirs``) and be a regular file; FIFOs, devices and directories are
   refused without blocking (opened ``O_NONBLOCK``). The size is checked with
   ``fstat`` before reading; the bytes are read once, and exactly those bytes are
   validated and returned.

Every image is then checked by :func:`~atelier_core.media.images.inspect_image` (format by
content, pixel cap before decoding, full decode). Errors echo the reference as the
caller gave it (shortened) and never list directories or reveal paths outside the roots.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import anyio.to_thread

from atelier_core.media.fetch import SafeFetcher
from atelier_core.media.images import DEFAULT_FORMATS, inspect_image
from atelier_core.media.storage import RESOURCE_PREFIX, OutputStore
from atelier_core.plugin.errors import InputImageError, NotFoundError, RequestError, shorten
from atelier_core.plugin.types import InputImage

if TYPE_CHECKING:
    from atelier_core.media.objects import BucketStore

__all__ = ["InputBudget", "InputIntake", "decode_base64_image"]

_B64_SIGNATURES = ("iVBORw0KGgo", "/9j/", "UklGR", "R0lGOD")
_B64_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = str.maketrans("", "", " \t\r\n")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_MAX_PATH_CHARS = 4096
_REMOTE_SETTING = (
    "set storage.allow_remote_inputs = true in the config file "
    "(or ATELIER_STORAGE__ALLOW_REMOTE_INPUTS=true), or pass the image as a local path "
    "inside the input folders, a data: URL or base64"
)


def _shown(reference: str) -> str:
    # References can be megabytes of base64 or URLs with signed query strings.
    if reference[:5].lower() in ("https", "http:"):
        reference = reference.split("?", 1)[0] + ("?…" if "?" in reference else "")
    return shorten(reference, 100)


def decode_base64_image(text: str, *, max_bytes: int, parameter: str) -> bytes:
    """Strictly decode base64 image data: whitespace removed explicitly, the length
    checked before decoding, then ``b64decode(validate=True)``. Raises InputImageError
    (``invalid_base64_image``, ``image_file_too_large``, ``empty_image_file``)."""
    limit = 4 * ((max_bytes + 2) // 3)
    if len(text) > limit * 2 + 4096:  # cheap bound before copying a huge string
        raise _too_large(parameter, text, max_bytes)
    compact = text.translate(_WHITESPACE)
    if len(compact) > limit:
        raise _too_large(parameter, text, max_bytes)
    if not compact:
        raise InputImageError(
            f"{parameter}: the base64 image data is empty",
            code="empty_image_file",
            parameter=parameter,
            fix="send the image's bytes, base64-encoded",
        )

    def invalid(problem: str) -> InputImageError:
        return InputImageError(
            f"{parameter}: {problem}",
            code="invalid_base64_image",
            parameter=parameter,
            value=_shown(text),
            fix="send standard base64 (A-Z, a-z, 0-9, +, /, '=' padding only), e.g. the output of `base64 -w0 image.png`",
        )

    try:
        raw = compact.encode("ascii")
    except UnicodeEncodeError:
        raise invalid("the base64 data contains non-ASCII characters") from None
    if not _B64_ALPHABET.fullmatch(raw) or len(raw) % 4:
        raise invalid("the data is not valid base64 (characters outside the alphabet or bad padding)")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("the data is not valid base64") from None
    if len(data) > max_bytes:
        raise _too_large(parameter, text, max_bytes)
    return data


def _too_large(parameter: str, reference: str, max_bytes: int, size: int | None = None) -> InputImageError:
    what = f" ({size:,} bytes)" if size is not None else ""
    return InputImageError(
        f"{parameter}: the image{what} is larger than the limit of {max_bytes:,} bytes",
        code="image_file_too_large",
        parameter=parameter,
        value=_shown(reference),
        fix="downscale or recompress the image, or raise storage.max_input_bytes",
    )


@dataclass(slots=True)
class InputBudget:
    """What the input images of one call may take together: bytes and pixels.

    :meth:`InputIntake.load` charges each image; a file is never read, and a header is
    never decoded, once it would take the call past its budget. The refusal comes from
    the plan stage, before anything is sent.
    """

    max_bytes: int
    max_pixels: int
    bytes_used: int = 0
    pixels_used: int = 0
    images: int = 0

    @property
    def bytes_left(self) -> int:
        return max(0, self.max_bytes - self.bytes_used)

    @property
    def pixels_left(self) -> int:
        return max(0, self.max_pixels - self.pixels_used)

    def refusal(self, parameter: str, what: str) -> InputImageError:
        if what == "bytes":
            used, cap, setting = self.bytes_used, self.max_bytes, "storage.max_call_input_bytes"
        else:
            used, cap, setting = self.pixels_used, self.max_pixels, "storage.max_call_input_pixels"
        return InputImageError(
            f"{parameter}: the input images of one call may total at most {cap:,} {what}; the "
            f"{self.images} image(s) before this one already take {used:,}, and {parameter} would "
            "go past the limit. Nothing was sent.",
            code="call_inputs_too_large",
            parameter=parameter,
            allowed=f"at most {cap:,} {what} for all input images and the mask together",
            fix=f"send fewer or smaller images (downscale or recompress them), or raise {setting}",
        )


class InputIntake:
    """Loads input images for one server. Blocking work runs in worker threads."""

    def __init__(
        self,
        *,
        roots: Sequence[Path | str],
        store: OutputStore,
        fetcher: SafeFetcher | None,
        allow_remote: bool,
        max_bytes: int,
        max_pixels: int,
    ) -> None:
        resolved: list[Path] = []
        for root in roots:
            real = Path(os.path.realpath(os.path.expanduser(os.fspath(root))))
            if real.is_dir() and real not in resolved:
                resolved.append(real)
        self._roots = tuple(resolved)
        self.store = store
        #: Where images other replicas made are (``storage.url``): set by the pipeline.
        self.bucket: Callable[[], BucketStore | None] = lambda: None
        self.fetcher = fetcher
        self.allow_remote = allow_remote
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    @property
    def roots(self) -> tuple[Path, ...]:
        """The input roots of the current principal: the output folder stands for that
        principal's own part of it (see :class:`~atelier_core.media.storage.OutputStore`)."""
        own = self.store.root
        if own == self.store.base:
            return self._roots
        return tuple(own if root == self.store.base else root for root in self._roots)

    async def load(
        self,
        reference: str,
        *,
        parameter: str = "images[0]",
        formats: Sequence[str] = DEFAULT_FORMATS,
        budget: InputBudget | None = None,
    ) -> InputImage:
        """Read and check one input image; see the module docstring for the forms.

        With ``budget`` (one per call) the image is also charged to the call's total,
        and refused (``call_inputs_too_large``) before it is read or decoded past it."""
        limit = self.max_bytes if budget is None else min(self.max_bytes, budget.bytes_left)
        try:
            data, source = await self._bytes(reference, parameter, limit)
        except InputImageError as exc:
            if budget is not None and exc.code == "image_file_too_large" and limit < self.max_bytes:
                raise budget.refusal(parameter, "bytes") from None
            raise
        pixels = self.max_pixels if budget is None else min(self.max_pixels, budget.pixels_left)
        try:
            info = await anyio.to_thread.run_sync(
                lambda: inspect_image(data, max_pixels=pixels, formats=formats, parameter=parameter)
            )
        except InputImageError as exc:
            if budget is not None and exc.code == "image_too_many_pixels" and pixels < self.max_pixels:
                raise budget.refusal(parameter, "pixels") from None
            raise
        if budget is not None:
            budget.bytes_used += len(data)
            budget.pixels_used += info.pixels
            budget.images += 1
        return InputImage(
            data=data,
            format=info.format,
            width=info.width,
            height=info.height,
            has_alpha=info.has_alpha,
            source=source,
        )

    # -- discrimination -----------------------------------------------------------

    async def _bytes(self, reference: str, parameter: str, limit: int) -> tuple[bytes, str]:
        if not isinstance(reference, str) or not reference.strip():
            raise InputImageError(
                f"{parameter}: the image reference is empty",
                code="empty_image_file",
                parameter=parameter,
                fix="pass a file path inside the input folders, an atelier://images/… URI, a data: URL or base64",
            )
        text = reference.strip()
        lowered = text[:16].lower()
        if lowered.startswith("data:"):
            return self._data_url(text, parameter, limit), "image"
        if text.startswith(RESOURCE_PREFIX) or lowered.startswith("atelier:"):
            return await self._resource(text, reference, parameter, limit)
        if lowered.startswith("file:"):
            return await self._file_url(text, reference, parameter, limit)
        if lowered.startswith("https://"):
            return await self._remote(text, parameter, limit)
        scheme = _SCHEME.match(text)
        if scheme and not text.startswith(_B64_SIGNATURES):
            raise InputImageError(
                f"{parameter}: {scheme.group(1).lower()}: references are not accepted",
                code="url_not_allowed",
                parameter=parameter,
                value=_shown(reference),
                allowed=[
                    "local path",
                    "file://",
                    "atelier://images/…",
                    "data:image/…;base64,…",
                    "base64",
                    "https:// (when enabled)",
                ],
                fix="pass the image as a local path, a data: URL or base64",
            )
        if text.startswith(_B64_SIGNATURES) or len(text) > _MAX_PATH_CHARS:
            data = decode_base64_image(text, max_bytes=limit, parameter=parameter)
            return data, "image"
        return await self._path(text, reference, parameter, limit)

    def _data_url(self, text: str, parameter: str, limit: int) -> bytes:
        header, comma, payload = text.partition(",")
        params = [p.strip().lower() for p in header[5:].split(";")]
        if not comma or "base64" not in params[1:]:
            raise InputImageError(
                f"{parameter}: only base64 data URLs are accepted (data:image/png;base64,…)",
                code="invalid_base64_image",
                parameter=parameter,
                value=_shown(text),
                fix="encode the image as data:image/png;base64,<base64 bytes>",
            )
        if params[0] and not params[0].startswith("image/"):
            raise InputImageError(
                f"{parameter}: the data URL declares {shorten(params[0], 40)}, not an image type",
                code="unsupported_image_media_type",
                parameter=parameter,
                value=_shown(text),
                allowed=["image/png", "image/jpeg", "image/webp", "image/gif"],
                fix="send a PNG, JPEG, WebP or GIF image",
            )
        # The declared image type is not trusted either way: the bytes are sniffed.
        return decode_base64_image(payload, max_bytes=limit, parameter=parameter)

    async def _resource(self, text: str, reference: str, parameter: str, limit: int) -> tuple[bytes, str]:
        try:
            path = self.store.resolve_resource(text, parameter=parameter)
        except RequestError as exc:
            bucket = self.bucket() if isinstance(exc, NotFoundError) else None
            if bucket is not None:  # made by another replica?
                return await self._from_bucket(bucket, text, reference, parameter, limit)
            raise InputImageError(
                f"{parameter}: {exc.message}",
                code="image_file_not_found" if isinstance(exc, NotFoundError) else "invalid_image_reference",
                parameter=parameter,
                value=_shown(reference),
                fix=exc.fix,
            ) from None
        data = await anyio.to_thread.run_sync(
            self._read_confined, str(path), reference, parameter, (self.store.root,), limit
        )
        return data, path.name

    async def _from_bucket(
        self, bucket: BucketStore, text: str, reference: str, parameter: str, limit: int
    ) -> tuple[bytes, str]:
        """An image another replica made: the current principal's key in the bucket."""
        relative = unquote(text.removeprefix(RESOURCE_PREFIX))
        try:
            info, chunks = await bucket.stream(self.store.key_of(relative))
        except NotFoundError:
            raise InputImageError(
                f"{parameter}: no such image in the output root or the bucket",
                code="image_file_not_found",
                parameter=parameter,
                value=_shown(reference),
                fix="use a resource URI or path returned by a previous call",
            ) from None
        if info.size > limit:
            raise InputImageError(
                f"{parameter}: the image is {info.size:,} bytes, above the limit of {limit:,} bytes",
                code="image_file_too_large",
                parameter=parameter,
                value=_shown(reference),
                fix="use a smaller image, or raise storage.max_input_bytes",
            )
        data = b"".join([chunk async for chunk in chunks])
        return data, relative.rsplit("/", 1)[-1]

    async def _file_url(self, text: str, reference: str, parameter: str, limit: int) -> tuple[bytes, str]:
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise InputImageError(
                f"{parameter}: only local file:// URLs are accepted (file:///path/to/image.png)",
                code="url_not_allowed",
                parameter=parameter,
                value=_shown(reference),
                fix="pass a file:///absolute/path URL or a plain path inside the input folders",
            )
        return await self._path(unquote(parts.path), reference, parameter, limit)

    async def _remote(self, text: str, parameter: str, limit: int) -> tuple[bytes, str]:
        if not self.allow_remote or self.fetcher is None:
            raise InputImageError(
                f"{parameter}: downloading images from URLs is turned off on this server",
                code="url_not_allowed",
                parameter=parameter,
                value=_shown(text),
                fix=_REMOTE_SETTING,
            )
        data = await self.fetcher.fetch(text, parameter=parameter, max_bytes=limit)
        name = urlsplit(text).path.rsplit("/", 1)[-1] or "image"
        return data, name

    # -- local files --------------------------------------------------------------

    async def _path(self, text: str, reference: str, parameter: str, limit: int) -> tuple[bytes, str]:
        if any(ord(c) < 0x20 or c == "\x7f" for c in text):
            raise InputImageError(
                f"{parameter}: the path contains control characters",
                code="invalid_image_reference",
                parameter=parameter,
                value=_shown(reference),
                fix="pass a plain file path",
            )
        if len(text) > _MAX_PATH_CHARS:
            raise InputImageError(
                f"{parameter}: the path is too long",
                code="invalid_image_reference",
                parameter=parameter,
                value=_shown(reference),
                fix="pass a shorter path",
            )
        # String operations on the path, no filesystem access.
        expanded = os.path.expanduser(text) if text.startswith("~") else text  # noqa: ASYNC240
        if os.path.isabs(expanded):
            candidates = [expanded]
        else:
            # Relative paths are looked up in the input roots, never the working directory.
            candidates = [os.path.join(root, expanded) for root in self.roots]
        data = await anyio.to_thread.run_sync(self._read_first, candidates, reference, parameter, limit)
        return data, os.path.basename(expanded.rstrip("/")) or "image"

    def _roots_hint(self) -> str:
        roots = ", ".join(str(r) for r in self.roots) or "(none configured)"
        return (
            f"put the image inside one of the input folders ({roots}) — storage.output_dir and "
            "storage.input_dirs — or pass it as a data: URL or base64"
        )

    def _read_first(self, candidates: list[str], reference: str, parameter: str, limit: int) -> bytes:
        outside = 0
        for candidate in candidates:
            real = os.path.realpath(candidate)
            if not any(Path(real).is_relative_to(root) for root in self.roots):
                outside += 1
                continue
            if os.path.lexists(real):
                return self._read_confined(real, reference, parameter, self.roots, limit)
        # Decided by where the path resolves, not by whether it exists, so that the
        # answer reveals nothing about files outside the roots.
        if outside:
            raise InputImageError(
                f"{parameter}: {_shown(reference)} is outside the folders this server may read images from",
                code="input_path_outside_root",
                parameter=parameter,
                value=_shown(reference),
                fix=self._roots_hint(),
            )
        raise InputImageError(
            f"{parameter}: no image file at {_shown(reference)}",
            code="image_file_not_found",
            parameter=parameter,
            value=_shown(reference),
            fix="check the path; relative paths are looked up in the input folders, not the current "
            f"directory; {self._roots_hint()}",
        )

    def _read_confined(self, real: str, reference: str, parameter: str, roots: Sequence[Path], limit: int) -> bytes:
        """Open ``real`` (already resolved inside ``roots``) without following a final
        symlink and without blocking, check it is a regular file of acceptable size,
        and read it once."""

        def refuse(problem: str, code: str = "invalid_image_reference") -> InputImageError:
            return InputImageError(
                f"{parameter}: {_shown(reference)} {problem}",
                code=code,
                parameter=parameter,
                value=_shown(reference),
                fix="pass a regular image file (PNG, JPEG, WebP or GIF)",
            )

        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            raise InputImageError(
                f"{parameter}: no image file at {_shown(reference)}",
                code="image_file_not_found",
                parameter=parameter,
                value=_shown(reference),
                fix=self._roots_hint(),
            ) from None
        except OSError as exc:
            raise refuse(f"cannot be opened ({os.strerror(exc.errno or 0)})") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise refuse("is a folder, not an image file")
            if not stat.S_ISREG(st.st_mode):
                raise refuse("is not a regular file (a pipe, device or socket)")
            # The path was resolved before opening; if a folder on the way was swapped
            # for a symlink in between, the descriptor tells where we really are.
            proc = f"/proc/self/fd/{fd}"
            if os.path.exists(proc):
                actual = Path(os.readlink(proc))
                if not any(actual.is_relative_to(root) for root in roots):
                    raise InputImageError(
                        f"{parameter}: {_shown(reference)} is outside the folders this server may read images from",
                        code="input_path_outside_root",
                        parameter=parameter,
                        value=_shown(reference),
                        fix=self._roots_hint(),
                    )
            if st.st_size > limit:
                raise _too_large(parameter, reference, limit, st.st_size)
            if st.st_size == 0:
                raise refuse("is empty (0 bytes)", code="empty_image_file")
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = os.read(fd, min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:  # the file grew after fstat
                    raise _too_large(parameter, reference, limit)
            return b"".join(chunks)
        finally:
            os.close(fd)
