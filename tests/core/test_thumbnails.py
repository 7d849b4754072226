"""Thumbnails of saved images are made once, kept in memory and on disk, and re-made
when the file changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atelier_core.media.images import make_preview
from atelier_core.media.thumbnails import Thumbnails
from atelier_core.testing import make_image

PARAMS = {"max_edge": 64, "max_bytes": 30_000, "fmt": "webp"}


def _image(path: Path, size: int = 200, fmt: str = "png") -> Path:
    path.write_bytes(make_image(size, size, fmt))
    return path


def test_made_once_then_kept_in_memory_and_on_disk(tmp_path: Path) -> None:
    source = _image(tmp_path / "a.png")
    thumbs = Thumbnails(tmp_path / "thumbs")
    first = thumbs.get(source, **PARAMS)
    assert (first.width, first.height) == (64, 64) and first.mime_type == "image/webp"
    assert thumbs.get(source, **PARAMS) is first and thumbs.made == 1
    # A new process (a restarted server) finds it on disk, not by decoding the image.
    again = Thumbnails(tmp_path / "thumbs")
    kept = again.get(source, **PARAMS)
    assert again.made == 0 and kept.data == first.data and (kept.width, kept.height) == (64, 64)
    # Other parameters are another rendition.
    assert again.get(source, max_edge=32, max_bytes=30_000, fmt="jpeg").width == 32 and again.made == 1


def test_a_file_replaced_in_place_gets_a_new_thumbnail(tmp_path: Path) -> None:
    source = _image(tmp_path / "a.png", 200)
    thumbs = Thumbnails(tmp_path / "thumbs")
    assert thumbs.get(source, **PARAMS).width == 64
    _image(source, 100, "png")
    os.utime(source, ns=(1, 1))  # a different modification time, whatever the clock
    thumbs.get(source, **PARAMS)
    assert thumbs.made == 2


def test_a_rendition_made_elsewhere_is_kept_as_is(tmp_path: Path) -> None:
    source = _image(tmp_path / "a.png")
    thumbs = Thumbnails(tmp_path / "thumbs")
    made = make_preview(source.read_bytes(), **PARAMS)
    thumbs.put(source, made, **PARAMS)
    assert Thumbnails(tmp_path / "thumbs").get(source, **PARAMS).data == made.data
    assert thumbs.get(source, **PARAMS) is made and thumbs.made == 0


def test_a_torn_cache_file_is_made_again(tmp_path: Path) -> None:
    sources = [_image(tmp_path / f"{i}.png") for i in range(3)]
    thumbs = Thumbnails(tmp_path / "thumbs", memory_bytes=1)
    for source in sources:
        thumbs.get(source, **PARAMS)
    for file in (tmp_path / "thumbs").glob("*/*.webp"):
        file.write_bytes(b"RIFF")
    fresh = Thumbnails(tmp_path / "thumbs")
    assert fresh.get(sources[0], **PARAMS).width == 64 and fresh.made == 1


def test_a_missing_file_is_an_error_not_a_stale_thumbnail(tmp_path: Path) -> None:
    thumbs = Thumbnails(tmp_path / "thumbs")
    with pytest.raises(OSError):
        thumbs.get(tmp_path / "gone.png", **PARAMS)


def test_remembered_answers_from_memory_only(tmp_path: Path) -> None:
    source = _image(tmp_path / "a.png")
    thumbs = Thumbnails(tmp_path / "thumbs")
    assert thumbs.remembered(source, **PARAMS) is None  # never made: no read, no decode
    made = thumbs.get(source, **PARAMS)
    assert thumbs.remembered(source, **PARAMS) is made
    assert Thumbnails(tmp_path / "thumbs").remembered(source, **PARAMS) is None  # on disk only
