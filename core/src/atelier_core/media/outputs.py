"""Output names planned before anything is sent: every file a call will write, checked
against the filesystem.

:func:`plan_outputs` turns a caller's ``filename`` into one :class:`OutputSlot` per image
(``cat.png``, ``cat-2.png``, …) and refuses, before the provider is called, every name
the save would refuse later: unsafe or too long names (the ``-N`` suffix and the
``.json`` sidecar included), a folder on the way that is a file, a symlink leading out of
the root, a folder where the file should go, and an existing file without
``overwrite``. It also decides each sidecar: a ``<image>.json`` that exists and was not
written by Atelier is left alone (the slot says so, and the call reports it).

The save still re-checks everything with directory descriptors (see
:mod:`atelier_core.media.storage`): the plan removes the refusals that would come after
the money is spent, the save keeps the guarantees against races.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from atelier_core.media.names import MAX_COMPONENT_BYTES, extension_for
from atelier_core.media.storage import OutputStore, written_by_atelier
from atelier_core.plugin.errors import OutputPathError, shorten

__all__ = ["SIDECAR_SUFFIX", "OutputSlot", "numbered", "plan_outputs", "written_by_atelier"]

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True, slots=True)
class OutputSlot:
    """Where image ``index`` of a call goes, decided before the call is sent."""

    index: int
    filename: str  # the caller's name for this image (numbered), as the save validates it
    parts: tuple[str, ...]  # path components under the output root, extension included
    sidecar: bool = True  # False: a file that is not ours has the sidecar's name
    note: str | None = None  # said in the result (e.g. why there is no sidecar)

    @property
    def relative(self) -> str:
        return "/".join(self.parts)

    def for_format(self, store: OutputStore, fmt: str) -> OutputSlot:
        """This slot for an image that arrived as ``fmt`` instead of the planned format:
        the same name with the right extension (never PNG bytes in a ``.jpg``)."""
        stem, dot, _ext = self.parts[-1].rpartition(".")
        name = f"{stem if dot else self.parts[-1]}.{extension_for(fmt)}"
        parts = (*self.parts[:-1], name)
        filename = "/".join(parts)
        return replace(
            self,
            parts=parts,
            filename=filename,
            sidecar=self.sidecar and _sidecar_free_or_ours(store.root.joinpath(*parts)),
        )


def numbered(filename: str, index: int) -> str:
    """``cat.png`` → ``cat.png``, ``cat-2.png``, ``cat-3.png`` for a multi-image call."""
    if index == 0:
        return filename
    path = Path(filename)
    return str(path.with_name(f"{path.stem}-{index + 1}{path.suffix}"))


def _sidecar_free_or_ours(image: Path) -> bool:
    side = image.with_name(image.name + SIDECAR_SUFFIX)
    try:
        side.lstat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return written_by_atelier(side)


def plan_outputs(store: OutputStore, filename: str, fmt: str, n: int, *, overwrite: bool) -> list[OutputSlot]:
    """One checked slot per image for a caller's ``filename``; raises
    :class:`OutputPathError` for the first name the save would refuse."""
    slots: list[OutputSlot] = []
    for index in range(n):
        name = numbered(filename, index)
        shown = filename if index == 0 else f"{shorten(filename)} (image {index + 1} is saved as {name})"
        try:
            parts = store.plan_path(name, fmt)
        except OutputPathError as exc:
            if index:
                exc.message = f"{exc.message}; image {index + 1} of {n} would be named {shorten(name)}"
                exc.args = (exc.message,)
            raise
        if len((parts[-1] + SIDECAR_SUFFIX).encode()) > MAX_COMPONENT_BYTES:
            limit = MAX_COMPONENT_BYTES - len(SIDECAR_SUFFIX)
            raise OutputPathError(
                f"filename={shown} is refused: {parts[-1]!r} is {len(parts[-1].encode())} bytes, and its "
                f"sidecar {parts[-1]}{SIDECAR_SUFFIX} would pass the {MAX_COMPONENT_BYTES}-byte limit of "
                "a file name",
                code="name_too_long",
                parameter="filename",
                value=filename,
                fix=f"use a file name of at most {limit} bytes" + (" including the -N suffix" if n > 1 else ""),
            )
        slots.append(_check_on_disk(store, OutputSlot(index, name, tuple(parts)), shown, overwrite))
    return slots


def _check_on_disk(store: OutputStore, slot: OutputSlot, shown: str, overwrite: bool) -> OutputSlot:
    def refuse(problem: str, code: str, fix: str) -> OutputPathError:
        return OutputPathError(
            f"filename={shown} is refused: {problem}", code=code, parameter="filename", value=slot.filename, fix=fix
        )

    here = store.root
    for depth, part in enumerate(slot.parts[:-1]):
        here = here / part
        try:
            info = here.lstat()
        except FileNotFoundError:
            return slot  # the rest is created by the save: nothing there can be in the way
        except OSError as exc:
            raise refuse(
                f"{'/'.join(slot.parts[: depth + 1])} cannot be read ({exc.strerror})",
                "invalid_output_path",
                "pass another filename",
            ) from None
        if stat.S_ISLNK(info.st_mode):
            resolved = Path(os.path.realpath(here))
            if not resolved.is_relative_to(store.root):
                raise refuse(
                    f"the folder {'/'.join(slot.parts[: depth + 1])} is a link leading outside the output root",
                    "output_path_outside_root",
                    "pass a path whose folders are inside the output root",
                )
            here = resolved
            if not resolved.exists():
                return slot
            if not resolved.is_dir():
                raise refuse(
                    f"{'/'.join(slot.parts[: depth + 1])} is a file, not a folder",
                    "invalid_output_path",
                    "pass another filename",
                )
        elif not stat.S_ISDIR(info.st_mode):
            raise refuse(
                f"{'/'.join(slot.parts[: depth + 1])} is a file, not a folder",
                "invalid_output_path",
                "pass another filename, or another folder",
            )
    target = here / slot.parts[-1]
    try:
        found: os.stat_result | None = target.lstat()
    except FileNotFoundError:
        found = None
    if found is not None:
        if stat.S_ISDIR(found.st_mode):
            raise refuse(f"{slot.relative} is a folder", "invalid_output_path", "pass another filename")
        if not overwrite:
            raise refuse(
                f"a file named {slot.relative} already exists in the output root",
                "file_exists",
                "pass overwrite=true or another filename",
            )
    if _sidecar_free_or_ours(target):
        return slot
    return replace(
        slot,
        sidecar=False,
        note=(
            f"{slot.relative}{SIDECAR_SUFFIX} exists and was not written by Atelier: it is left as it is, "
            f"so {slot.relative} has no sidecar"
        ),
    )
