"""Publishing bytes under the output root: atomic, no-clobber, never through a symlink out.

The bytes go to a hidden temp file in the target directory, are ``fsync``-ed and published
with ``os.link`` (fails if the name exists) or, for ``overwrite``, ``os.replace``; then the
directory is ``fsync``-ed. Directories below the root are walked with descriptors opened
``O_NOFOLLOW`` (see :mod:`atelier_core.media.storage` for the guarantees).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atelier_core.media.names import TEMP_PREFIX, refuse
from atelier_core.plugin.errors import OutputPathError, StorageError

if TYPE_CHECKING:
    from atelier_core.media.storage import OutputStore

__all__ = [
    "TempWriter",
    "fsync_dir",
    "open_dir",
    "publish",
    "storage_error",
    "sync_dir",
    "temp_name",
    "temp_writer",
]

_HAS_DIR_FD = os.open in os.supports_dir_fd and os.link in os.supports_dir_fd
_LINK_UNSUPPORTED = {errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EOPNOTSUPP, errno.EMLINK}


def _host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_name(tag: str | None = None) -> str:
    """A temp file name that says who writes it: ``.atelier-tmp-<host>.<pid>.<tag>.<random>``
    (``tag``: the job the image belongs to, or ``-``). After a crash, start-up tells a dead
    writer's leftovers from a live one's by it (see ``engine/reconcile.py``)."""
    safe = tag if tag and all(c.isalnum() or c in "_-" for c in tag) else "-"
    return f"{TEMP_PREFIX}{_host_id()}.{os.getpid()}.{safe}.{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class TempWriter:
    """Who wrote a temp file, from its name (:func:`temp_name`)."""

    host: str
    pid: int
    tag: str | None

    @property
    def here(self) -> bool:
        return self.host == _host_id()


def temp_writer(name: str) -> TempWriter | None:
    """The writer a temp file name records, or ``None`` (not a temp name, or an older form)."""
    if not name.startswith(TEMP_PREFIX):
        return None
    fields = name[len(TEMP_PREFIX) :].split(".")
    if len(fields) != 4 or not fields[1].isdigit():
        return None
    return TempWriter(host=fields[0], pid=int(fields[1]), tag=None if fields[2] == "-" else fields[2])


def fsync_dir(dfd: int) -> None:
    try:
        os.fsync(dfd)
    except OSError as exc:  # durability only; some filesystems refuse dir fsync
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise


def storage_error(store: OutputStore, exc: OSError, directory: str) -> StorageError:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    where = f"{store.root}/{directory}".rstrip("/")
    hint = {
        "ENOSPC": "free disk space",
        "EDQUOT": "free space within your disk quota",
        "EACCES": "make the directory writable for the server's user",
        "EROFS": "point storage.output_dir at a writable filesystem",
    }.get(name, "check the output directory")
    return StorageError(
        f"could not write the image into {where}: {name} ({os.strerror(exc.errno or 0)})",
        code="write_failed",
        fix=f"{hint}, or set storage.output_dir (ATELIER_STORAGE__OUTPUT_DIR) elsewhere",
    )


@contextmanager
def open_dir(store: OutputStore, dirs: list[str], value: Any, parameter: str) -> Iterator[int | None]:
    """A descriptor for root/<dirs>, created as needed, never leaving the root.

    Yields ``None`` where ``dir_fd`` is unsupported (callers then use full paths).
    """
    if not _HAS_DIR_FD:
        target = Path(os.path.realpath(store.root.joinpath(*dirs)))
        if not target.is_relative_to(store.root):
            raise refuse(
                "a folder on the way is a link leading outside the output root",
                value,
                code="output_path_outside_root",
                parameter=parameter,
            )
        target.mkdir(parents=True, exist_ok=True, mode=store.dir_mode)
        yield None
        return
    for _ in range(3):
        fd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in dirs:
                try:
                    os.mkdir(part, store.dir_mode, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise SymlinkOnTheWay from None
                    raise
                os.close(fd)
                fd = child
        except SymlinkOnTheWay:
            os.close(fd)
            # A symlinked folder: allowed only if it resolves inside the root; then
            # walk the resolved (symlink-free) components instead.
            resolved = Path(os.path.realpath(store.root.joinpath(*dirs)))
            if not resolved.is_relative_to(store.root):
                raise refuse(
                    "a folder on the way is a link leading outside the output root",
                    value,
                    code="output_path_outside_root",
                    parameter=parameter,
                ) from None
            if not resolved.is_dir() and resolved.exists():
                raise refuse("a folder on the way is a file", value, parameter=parameter) from None
            dirs = list(resolved.relative_to(store.root).parts)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            yield fd
        finally:
            os.close(fd)
        return
    raise refuse("the folders changed while being checked", value, code="output_path_outside_root", parameter=parameter)


def publish(
    store: OutputStore,
    parts: list[str],
    data: bytes,
    *,
    overwrite: bool,
    value: Any,
    parameter: str,
    sync_dir: bool = True,
    tag: str | None = None,
) -> None:
    dirs, final = parts[:-1], parts[-1]
    directory = "/".join(dirs)
    try:
        with open_dir(store, dirs, value, parameter) as dfd:
            publish_in(
                store,
                dfd,
                dirs,
                final,
                data,
                overwrite=overwrite,
                value=value,
                parameter=parameter,
                sync_dir=sync_dir,
                tag=tag,
            )
    except (OutputPathError, FileExistsError):
        raise
    except IsADirectoryError:
        raise refuse(f"{'/'.join(parts)} is a folder", value, parameter=parameter) from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise refuse("a folder on the way is a file", value, parameter=parameter) from None
        raise storage_error(store, exc, directory) from None


def sync_dir(store: OutputStore, dirs: list[str], value: Any, parameter: str) -> None:
    """fsync a directory of the output root (durability of the names published in it)."""
    try:
        with open_dir(store, dirs, value, parameter) as dfd:
            if dfd is not None:
                fsync_dir(dfd)
    except OSError as exc:
        raise storage_error(store, exc, "/".join(dirs)) from None


def publish_in(
    store: OutputStore,
    dfd: int | None,
    dirs: list[str],
    final: str,
    data: bytes,
    *,
    overwrite: bool,
    value: Any,
    parameter: str,
    sync_dir: bool = True,
    tag: str | None = None,
) -> None:
    def at(name: str) -> str:
        return name if dfd is not None else os.path.join(store.root, *dirs, name)

    tmp = temp_name(tag)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(at(tmp), flags, store.file_mode, dir_fd=dfd)
    published = False
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(at(tmp), at(final), src_dir_fd=dfd, dst_dir_fd=dfd)
            published = True
        else:
            try:
                os.link(at(tmp), at(final), src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                published = True
            except OSError as exc:
                if exc.errno not in _LINK_UNSUPPORTED or isinstance(exc, FileExistsError):
                    raise
                # No hard links here: reserve the name exclusively, then move over it.
                reserve = os.open(at(final), flags, store.file_mode, dir_fd=dfd)
                os.close(reserve)
                try:
                    os.replace(at(tmp), at(final), src_dir_fd=dfd, dst_dir_fd=dfd)
                except BaseException:
                    os.unlink(at(final), dir_fd=dfd)
                    raise
                published = True
            if published:
                try:
                    os.unlink(at(tmp), dir_fd=dfd)
                except FileNotFoundError:
                    pass
        if dfd is not None and sync_dir:
            fsync_dir(dfd)
    finally:
        if not published or not overwrite:
            try:
                os.unlink(at(tmp), dir_fd=dfd)
            except FileNotFoundError:
                pass


class SymlinkOnTheWay(Exception):
    pass
