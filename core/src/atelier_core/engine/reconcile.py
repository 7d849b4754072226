"""Start-up: reconcile the output folder with the job state after a crash.

A server killed while publishing an image can leave, depending on the instant:

1. a temp file (``.atelier-tmp-…``), partly or fully written, never linked: the image was
   not published. It is removed as soon as its writer is known to be gone — its name
   records the host and pid that wrote it (:func:`~atelier_core.media.storage.temp_name`)
   — or once it is an hour old (older names, other hosts sharing the folder);
2. the image published under its final name, its temp name still linked to the same
   file, no sidecar, and the job not told: the temp name also records the job, so the
   image is **attached to its job** (``files`` and ``error.saved``), the extra name
   removed, and the sidecar rebuilt;
3. the image and its sidecar published, the job not told: the sidecar names the job, so
   the image is attached (interrupted jobs' date folders are searched);
4. the image recorded on its job but without a sidecar (a sidecar write that failed, or
   a crash between the two): the **sidecar is rebuilt from the job record** (prompt,
   model, parameters, job), marked as rebuilt; it is never written over an existing file.

Nothing here deletes an image. It runs once, after interrupted jobs were recovered, in
worker threads, while the server already answers (:func:`reconcile`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog

from atelier_core.media.images import sniff
from atelier_core.media.storage import TEMP_PREFIX, OutputStore, temp_writer, written_by_atelier
from atelier_core.state.jobs import Job, JobStore

__all__ = ["Reconciled", "reconcile", "sweep_leftovers"]

log = structlog.get_logger("atelier.reconcile")

OLD_TEMP_S = 3600.0
_MAX_SIDECAR_BYTES = 1_000_000


@dataclass(slots=True)
class Reconciled:
    """What start-up found and did."""

    temps_removed: int = 0
    attached: dict[str, list[str]] = field(default_factory=dict)
    sidecars_rebuilt: list[str] = field(default_factory=list)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_gone(name: str, mtime: float, now: float) -> bool:
    writer = temp_writer(name)
    if writer is not None and writer.here and writer.pid != os.getpid() and not _pid_alive(writer.pid):
        return True
    return mtime < now - OLD_TEMP_S


def sweep_leftovers(root: Path) -> tuple[int, list[tuple[str, str]]]:
    """Remove the temp files of writers that are gone (blocking). Returns how many were
    removed, and ``(job id, published path)`` for each temp whose image had already been
    linked under its final name (case 2 of the module docstring)."""
    now = time.time()
    removed = 0
    linked: list[tuple[str, str]] = []
    for dirpath, _dirs, names in os.walk(root, followlinks=False):
        temps = [n for n in names if n.startswith(TEMP_PREFIX)]
        if not temps:
            continue
        siblings: dict[int, str] | None = None
        for name in temps:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not _writer_gone(name, st.st_mtime, now):
                continue
            writer = temp_writer(name)
            if st.st_nlink >= 2 and writer is not None and writer.tag:
                if siblings is None:
                    siblings = {}
                    for other in names:
                        if other.startswith(TEMP_PREFIX):
                            continue
                        try:
                            siblings[os.lstat(os.path.join(dirpath, other)).st_ino] = other
                        except OSError:
                            continue
                published = siblings.get(st.st_ino)
                if published is not None:
                    linked.append((writer.tag, os.path.join(dirpath, published)))
            try:
                os.unlink(full)
                removed += 1
            except OSError:
                continue
    return removed, linked


def _local_dates(*stamps: float | None) -> set[str]:
    return {dt.datetime.fromtimestamp(s).strftime("%Y-%m-%d") for s in stamps if s}


def _sidecar_job(path: Path) -> str | None:
    try:
        if path.lstat().st_size > _MAX_SIDECAR_BYTES:
            return None
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    job = record.get("job") if isinstance(record, dict) else None
    return job if isinstance(job, str) else None


def _images_naming(root: Path, jobs: Iterable[Job]) -> list[tuple[str, str]]:
    """(job id, image path) for sidecars in interrupted jobs' date folders that name the
    job while the job does not list the image (case 3)."""
    found: list[tuple[str, str]] = []
    by_folder: dict[str, dict[str, Job]] = {}
    for job in jobs:
        for folder in _local_dates(job.created_at, job.updated_at):
            by_folder.setdefault(folder, {})[job.id] = job
    for folder, wanted in by_folder.items():
        directory = root / folder
        if not directory.is_dir():
            continue
        for sidecar in directory.glob("*.json"):
            job_id = _sidecar_job(sidecar)
            owner = wanted.get(job_id or "")
            image = sidecar.with_suffix("")
            if owner is not None and str(image) not in owner.files and image.is_file():
                found.append((owner.id, str(image)))
    return found


def _rebuilt_record(job: Job, image: Path) -> dict[str, Any] | None:
    from PIL import Image

    try:
        data = image.read_bytes()
        fmt = sniff(data)
        if fmt is None:
            return None
        with Image.open(image) as opened:
            width, height = opened.size
    except (OSError, ValueError):
        return None
    found_call = job.request.get("call")
    call: dict[str, Any] = found_call if isinstance(found_call, dict) else {}
    requested = {k: v for k, v in call.items() if k not in ("prompt", "images", "mask") and v is not None}
    return {
        "format": fmt,
        "width": width,
        "height": height,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "created": dt.datetime.fromtimestamp(image.stat().st_mtime, dt.UTC).isoformat(timespec="seconds"),
        "model": job.request.get("model") or call.get("model"),
        "operation": job.request.get("operation") or job.operation,
        "prompt": call.get("prompt"),
        "requested": requested,
        "job": job.id,
        "rebuilt": "from the job record at start-up, after a crash: applied values, seed and cost were not recorded",
    }


def _rebuild_sidecars(store: OutputStore, jobs: Iterable[Job]) -> list[str]:
    rebuilt: list[str] = []
    root = store.root
    for job in jobs:
        for name in job.files:
            image = Path(name)
            if name.endswith(".json") or not image.is_relative_to(root) or not image.is_file():
                continue
            sidecar = image.with_name(image.name + ".json")
            if sidecar.exists() or sidecar.is_symlink():
                continue
            record = _rebuilt_record(job, image)
            if record is None:
                continue
            try:
                store.write_sidecar(image.relative_to(root).as_posix(), record)
            except Exception as exc:  # one sidecar (taken name, read-only folder) never stops start-up
                log.warning("sidecar not rebuilt", path=str(image), error=type(exc).__name__)
                continue
            if written_by_atelier(sidecar):
                rebuilt.append(str(sidecar))
    return rebuilt


async def reconcile(store: OutputStore, records: JobStore, *, retention_s: float) -> Reconciled:
    """Reconcile the output folder with the job state (see the module docstring). Call
    once at start-up, after interrupted jobs were recovered."""
    done = Reconciled()
    removed, linked = await anyio.to_thread.run_sync(sweep_leftovers, store.root)
    done.temps_removed = removed
    since = time.time() - max(retention_s, 86_400.0)
    interrupted = await records.interrupted(since)
    from_sidecars = await anyio.to_thread.run_sync(_images_naming, store.root, interrupted)
    for job_id, path in [*linked, *from_sidecars]:
        done.attached.setdefault(job_id, []).append(path)
    for job_id, paths in done.attached.items():
        if await records.attach_saved(job_id, paths):
            log.warning("files found after a crash attached to their job", job_id=job_id, files=len(paths))
    done.sidecars_rebuilt = await anyio.to_thread.run_sync(_rebuild_sidecars, store, await records.with_files(since))
    if done.temps_removed or done.attached or done.sidecars_rebuilt:
        log.info(
            "output folder reconciled",
            temps_removed=done.temps_removed,
            jobs_attached=len(done.attached),
            sidecars_rebuilt=len(done.sidecars_rebuilt),
        )
    return done
