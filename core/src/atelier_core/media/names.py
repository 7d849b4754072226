"""File names in the output root: what a caller's ``filename`` may be, and how it is read.

:func:`plan_path` validates a caller's name for an image of a given format and returns its
path components relative to the output root: no ``..``, no absolute path outside the root,
no control, bidi or zero-width characters, no Windows forms (drive letters, backslashes,
UNC, ``:`` streams, reserved names such as ``CON``, trailing dot or space), components of
at most 255 bytes, paths of at most 4096 bytes; the name is NFC-normalised and the
extension must match the image's format (``jpg`` = ``jpeg``; appended when missing).
Pure: it touches the filesystem only to resolve an absolute path's existing parent.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from atelier_core.plugin.errors import OutputPathError, shorten

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "TEMP_PREFIX",
    "check_characters",
    "check_component",
    "extension_for",
    "plan_path",
    "refuse",
    "slug",
]

#: Names starting with this are Atelier's temp files (never a caller's name).
TEMP_PREFIX = ".atelier-tmp-"
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096

_EXTENSIONS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp", "gif": "gif"}
_CANONICAL_EXT = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif"}
_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
    *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10)),
    "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³",
}  # fmt: skip
# Bidi controls and invisible characters that make a name display as something else.
_INVISIBLE = set("\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u061c\u180e")
_INVISIBLE |= {chr(c) for c in range(0x202A, 0x202F)} | {chr(c) for c in range(0x2066, 0x206A)}
_FILENAME_FIX = "pass a relative file name such as 'cats/tabby.png' (sub-folders allowed), or omit it"


def extension_for(fmt: str) -> str:
    """The file extension used for a format (``jpeg`` → ``jpg``)."""
    return _CANONICAL_EXT.get(fmt, fmt)


def refuse(
    problem: str,
    value: Any,
    *,
    code: str = "invalid_output_path",
    fix: str = _FILENAME_FIX,
    parameter: str = "filename",
) -> OutputPathError:
    return OutputPathError(
        f"{parameter}={shorten(value)} is refused: {problem}",
        code=code,
        parameter=parameter,
        value=value,
        fix=fix,
    )


def check_component(part: str, value: Any, *, parameter: str = "filename") -> None:
    """Refuse one path component that is unsafe or non-portable (Windows forms too)."""
    if part in ("", ".", ".."):
        raise refuse(
            "'..' and empty segments are not allowed", value, code="output_path_outside_root", parameter=parameter
        )
    if part.startswith(TEMP_PREFIX):
        raise refuse(f"names starting with {TEMP_PREFIX!r} are reserved", value, parameter=parameter)
    if part.endswith((".", " ")):
        raise refuse("a name may not end with a dot or a space", value, parameter=parameter)
    if part != part.strip():
        raise refuse("a name may not start with whitespace", value, parameter=parameter)
    stem = part.split(".", 1)[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        raise refuse(f"{stem} is a reserved device name on Windows", value, parameter=parameter)
    if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise refuse(
            f"a path segment is longer than {MAX_COMPONENT_BYTES} bytes",
            value,
            code="name_too_long",
            fix="use a shorter file name",
            parameter=parameter,
        )


def check_characters(text: str, value: Any, *, parameter: str = "filename") -> None:
    for char in text:
        if char in _INVISIBLE:
            raise refuse(f"it contains the invisible/bidi character U+{ord(char):04X}", value, parameter=parameter)
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise refuse(f"it contains the control character U+{ord(char):04X}", value, parameter=parameter)
    if "\\" in text:
        raise refuse("backslashes are not allowed (use '/' between folders)", value, parameter=parameter)
    if ":" in text:
        raise refuse("':' is not allowed (drive letters and alternate data streams)", value, parameter=parameter)


def slug(prompt: Any, limit: int = 40) -> str:
    text = unicodedata.normalize("NFKD", str(prompt or ""))
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    text = text[:limit].rstrip("-")
    return text or "image"


def plan_path(root: Path, filename: str, fmt: str, *, parameter: str = "filename") -> list[str]:
    """Validate a caller's file name for an image of format ``fmt``; return its path
    components relative to the root (extension appended when missing). Pure: touches
    the filesystem only to resolve an absolute path's existing parent."""
    value = filename
    if not isinstance(filename, str) or not filename.strip():
        raise refuse("it is empty", value, parameter=parameter)
    check_characters(filename, value, parameter=parameter)
    name = unicodedata.normalize("NFC", filename)
    if name.startswith("~"):
        name = os.path.expanduser(name)
    if os.path.isabs(name):
        parts = _relative_from_absolute(root, name, value, parameter)
    else:
        parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise refuse("it names no file", value, parameter=parameter)
    for part in parts:
        check_component(part, value, parameter=parameter)
    parts[-1] = _with_extension(parts[-1], fmt, value, parameter)
    total = len(os.fsencode(root)) + sum(len(p.encode()) + 1 for p in parts)
    if total > MAX_PATH_BYTES:
        raise refuse(
            f"the full path would exceed {MAX_PATH_BYTES} bytes",
            value,
            code="name_too_long",
            fix="use a shorter path",
            parameter=parameter,
        )
    return parts


def _relative_from_absolute(root: Path, name: str, value: Any, parameter: str) -> list[str]:
    raw = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in raw:
        raise refuse("'..' segments are not allowed", value, code="output_path_outside_root", parameter=parameter)
    if not raw:
        raise refuse("it names no file", value, parameter=parameter)
    # Resolve the parent (the existing part through any symlinks, e.g. a symlinked
    # root); the final name itself is never resolved, so a symlink there is not followed.
    parent = Path(os.path.realpath("/" + "/".join(raw[:-1])))
    try:
        rel = parent.relative_to(root)  # component-wise: root-evil is not under root
    except ValueError:
        raise refuse(
            "absolute paths must lie inside the output root",
            value,
            code="output_path_outside_root",
            fix=f"use a path relative to the output root; {_FILENAME_FIX}",
            parameter=parameter,
        ) from None
    return [*rel.parts, raw[-1]]


def _with_extension(last: str, fmt: str, value: Any, parameter: str) -> str:
    stem, dot, ext = last.rpartition(".")
    wanted = extension_for(fmt)
    if not dot or not stem:
        return f"{last}.{wanted}"
    actual = _EXTENSIONS.get(ext.lower())
    if actual == fmt:
        return last
    if actual is None and not re.fullmatch(r"[A-Za-z0-9]{1,5}", ext):
        return f"{last}.{wanted}"  # "v1.2-final" has no extension to speak of
    raise OutputPathError(
        f"{parameter}={shorten(value)} has the extension .{ext} but the image is {fmt.upper()}",
        code="extension_mismatch",
        parameter=parameter,
        value=value,
        allowed=[f".{e}" for e, f in _EXTENSIONS.items() if f == fmt],
        fix=f"name it {stem}.{wanted}, leave the extension off, or request output_format={ext.lower()}"
        if ext.lower() in _EXTENSIONS
        else f"name it {stem}.{wanted} or leave the extension off",
    )
