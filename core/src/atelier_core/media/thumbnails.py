"""Small renditions of saved images, made once and kept.

Listing a session's history or a set of finished jobs shows a thumbnail per image.
Making one means reading and decoding the full image (18-40 ms for a 1024² PNG): a
history of 30 turns took 0.4-2 s, and every listing paid it again. :class:`Thumbnails`
keeps each rendition in memory (bounded) and on disk (``<data dir>/thumbnails``), keyed
by the file (path, size, modification time) and the rendition's parameters, so a file
replaced in place gets a fresh one. Renditions made anyway — the preview of a new image,
made from the decode that verified it — are stored as they are made.

The files are a cache: written without fsync, pruned oldest first beyond a bound, and
re-made when missing or unreadable.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import structlog

from atelier_core.media.images import Preview, make_preview

__all__ = ["Thumbnails"]

log = structlog.get_logger("atelier.thumbnails")

_EXT = {"image/webp": "webp", "image/jpeg": "jpg"}
_MIME = {ext: mime for mime, ext in _EXT.items()}


class Thumbnails:
    """Renditions of image files, made once (blocking methods: call them in a thread)."""

    def __init__(self, directory: Path, *, memory_bytes: int = 8 * 1024 * 1024, max_files: int = 5000) -> None:
        self.directory = directory
        self.memory_bytes = memory_bytes
        self.max_files = max_files
        self._memory: OrderedDict[str, Preview] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._writes = 0
        self.made = 0  # renditions made from the full image (the misses), for tests and logs

    @staticmethod
    def _key(path: Path, max_edge: int, max_bytes: int, fmt: str) -> str | None:
        try:
            st = path.stat()
        except OSError:
            return None
        ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{max_edge}\0{max_bytes}\0{fmt}"
        return hashlib.sha256(ident.encode()).hexdigest()[:40]

    def get(self, path: Path, *, max_edge: int, max_bytes: int, fmt: str) -> Preview:
        """The rendition of ``path`` (made from the file when not kept yet).

        Raises what :func:`~atelier_core.media.images.make_preview` raises for an
        unreadable image, and ``OSError`` for a missing file.
        """
        key = self._key(path, max_edge, max_bytes, fmt)
        if key is not None:
            found = self._recall(key)
            if found is not None:
                return found
        preview = make_preview(path.read_bytes(), max_edge=max_edge, max_bytes=max_bytes, fmt=fmt)
        self.made += 1
        if key is not None:
            self._keep(key, preview)
        return preview

    def remembered(self, path: Path, *, max_edge: int, max_bytes: int, fmt: str) -> Preview | None:
        """The rendition if it is held in memory (a ``stat``, no read): cheap enough for
        the event loop, so listings of recent images need no worker thread."""
        key = self._key(path, max_edge, max_bytes, fmt)
        if key is None:
            return None
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
            return found

    def put(self, path: Path, preview: Preview, *, max_edge: int, max_bytes: int, fmt: str) -> None:
        """Keep a rendition made elsewhere (e.g. while the image was verified)."""
        key = self._key(path, max_edge, max_bytes, fmt)
        if key is not None:
            self._keep(key, preview)

    # -- memory, then disk ------------------------------------------------------------

    def _recall(self, key: str) -> Preview | None:
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
                return found
        for ext, mime in _MIME.items():
            file = self.directory / key[:2] / f"{key}.{ext}"
            try:
                data = file.read_bytes()
            except OSError:
                continue
            size = _dimensions(data)
            if size is None:
                continue  # torn or foreign: made again
            preview = Preview(data, mime, size[0], size[1])
            self._remember(key, preview)
            return preview
        return None

    def _keep(self, key: str, preview: Preview) -> None:
        self._remember(key, preview)
        ext = _EXT.get(preview.mime_type)
        if ext is None:
            return
        folder = self.directory / key[:2]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_bytes(preview.data)
            tmp.replace(folder / f"{key}.{ext}")
        except OSError as exc:  # a cache: the answer does not depend on it
            log.debug("thumbnail not kept", error=type(exc).__name__)
            return
        with self._lock:
            self._writes += 1
            prune = self._writes % 100 == 0
        if prune:
            self._prune()

    def _remember(self, key: str, preview: Preview) -> None:
        with self._lock:
            if key in self._memory:
                return
            self._memory[key] = preview
            self._held += len(preview.data)
            while self._held > self.memory_bytes and self._memory:
                _, dropped = self._memory.popitem(last=False)
                self._held -= len(dropped.data)

    def _prune(self) -> None:
        """Drop the oldest files beyond ``max_files``."""
        try:
            files = [f for f in self.directory.glob("*/*") if f.suffix[1:] in _MIME]
        except OSError:
            return
        if len(files) <= self.max_files:
            return

        def mtime(f: Path) -> float:
            try:
                return f.stat().st_mtime
            except OSError:
                return 0.0

        for stale in sorted(files, key=mtime)[: len(files) - self.max_files]:
            stale.unlink(missing_ok=True)


def _dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a WebP or JPEG header (no pixel decode)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=["WEBP", "JPEG"]) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
