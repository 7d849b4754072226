"""Start-up reconciliation (``engine/reconcile.py``): which temp files are swept, and
which published images are traced back to their job. The end-to-end crash cases are in
tests/reliability/test_hostile_input.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from atelier_core.engine.reconcile import sweep_leftovers
from atelier_core.media.storage import TEMP_PREFIX, temp_name, temp_writer


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_names_record_their_writer() -> None:
    name = temp_name("job_AbC-1")
    writer = temp_writer(name)
    assert writer is not None and writer.here and writer.pid == os.getpid() and writer.tag == "job_AbC-1"
    assert temp_writer(temp_name(None)).tag is None  # type: ignore[union-attr]
    assert temp_writer(temp_name("../evil")).tag is None  # type: ignore[union-attr]
    assert temp_writer(f"{TEMP_PREFIX}0123abcd") is None  # the older form: no writer recorded
    assert temp_writer("photo.png") is None


def test_only_dead_or_old_writers_leftovers_are_swept_and_linked_images_traced(tmp_path: Path) -> None:
    day = tmp_path / "2026-01-01"
    day.mkdir()
    dead, host = _dead_pid(), temp_name().removeprefix(TEMP_PREFIX).split(".")[0]
    live_other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        files = {
            "dead": f"{TEMP_PREFIX}{host}.{dead}.-.aa",
            "dead-linked": f"{TEMP_PREFIX}{host}.{dead}.job_X1.bb",
            "live": f"{TEMP_PREFIX}{host}.{live_other.pid}.-.cc",
            "mine": temp_name(),
            "other-host": f"{TEMP_PREFIX}ffffffff.{dead}.-.dd",
            "old-form-young": f"{TEMP_PREFIX}0123abcd",
            "old-form-old": f"{TEMP_PREFIX}4567cdef",
        }
        for name in files.values():
            (day / name).write_bytes(b"x")
        os.link(day / files["dead-linked"], day / "120000-fox-1234abcd.png")  # published, then the crash
        aged = time.time() - 7200
        os.utime(day / files["old-form-old"], (aged, aged))

        removed, linked = sweep_leftovers(tmp_path)

        left = {p.name for p in day.iterdir()}
        assert removed == 3
        for gone in ("dead", "dead-linked", "old-form-old"):
            assert files[gone] not in left, gone
        for kept in ("live", "mine", "other-host", "old-form-young"):
            assert files[kept] in left, kept  # a live or unknown writer may still be writing
        assert "120000-fox-1234abcd.png" in left  # an image is never deleted
        assert linked == [("job_X1", str(day / "120000-fox-1234abcd.png"))]
    finally:
        live_other.kill()
        live_other.wait()
