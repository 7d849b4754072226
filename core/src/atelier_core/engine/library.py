"""The image library: what was made, found again, and pruned.

:class:`ImageLibrary` joins the output store (the files) and the image index (their
rows). The call path hands it every saved image (:meth:`record`), with where the call
came from: a session turn or a job set :func:`origin` around their call, and lineage
is found by content — an input image whose sha256 is an indexed image was *edited from*
it, whatever form (path, URI, base64) the caller used.

On first use the index is filled once from the JSON sidecars already on disk
(:meth:`backfill`), so images made before the index existed are findable too.

Retention (:meth:`prune`): optional limits on total bytes and age remove the oldest
images first (file, sidecar and row), never one that an open session or an unfinished
job still needs (the ``protected`` callable names those).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from atelier_core.identity import current_principal
from atelier_core.media.storage import TEMP_PREFIX, OutputStore, SavedImage
from atelier_core.plugin.errors import NotFoundError, shorten
from atelier_core.state.image_records import ImageEntry, ImageQuery, ImageRecords

__all__ = ["ImageLibrary", "ImageOrigin", "PrunePlan", "current_origin", "origin"]

log = structlog.get_logger("atelier.library")

_BACKFILL_KEY = "sidecars_backfilled"


@dataclass(frozen=True, slots=True)
class ImageOrigin:
    """Where a call came from: a session turn and/or a background job."""

    session_id: str | None = None
    turn: int | None = None
    job_id: str | None = None


_origin: ContextVar[ImageOrigin | None] = ContextVar("atelier_image_origin", default=None)


def current_origin() -> ImageOrigin:
    return _origin.get() or ImageOrigin()


@contextmanager
def origin(*, session_id: str | None = None, turn: int | None = None, job_id: str | None = None) -> Iterator[None]:
    """Tag the images saved inside this block (merged with an enclosing origin)."""
    outer = current_origin()
    token = _origin.set(
        ImageOrigin(
            session_id=session_id or outer.session_id,
            turn=turn if turn is not None else outer.turn,
            job_id=job_id or outer.job_id,
        )
    )
    try:
        yield
    finally:
        _origin.reset(token)


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """What a retention pass removes (or would remove, in a dry run) and what it keeps."""

    remove: list[ImageEntry]
    kept_protected: int
    total_bytes: int
    freed_bytes: int
    reasons: dict[str, str]


Listener = Callable[[], Awaitable[None]]


def _timestamp(text: Any, fallback: float) -> float:
    if isinstance(text, str):
        try:
            moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=_dt.UTC)
            return moment.timestamp()
        except ValueError:
            pass
    return fallback


def _cost_of(record: dict[str, Any]) -> float | None:
    cost = record.get("cost")
    if isinstance(cost, dict):
        for key in ("cost_usd", "estimate_usd"):
            value = cost.get(key)
            if isinstance(value, (int, float)):
                return float(value)
    return None


class ImageLibrary:
    """The index of every saved image, kept in step with the output store."""

    def __init__(self, store: OutputStore, index: ImageRecords) -> None:
        self.store = store
        self.index = index
        self._listeners: list[Listener] = []
        #: Relative paths that open sessions and unfinished jobs still need (set by the
        #: server, which owns sessions and jobs); never pruned.
        self.protected: Callable[[], Awaitable[set[str]]] | None = None
        #: Retention limits applied after new images are recorded (None: no limit).
        self.max_total_bytes: int | None = None
        self.max_age_days: float | None = None

    # -- change notifications --------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after images are added or removed; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def changed(self) -> None:
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception as exc:  # a gone client must not fail the call that saved images
                log.debug("library listener failed", error=type(exc).__name__)

    # -- recording -------------------------------------------------------------------

    async def entry_for(
        self,
        saved: SavedImage,
        metadata: dict[str, Any],
        *,
        cost_usd: float | None,
        inputs: Sequence[bytes] = (),
        embedded: bool = False,
    ) -> ImageEntry:
        """The row for a just-saved image (lineage: the first input, if it is one of ours)."""
        where = current_origin()
        principal = current_principal()
        edited_from = None
        for data in inputs[:1]:
            digest = (await asyncio.to_thread(hashlib.sha256, data)).hexdigest()
            parent = await self.index.by_sha256(digest, principal=principal)
            if parent is not None:
                edited_from = parent.relative
        return ImageEntry(
            relative=saved.relative,
            created_at=time.time(),
            width=saved.width,
            height=saved.height,
            format=saved.format,
            bytes=saved.bytes,
            sha256=saved.sha256,
            prompt=metadata.get("prompt"),
            model=metadata.get("model"),
            provider=metadata.get("provider"),
            operation=metadata.get("operation"),
            applied=dict(metadata.get("applied") or {}),
            seed=metadata.get("seed"),
            cost_usd=cost_usd,
            session_id=where.session_id,
            turn=where.turn,
            job_id=where.job_id,
            edited_from=edited_from,
            embedded=embedded,
            principal=principal,
        )

    async def record(self, entries: Sequence[ImageEntry]) -> None:
        """Index freshly saved images and tell listeners. Never fails the call: the files
        are saved and paid for; a missing row is logged and found again by backfill."""
        try:
            for entry in entries:
                await self.index.add(entry)
        except Exception as exc:
            log.warning("image index write failed", error=type(exc).__name__, images=len(entries))
            return
        await self.changed()
        if self.max_total_bytes is not None or self.max_age_days is not None:
            try:
                await self.enforce_retention(keep={entry.relative for entry in entries})
            except Exception as exc:  # retention is housekeeping: never fail the call for it
                log.warning("retention pass failed", error=type(exc).__name__)

    async def tag_turn(self, paths: Sequence[str], session_id: str, turn: int | None) -> None:
        """Mark the images at ``paths`` as made by ``session_id``'s ``turn`` (a turn run as
        a job learns its number only when it is recorded). Never fails the call."""
        try:
            relatives = [r for r in [await self.relative(p) for p in paths] if r]
            await self.index.tag_turn(relatives, session_id, turn)
        except Exception as exc:
            log.warning("image index turn tag failed", error=type(exc).__name__)

    # -- upgrade: index what is already on disk -------------------------------------

    async def backfill(self, *, force: bool = False) -> int:
        """Index every image with a sidecar not yet in the index (once per database
        unless ``force``); returns how many rows were added."""
        if not force and await self.index.get_meta(_BACKFILL_KEY):
            return 0
        entries = await asyncio.to_thread(self._scan_sidecars)
        added = await self.index.add_many(entries)
        await self.index.set_meta(_BACKFILL_KEY, _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        if added:
            log.info("image index filled from sidecars", added=added)
            await self.changed()
        return added

    def _scan_sidecars(self) -> list[ImageEntry]:
        root = self.store.root
        entries: list[ImageEntry] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            # Hidden folders, and other principals' folders below the local output root.
            dirnames[:] = [
                d for d in dirnames if not d.startswith(".") and not (dirpath == str(root) and d == "principals")
            ]
            for name in filenames:
                if not name.endswith(".json") or name.startswith(TEMP_PREFIX):
                    continue
                entry = self._from_sidecar(Path(dirpath) / name)
                if entry is not None:
                    entries.append(entry)
        return entries

    def _from_sidecar(self, sidecar: Path) -> ImageEntry | None:
        image = sidecar.with_name(sidecar.name[: -len(".json")])
        try:
            if image.is_symlink() or not image.is_file():
                return None
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            relative = image.relative_to(self.store.root).as_posix()
            stat = image.stat()
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or "sha256" not in record:
            return None
        fmt = str(record.get("format") or image.suffix.lstrip(".").lower().replace("jpg", "jpeg"))
        return ImageEntry(
            relative=relative,
            created_at=_timestamp(record.get("created_at") or record.get("created"), stat.st_mtime),
            width=int(record.get("width") or 0),
            height=int(record.get("height") or 0),
            format=fmt,
            bytes=stat.st_size,
            sha256=str(record["sha256"]),
            prompt=record.get("prompt"),
            model=record.get("model"),
            provider=record.get("provider"),
            operation=record.get("operation"),
            applied=applied if isinstance(applied := record.get("applied"), dict) else {},
            seed=record.get("seed") if isinstance(record.get("seed"), int) else None,
            cost_usd=_cost_of(record),
        )

    # -- reading -----------------------------------------------------------------------

    async def entry(self, uri: str, *, parameter: str = "uri") -> ImageEntry:
        """The indexed image behind ``atelier://images/<path>`` (confined to the root and
        to the images of the calling principal)."""
        path = await asyncio.to_thread(self.store.resolve_resource, uri, parameter=parameter)
        relative = path.relative_to(self.store.root).as_posix()
        found = await self.index.get(relative)
        if found is not None and found.principal != current_principal():
            found = None
        if found is None:
            raise NotFoundError(
                f"{parameter}={shorten(uri)}: the file exists but is not in the image index",
                code="image_not_indexed",
                parameter=parameter,
                value=uri,
                fix="use an image made by this server (find_images lists them)",
            )
        return found

    def uri(self, entry: ImageEntry) -> str:
        return self.store.relative_uri(entry.relative)

    async def search(self, query: ImageQuery) -> tuple[list[ImageEntry], str | None]:
        return await self.index.search(query)

    def describe(self, entry: ImageEntry) -> dict[str, Any]:
        """The metadata served beside each image (JSON-ready, no secrets)."""
        return {
            "uri": self.uri(entry),
            "path": str(self.store.root / entry.relative),
            "created": entry.created_iso,
            "prompt": entry.prompt,
            "model": entry.model,
            "provider": entry.provider,
            "operation": entry.operation,
            "applied": entry.applied,
            "seed": entry.seed,
            "cost_usd": entry.cost_usd,
            "width": entry.width,
            "height": entry.height,
            "format": entry.format,
            "bytes": entry.bytes,
            "sha256": entry.sha256,
            "session_id": entry.session_id,
            "turn": entry.turn,
            "job_id": entry.job_id,
            "edited_from": self.store.relative_uri(entry.edited_from) if entry.edited_from else None,
            "metadata_embedded": entry.embedded,
        }

    # -- retention ---------------------------------------------------------------------

    async def plan_prune(
        self, *, max_total_bytes: int | None, max_age_days: float | None, protected: set[str], now: float | None = None
    ) -> PrunePlan:
        """The oldest images past the age limit, then the oldest until the total fits.

        ``protected``: relative paths an open session or unfinished job needs; never removed.
        """
        now = time.time() if now is None else now
        entries = await self.index.oldest_first()
        total = sum(e.bytes for e in entries)
        remaining = total
        remove: list[ImageEntry] = []
        reasons: dict[str, str] = {}
        kept = 0
        cutoff = now - max_age_days * 86400 if max_age_days is not None else None
        for entry in entries:
            too_old = cutoff is not None and entry.created_at < cutoff
            too_big = max_total_bytes is not None and remaining > max_total_bytes
            if not (too_old or too_big):
                continue
            if entry.relative in protected:
                kept += 1
                continue
            remove.append(entry)
            reasons[entry.relative] = (
                f"older than {max_age_days:g} days" if too_old else f"total above {max_total_bytes:,} bytes"
            )
            remaining -= entry.bytes
        return PrunePlan(
            remove=remove, kept_protected=kept, total_bytes=total, freed_bytes=total - remaining, reasons=reasons
        )

    async def relative(self, reference: str) -> str | None:
        """The path inside the output root of a path or ``atelier://`` URI (None if outside)."""
        try:
            path = await asyncio.to_thread(self.store.resolve_resource, reference)
        except Exception:
            try:
                real = await asyncio.to_thread(os.path.realpath, reference)
                return Path(real).relative_to(self.store.root).as_posix()
            except (ValueError, OSError, TypeError):
                return None
        return path.relative_to(self.store.root).as_posix()

    async def enforce_retention(self, *, dry_run: bool = False, keep: set[str] | None = None) -> PrunePlan:
        """Plan (and unless ``dry_run`` apply) a pass with the configured limits; ``keep``:
        more relative paths to spare (the images a call has just returned)."""
        protected = await self.protected() if self.protected is not None else set()
        protected |= keep or set()
        plan = await self.plan_prune(
            max_total_bytes=self.max_total_bytes, max_age_days=self.max_age_days, protected=protected
        )
        if not dry_run and plan.remove:
            await self.apply_prune(plan)
        return plan

    async def apply_prune(self, plan: PrunePlan) -> int:
        """Delete the planned files (and sidecars) and their rows; returns files removed."""
        removed = await asyncio.to_thread(self._delete_files, plan)
        await self.index.remove(removed)
        if removed:
            log.info("images pruned", removed=len(removed), freed=plan.freed_bytes)
            await self.changed()
        return len(removed)

    def _delete_files(self, plan: PrunePlan) -> list[str]:
        removed: list[str] = []
        for entry in plan.remove:
            try:
                path = self.store.resolve_resource(entry.relative, parameter="relative")
            except Exception:  # already gone or no longer inside the root: drop the row only
                removed.append(entry.relative)
                continue
            for target in (path, path.with_name(path.name + ".json")):
                with suppress(FileNotFoundError):
                    target.unlink()
            removed.append(entry.relative)
        return removed


async def open_work_images(library: ImageLibrary, sessions: Any, jobs: Any) -> set[str]:
    """Relative paths of the images that open edit sessions (every turn: any may be
    branched from) and unfinished jobs (their saved files and input images) still need."""
    needed: set[str] = set()
    views = sessions.list(include_ended=False, limit=100_000) if sessions is not None else []
    if asyncio.iscoroutine(views):
        views = await views
    for view in views:
        for turn in view.turns:
            found = await library.relative(turn.resource_uri or turn.image_path)
            if found:
                needed.add(found)
    if jobs is not None:
        for job in await jobs.recent(limit=100_000, include_finished=False):
            call = (job.request or {}).get("call") or {}
            references = [*(job.files or []), *(call.get("images") or []), call.get("mask")]
            for reference in references:
                if isinstance(reference, str) and reference:
                    found = await library.relative(reference)
                    if found:
                        needed.add(found)
    return needed
