"""Where generated images go: one output root, confined, atomic and no-clobber.

:class:`OutputStore` owns one directory (the *output root*, resolved once with
``realpath`` when the store is built). Every image is written inside it:

- **Names.** Without a filename an image gets
  ``<YYYY-MM-DD>/<HHMMSS>-<prompt slug>-<8 random hex>.<ext>`` (local date and time);
  a clash retries with new random hex, so concurrent calls never overwrite each other.
  A caller's filename may contain sub-folders; it is validated by :meth:`plan_path`:
  no ``..``, no absolute path outside the root, no symlink leading out, no control,
  bidi or zero-width characters, no Windows forms (drive letters, backslashes, UNC,
  ``:`` streams, reserved names such as ``CON``, trailing dot or space), components
  ≤ 255 bytes, paths ≤ 4096 bytes; the name is NFC-normalised. The extension must
  match the image's real format (``jpg`` = ``jpeg``) and is appended when missing.
- **Atomic, no-clobber publish.** The bytes go to a hidden temp file
  (``.atelier-tmp-…``) in the target directory, are ``fsync``-ed, and are published with
  ``os.link(tmp, final)`` — which fails if the name exists, so nothing is ever silently
  replaced — then the temp is unlinked and the directory ``fsync``-ed. Where hard links
  are unsupported (EPERM/ENOTSUP/EXDEV, e.g. FAT or some network filesystems) the name is
  reserved with ``O_CREAT|O_EXCL`` and the temp moved over it with ``os.replace`` (there
  the final name briefly exists as an empty file). ``overwrite=True`` uses temp +
  ``os.replace``, which replaces a symlink at the target instead of following it.
  A reader therefore sees either no file or the complete image, never a torn one.
- **TOCTOU.** On POSIX every directory below the root is walked with directory file
  descriptors opened ``O_NOFOLLOW`` and every file is created relative to them
  (``O_EXCL|O_NOFOLLOW``), so replacing a directory by a symlink between the check and
  the write cannot redirect the write outside the root: the swap is either not seen
  (the write lands in the directory already opened, which is inside the root) or
  refused (``ELOOP``). Symlinks *inside* the root that point elsewhere inside the root
  are followed after re-resolving them; symlinks out are refused. The root itself is
  trusted once resolved. On platforms without ``dir_fd`` support (Windows) the same
  checks run on paths, which narrows but does not close the race.
- **Sidecars.** ``<image>.json`` next to each image holds the metadata the router
  passes (prompt, model, parameters, seed, request id, usage, cost) plus the file's
  sha256, size, pixel size and creation time; keys that look like secrets are dropped.

Names are validated by :mod:`atelier_core.media.names`, bytes are published by
:mod:`atelier_core.media.publish`. All methods are blocking filesystem work; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import structlog

from atelier_core.identity import LOCAL_PRINCIPAL, current_principal
from atelier_core.media.images import sniff
from atelier_core.media.names import (
    TEMP_PREFIX,
    check_characters,
    check_component,
    extension_for,
    plan_path,
    refuse,
    slug,
)
from atelier_core.media.publish import TempWriter, publish, sync_dir, temp_name, temp_writer
from atelier_core.plugin.errors import InvalidParameterError, NotFoundError, OutputPathError, StorageError, shorten

__all__ = [
    "RESOURCE_PREFIX",
    "TEMP_PREFIX",
    "OutputStore",
    "SavedImage",
    "TempWriter",
    "check_component",
    "extension_for",
    "temp_name",
    "temp_writer",
    "written_by_atelier",
]

log = structlog.get_logger("atelier.storage")

RESOURCE_PREFIX = "atelier://images/"
_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|authorization|token|secret|password|passwd|credentials?|cookie)$", re.I)


def written_by_atelier(sidecar: Path) -> bool:
    """True when ``sidecar`` is a JSON file Atelier wrote (it names its image and its hash)."""
    try:
        if sidecar.lstat().st_size > 1_000_000 or not sidecar.is_file():
            return False
        record = json.loads(sidecar.read_bytes())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("file") == sidecar.name.removesuffix(".json")
        and isinstance(record.get("sha256"), str)
    )


@dataclass(frozen=True, slots=True)
class SavedImage:
    """An image published in the output root."""

    path: Path
    relative: str
    uri: str
    resource_uri: str
    sidecar: Path | None
    width: int
    height: int
    format: str
    bytes: int
    sha256: str

    @property
    def mime_type(self) -> str:
        return f"image/{self.format}"


def _clean_metadata(value: Any) -> Any:
    """Metadata minus anything keyed like a secret; non-JSON values as strings."""
    if isinstance(value, Mapping):
        return {str(k): _clean_metadata(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_clean_metadata(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "model_dump"):
        return _clean_metadata(value.model_dump(mode="json"))
    if hasattr(value, "get_secret_value"):
        return "[REDACTED]"
    return str(value)


def _image_size(data: bytes, fmt: str) -> tuple[int, int]:
    from PIL import Image

    names = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
    with Image.open(io.BytesIO(data), formats=[names[fmt]]) as image:
        return image.size


PRINCIPALS_DIR = "principals"


def principal_folder(principal: str) -> str | None:
    """The folder (below ``principals/``) of a principal's images; ``None`` for the local one.

    Readable and collision-free: a slug of the name plus a hash of the whole name (names
    such as OAuth subjects may hold ``/`` or ``|``)."""
    if principal == LOCAL_PRINCIPAL:
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", principal).strip("._-")[:48] or "p"
    return f"{slug}-{hashlib.sha256(principal.encode()).hexdigest()[:10]}"


class OutputStore:
    """The output root and the only way images are written into it.

    Each principal has its own root: the local principal (stdio, the machine's user) the
    configured folder itself, every other principal (an HTTP caller) the folder
    ``principals/<name>-<hash>/`` below it, created on first use. ``root`` is the current
    principal's (read from :func:`~atelier_core.identity.current_principal`), so names,
    resource URIs and input paths of one principal never reach another's files.
    """

    def __init__(self, root: Path | str, *, file_mode: int = 0o644, dir_mode: int = 0o755) -> None:
        path = Path(os.path.expanduser(os.fspath(root)))
        try:
            path.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise StorageError(
                f"the output folder {path} cannot be created: {name} ({os.strerror(exc.errno or 0)})",
                code="write_failed",
                fix="set storage.output_dir (ATELIER_STORAGE__OUTPUT_DIR) to a writable folder",
            ) from None
        self.base = Path(os.path.realpath(path))
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self._made: set[str] = set()

    @property
    def root(self) -> Path:
        """The output root of the principal the running call acts for."""
        folder = principal_folder(current_principal())
        if folder is None:
            return self.base
        path = self.base / PRINCIPALS_DIR / folder
        if folder not in self._made:
            path.mkdir(parents=True, exist_ok=True, mode=self.dir_mode)
            self._made.add(folder)
        return path

    def key_of(self, relative: str) -> str:
        """The path of ``relative`` (to the current principal's root) from the base folder:
        the object key of the image in a bucket."""
        prefix = self.root.relative_to(self.base).as_posix()
        return relative if prefix == "." else f"{prefix}/{relative}"

    # -- naming and confinement ----------------------------------------------------

    def plan_path(self, filename: str, fmt: str, *, parameter: str = "filename") -> list[str]:
        """A caller's file name for an image of format ``fmt`` as path components under the
        root (see :func:`atelier_core.media.names.plan_path`)."""
        return plan_path(self.root, filename, fmt, parameter=parameter)

    def auto_parts(self, fmt: str, metadata: Mapping[str, Any] | None) -> list[str]:
        """A fresh server-chosen name: ``[<date>, <time>-<slug>-<hex>.<ext>]``."""
        now = _dt.datetime.now()
        prompt = (metadata or {}).get("prompt")
        name = f"{now:%H%M%S}-{slug(prompt)}-{secrets.token_hex(4)}.{extension_for(fmt)}"
        return [f"{now:%Y-%m-%d}", name]

    def relative_uri(self, relative: str) -> str:
        return RESOURCE_PREFIX + quote(relative, safe="/")

    # -- resolving resources -------------------------------------------------------

    def resolve_resource(self, uri_or_relative: str, *, parameter: str = "uri") -> Path:
        """The file behind ``atelier://images/<relative path>`` (or a bare relative
        path), strictly inside the root and a regular file. Raises NotFoundError
        (``image_not_found``) or InvalidParameterError (``invalid_resource_uri``)."""
        value = uri_or_relative
        if not isinstance(value, str) or not value:
            raise InvalidParameterError(
                parameter,
                value,
                "is not an image resource URI",
                code="invalid_resource_uri",
                fix=f"pass a URI like {RESOURCE_PREFIX}2026-01-31/120000-cat-1a2b3c4d.png",
            )
        text = value
        if text.startswith(RESOURCE_PREFIX):
            text = unquote(text[len(RESOURCE_PREFIX) :])
        elif "://" in text:
            raise InvalidParameterError(
                parameter,
                value,
                f"is not a URI of the form {RESOURCE_PREFIX}<path>",
                code="invalid_resource_uri",
                fix="use a resource URI returned by this server",
            )
        try:
            check_characters(text, value, parameter=parameter)
            parts = [p for p in text.split("/") if p not in ("", ".")]
            if text.startswith("/") or not parts:
                raise refuse("it must be a path relative to the output root", value, parameter=parameter)
            for part in parts:
                check_component(part, value, parameter=parameter)
        except OutputPathError as exc:
            raise InvalidParameterError(
                parameter,
                value,
                f"is not a valid image resource ({exc.message})",
                code="invalid_resource_uri",
                fix="use a resource URI returned by this server",
            ) from None
        candidate = os.path.realpath(os.path.join(self.root, *parts))
        not_found = NotFoundError(
            f"{parameter}={shorten(value)}: no such image in the output root",
            code="image_not_found",
            parameter=parameter,
            value=value,
            fix="use a resource URI or path returned by a previous call",
        )
        if not Path(candidate).is_relative_to(self.root):
            raise not_found
        try:
            st = os.stat(candidate)
        except OSError:
            raise not_found from None
        if not stat.S_ISREG(st.st_mode):
            raise not_found
        return Path(candidate)

    # -- writing -------------------------------------------------------------------

    def save(
        self,
        data: bytes,
        fmt: str,
        *,
        filename: str | None = None,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
        width: int | None = None,
        height: int | None = None,
        sidecar: bool = True,
        parameter: str = "filename",
        planned: Sequence[str] | None = None,
        tag: str | None = None,
    ) -> SavedImage:
        """Publish one image atomically; see the module docstring for the guarantees.

        ``fmt`` is the expected format; the bytes' sniffed format wins if they differ
        (never PNG bytes in a ``.jpg``). Pass ``width``/``height`` when already known
        (e.g. from :func:`~atelier_core.media.images.decode_image`): ``fmt`` is then taken as
        the decoded format and nothing is sniffed or read again. ``planned``: the path
        components already planned for ``filename`` (:mod:`atelier_core.media.outputs`).
        ``tag`` (a job id) goes into the temp files' names, so that start-up can attach an
        image a crash left published but unrecorded to its job.
        A sidecar never replaces a file Atelier did not write: when one is in the way the
        image is saved without it (``SavedImage.sidecar`` is None).
        Raises OutputPathError (refused name, ``file_exists``) or StorageError
        (``write_failed``, naming the errno and the directory).
        """
        if width is None or height is None:
            actual = sniff(data) or fmt
            width, height = _image_size(data, actual)
        else:
            actual = fmt
        digest = hashlib.sha256(data).hexdigest()
        auto = filename is None
        parts: list[str] = []
        for attempt in range(8):
            if auto:
                parts = self.auto_parts(actual, metadata)
            elif planned is not None:
                parts = list(planned)
            else:
                parts = self.plan_path(filename or "", actual, parameter=parameter)
            try:
                # With a sidecar, one directory fsync after it covers both names.
                publish(
                    self,
                    parts,
                    data,
                    overwrite=overwrite and not auto,
                    value=filename,
                    parameter=parameter,
                    sync_dir=not sidecar,
                    tag=tag,
                )
            except FileExistsError:
                if auto and attempt < 7:
                    continue
                raise OutputPathError(
                    f"{parameter}={shorten(filename)}: a file named {'/'.join(parts)} already exists "
                    "in the output root",
                    code="file_exists",
                    parameter=parameter,
                    value=filename,
                    fix="pass overwrite=true or another filename",
                ) from None
            break
        relative = "/".join(parts)
        path = self.root.joinpath(*parts)
        sidecar_path: Path | None = None
        if sidecar:
            record = {
                "file": parts[-1],
                "relative": relative,
                "format": actual,
                "width": width,
                "height": height,
                "bytes": len(data),
                "sha256": digest,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                **_clean_metadata(dict(metadata or {})),
            }
            body = json.dumps(record, ensure_ascii=False, indent=2, default=str).encode() + b"\n"
            side_parts = [*parts[:-1], parts[-1] + ".json"]
            try:
                try:
                    publish(self, side_parts, body, overwrite=False, value=filename, parameter=parameter)
                except FileExistsError:
                    if not written_by_atelier(self.root.joinpath(*side_parts)):
                        raise refuse(
                            f"{'/'.join(side_parts)} exists and was not written by Atelier",
                            filename,
                            code="file_exists",
                            parameter=parameter,
                        ) from None
                    publish(self, side_parts, body, overwrite=True, value=filename, parameter=parameter)
                sidecar_path = self.root.joinpath(*side_parts)
            except (StorageError, OutputPathError) as exc:
                # The image itself is published and complete; a missing sidecar must not
                # turn a paid-for image into an error. Report it in the log instead.
                log.warning("sidecar_not_written", relative=relative, code=exc.code, error=exc.message)
                try:
                    sync_dir(self, parts[:-1], filename, parameter)  # the image's name, then
                except StorageError as synced:
                    log.warning("directory_not_synced", relative=relative, error=synced.message)
        log.info("image_saved", relative=relative, bytes=len(data), format=actual)
        return SavedImage(
            path=path,
            relative=relative,
            uri=path.as_uri(),
            resource_uri=self.relative_uri(relative),
            sidecar=sidecar_path,
            width=width,
            height=height,
            format=actual,
            bytes=len(data),
            sha256=digest,
        )

    def write_sidecar(self, relative: str, record: Mapping[str, Any]) -> Path:
        """Publish the sidecar of the image at ``relative`` (atomically; an existing
        file is never replaced). Raises FileExistsError when one is there."""
        parts = [p for p in relative.split("/") if p]
        body = (
            json.dumps(
                {"file": parts[-1], "relative": relative, **record}, ensure_ascii=False, indent=2, default=str
            ).encode()
            + b"\n"
        )
        side_parts = [*parts[:-1], parts[-1] + ".json"]
        publish(self, side_parts, body, overwrite=False, value=relative, parameter="relative")
        return self.root.joinpath(*side_parts)

    # -- housekeeping --------------------------------------------------------------

    def sweep_temp(self, older_than_s: float = 3600.0) -> int:
        """Remove temp files left by a crash (older than ``older_than_s``); returns the
        number removed. Call at startup."""
        cutoff = time.time() - older_than_s
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(self.root, followlinks=False):
            for name in filenames:
                if not name.startswith(TEMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        os.unlink(full)
                        removed += 1
                except OSError:
                    continue
        if removed:
            log.info("temp_files_swept", removed=removed)
        return removed
