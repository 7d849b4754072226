"""Multi-turn edit sessions: provider-agnostic, branchable, restart-safe.

A session is a tree of turns. Turn 0 is either a generation from a prompt or an
existing image; every later turn edits an earlier turn's output (by default the
session's head, the latest turn) with any model that can edit. Continuing from an
older turn creates a branch; no turn is ever lost. Sessions and turns live in the
state database, so they survive restarts; an LRU cap and an idle TTL end old ones
(their files stay on disk).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from atelier_core.engine.library import origin
from atelier_core.identity import current_principal
from atelier_core.plugin.errors import InputImageError, InvalidParameterError, NotFoundError, RequestError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall
from atelier_core.state.session_records import SessionRecord, TurnRecord

if TYPE_CHECKING:
    from atelier_core.engine.pipeline import Pipeline

__all__ = ["SessionManager", "SessionTurn", "SessionView", "new_session_id"]

log = structlog.get_logger("atelier.sessions")

# Parameters a session carries from turn to turn unless the caller changes them.
CARRIED = ("size", "aspect_ratio", "resolution", "quality", "output_format", "background")


@dataclass(slots=True)
class SessionTurn(TurnRecord):
    """A stored turn, as the engine shows it."""

    def summary(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "parent": self.parent,
            "operation": self.operation,
            "prompt": self.prompt,
            "model": self.model,
            "parameters": self.parameters,
            "path": self.image_path,
            "resource_uri": self.resource_uri,
        }


@dataclass(slots=True)
class SessionView:
    id: str
    status: str
    created_at: float
    last_used: float
    head: int | None
    defaults: dict[str, Any]
    ended_reason: str | None = None
    turns: list[SessionTurn] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "status": self.status,
            "ended_reason": self.ended_reason,
            "head": self.head,
            "turns": len(self.turns),
            "defaults": self.defaults,
            "created_at": self.created_at,
            "last_used": self.last_used,
        }


class SessionManager:
    """Sessions of one :class:`~atelier_core.engine.pipeline.Atelier` service, in its state database."""

    def __init__(self, atelier: Pipeline, *, clock: Callable[[], float] = time.time) -> None:
        self._atelier = atelier
        self._records = atelier.state.sessions
        self._execute = atelier.execute
        self._settings = atelier.settings.sessions
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._turn_locks: dict[str, asyncio.Lock] = {}

    # -- queries -------------------------------------------------------------------

    async def get(self, session_id: str, *, with_turns: bool = True) -> SessionView:
        await self.evict()
        # Only the current principal's: another's session is "unknown", as if it never existed.
        record = await self._records.get(session_id, with_turns=with_turns, principal=current_principal())
        if record is None:
            raise NotFoundError(
                f"unknown session {session_id!r}",
                parameter="session_id",
                value=session_id,
                fix="start one with action=start (sessions persist across restarts, "
                "so this id never existed or was pruned)",
                code="session_not_found",
            )
        return SessionView(
            id=record.id,
            status=record.status,
            created_at=record.created_at,
            last_used=record.last_used,
            head=record.head,
            defaults=record.defaults,
            ended_reason=record.ended_reason,
            turns=[_turn(t) for t in record.turns],
        )

    async def list(self, *, include_ended: bool = False, limit: int = 50) -> builtins.list[SessionView]:
        await self.evict()
        ids = await self._records.ids(include_ended=include_ended, limit=limit, principal=current_principal())
        return [await self.get(i) for i in ids]

    # -- lifecycle -----------------------------------------------------------------

    async def evict(self) -> builtins.list[str]:
        """End sessions idle past the TTL and those beyond the LRU cap."""
        ended = await self._records.evict(
            now=self._clock(),
            idle_ttl_s=self._settings.idle_ttl_s,
            max_open=self._settings.max_sessions,
        )
        for session_id, _reason in ended:
            log.info("session ended by eviction", session=session_id)
        return [session_id for session_id, _ in ended]

    async def end(self, session_id: str) -> SessionView:
        view = await self.get(session_id, with_turns=False)
        if view.status == "open":
            await self._records.end(session_id, reason="ended by request", now=self._clock())
        return await self.get(session_id)

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def turn_lock(self, session_id: str) -> asyncio.Lock:
        """Held by a caller from planning a turn until it is recorded, so a second turn of
        the same session waits and builds on the first (separate from the lock
        :meth:`record` takes, which a job runner may need meanwhile)."""
        return self._turn_locks.setdefault(session_id, asyncio.Lock())

    async def start(
        self,
        *,
        prompt: str | None,
        image: str | None,
        call: ImageCall,
        session_id: str | None = None,
        **execute_kwargs: Any,
    ) -> tuple[SessionView, Any]:
        """Start from a prompt (turn 0 generates) or from an existing image (turn 0 is it).

        ``session_id``: an id made earlier with :func:`new_session_id`."""
        if (prompt is None) == (image is None):
            raise InvalidParameterError(
                "prompt",
                prompt,
                "and image: give exactly one to start a session",
                fix="start from a prompt (generates the first image) or from an image",
            )
        defaults = {k: v for k, v in call.model_dump(include=set(CARRIED)).items() if v is not None}
        if call.model:
            defaults["model"] = call.model
        session_id = session_id or new_session_id()
        now = self._clock()
        outcome: Any = None
        if prompt is not None:
            with origin(session_id=session_id, turn=0):
                outcome = await self._execute(
                    call.model_copy(update={"prompt": prompt, "n": 1}), Operation.GENERATE, **execute_kwargs
                )
            first = outcome.images[0]
            turn = SessionTurn(
                turn=0,
                parent=None,
                created_at=now,
                operation="generate",
                prompt=prompt,
                model=outcome.model,
                parameters=dict(outcome.applied),
                image_path=str(first.path),
                resource_uri=first.resource_uri,
                sha256=first.sha256,
                outcome=outcome.model_dump(mode="json"),
            )
            defaults.setdefault("model", outcome.model)
        else:
            assert image is not None
            path, resource_uri = await self._import(image)
            turn = SessionTurn(
                turn=0,
                parent=None,
                created_at=now,
                operation="import",
                prompt=None,
                model=None,
                parameters={},
                image_path=str(path),
                resource_uri=resource_uri,
                sha256=await asyncio.to_thread(_sha256, path),
            )
        await self._records.create(
            SessionRecord(
                id=session_id,
                status="open",
                created_at=now,
                last_used=now,
                head=0,
                defaults=defaults,
                principal=current_principal(),
            ),
            turn,
        )
        await self.evict()
        return await self.get(session_id), outcome

    async def _import(self, reference: str) -> tuple[Path, str]:
        """Turn 0 from an existing image: read it like any input, keep a copy in the output
        root (so later turns never depend on a file outside it)."""
        image = await self._atelier.intake.load(reference, parameter="image")
        saved = await asyncio.to_thread(
            self._atelier.store.save,
            image.data,
            image.format,
            metadata={"operation": "session import", "source": image.source},
        )
        return saved.path, saved.resource_uri

    async def plan_turn(
        self, session_id: str, *, call: ImageCall, from_turn: int | None = None
    ) -> tuple[SessionView, SessionTurn, ImageCall, builtins.list[str]]:
        """The edit a ``continue`` turn would send (session checked, defaults carried, the
        vendor's turn chaining applied): ``(view, base turn, call, notes)``. Sends nothing."""
        view = await self.get(session_id)
        if view.status != "open":
            last = view.turns[view.head].resource_uri if view.head is not None and view.turns else None
            raise RequestError(
                f"session {session_id} has ended ({view.ended_reason})",
                parameter="session_id",
                value=session_id,
                code="session_ended",
                fix="start a new session" + (f" from its last image: action=start image={last}" if last else ""),
            )
        base_index = view.head if from_turn is None else from_turn
        by_index = {t.turn: t for t in view.turns}
        if base_index not in by_index:
            raise InvalidParameterError(
                "from_turn",
                from_turn,
                f"is not a turn of session {session_id}",
                allowed=f"0–{len(view.turns) - 1}",
                fix="see action=history for the turns",
            )
        base = by_index[base_index]
        path = Path(base.image_path)
        # On another replica's disk (storage.url): the edit reads it from the bucket, where
        # objects are never replaced, so it is still the turn's image.
        digest = await asyncio.to_thread(_sha256_if_file, path)
        elsewhere = digest is None and self._atelier.bucket is not None and base.resource_uri
        if not elsewhere and digest != base.sha256:
            raise InputImageError(
                f"turn {base.turn}'s image changed or was deleted on disk since it was made",
                parameter="from_turn",
                value=base.turn,
                code="session_image_changed",
                fix="continue from another turn, or start a new session from the current file",
            )
        model = call.model or view.defaults.get("model")
        if not model:
            raise InvalidParameterError(
                "model",
                None,
                "is needed: this session has no model yet",
                fix="pass model (any model with the edit capability)",
            )
        entry = self._atelier.registry.resolve(model)
        if Operation.EDIT not in entry.spec.operations:
            able = [e.canonical_id for e in self._atelier.registry.entries(capability="edit")]
            raise InvalidParameterError(
                "model",
                model,
                "cannot edit, so it cannot continue a session",
                allowed=able[:8],
                fix="pick a model with the edit capability",
                code="unsupported_capability",
            )
        carried, notes = _carry(view.defaults, call, entry.spec)
        options = _chained(base, entry.canonical_id, call.options, notes)
        reference = base.resource_uri or str(path)
        edit_call = call.model_copy(
            update={
                **carried,
                "model": entry.canonical_id,
                "images": [reference, *call.images],
                "n": 1,
                "options": options,
            }
        )
        return view, base, edit_call, notes

    def turn_ref(
        self,
        session_id: str,
        call: ImageCall,
        *,
        start: bool = False,
        parent: int | None = None,
        view: SessionView | None = None,
    ) -> dict[str, Any]:
        """What :meth:`record` needs to add a turn once its call has run (a job stores it):
        the session, the parent turn, the prompt and the session's defaults after the turn."""
        defaults = dict(view.defaults) if view is not None else {}
        for key in CARRIED:
            value = getattr(call, key)
            if value is not None:
                defaults[key] = value
        if call.model:
            defaults["model"] = call.model
        return {"session_id": session_id, "start": start, "parent": parent, "prompt": call.prompt, "defaults": defaults}

    async def record(self, ref: dict[str, Any], outcome: Any) -> SessionView:
        """Add the turn a call made (its first image) to the session ``ref`` names: turn 0
        of a new session, or a child of ``ref["parent"]`` that becomes the head."""
        session_id = ref["session_id"]
        image = outcome.images[0]
        now = self._clock()
        defaults = {**ref["defaults"], "model": outcome.model}
        async with self._lock(session_id):
            turn_no = 0 if ref["start"] else await self._records.count_turns(session_id)
            turn = SessionTurn(
                turn=turn_no,
                parent=ref["parent"],
                created_at=now,
                operation="generate" if ref["start"] else "edit",
                prompt=ref["prompt"],
                model=outcome.model,
                parameters=dict(outcome.applied),
                image_path=str(image.path),
                resource_uri=image.resource_uri,
                sha256=image.sha256,
                outcome=outcome.model_dump(mode="json"),
            )
            if ref["start"]:
                await self._records.create(
                    SessionRecord(
                        id=session_id,
                        status="open",
                        created_at=now,
                        last_used=now,
                        head=0,
                        defaults=defaults,
                        principal=current_principal(),
                    ),
                    turn,
                )
            else:
                await self._records.add_turn(session_id, turn, defaults=defaults, now=now)
        await self.evict()
        return await self.get(session_id)

    async def continue_(
        self,
        session_id: str,
        *,
        call: ImageCall,
        from_turn: int | None = None,
        **execute_kwargs: Any,
    ) -> tuple[SessionView, Any]:
        """Edit the head (or ``from_turn``) with ``call.prompt``; the result becomes the head."""
        async with self._lock(session_id):
            view, base, edit_call, notes = await self.plan_turn(session_id, call=call, from_turn=from_turn)
            with origin(session_id=session_id, turn=len(view.turns)):
                outcome = await self._execute(edit_call, Operation.EDIT, **execute_kwargs)
            if notes:
                outcome.notes.extend(notes)
            image = outcome.images[0]
            now = self._clock()
            turn = SessionTurn(
                turn=len(view.turns),
                parent=base.turn,
                created_at=now,
                operation="edit",
                prompt=call.prompt,
                model=outcome.model,
                parameters=dict(outcome.applied),
                image_path=str(image.path),
                resource_uri=image.resource_uri,
                sha256=image.sha256,
                outcome=outcome.model_dump(mode="json"),
            )
            defaults = dict(view.defaults)
            defaults["model"] = outcome.model
            for key in CARRIED:
                value = getattr(call, key)
                if value is not None:
                    defaults[key] = value
            await self._records.add_turn(session_id, turn, defaults=defaults, now=now)
        return await self.get(session_id), outcome


def _chained(base: SessionTurn, model: str, options: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The turn's options plus the base turn's continuation (a vendor's own turn chaining,
    e.g. a response id) when the same model continues it and the caller did not choose otherwise."""
    continuation = (base.outcome or {}).get("continuation") or {}
    if not continuation or base.model != model:
        return options
    if any(key in options and options[key] != value for key, value in continuation.items()):
        return options  # the caller chose otherwise (another route, or its own response id)
    notes.append(
        f"continued turn {base.turn}'s conversation with {model} ({', '.join(f'options.{k}' for k in continuation)})"
    )
    return {**options, **continuation}


def new_session_id() -> str:
    """A fresh, unguessable session id."""
    return "ses_" + secrets.token_urlsafe(18)


def _carry(defaults: dict[str, Any], call: ImageCall, spec: Any) -> tuple[dict[str, Any], list[str]]:
    """Defaults the new turn inherits: only those the target model accepts."""
    carried: dict[str, Any] = {}
    notes: list[str] = []
    for key in CARRIED:
        if getattr(call, key) is not None or key not in defaults:
            continue
        value = defaults[key]
        ok = True
        if key == "quality":
            ok = value in spec.qualities
        elif key == "output_format":
            ok = value in spec.output_formats
        elif key == "background":
            ok = value in spec.backgrounds
        elif key == "resolution":
            ok = value in spec.sizes.resolutions
        elif key == "aspect_ratio":
            ok = bool(spec.sizes.aspect_ratios) or spec.sizes.custom is not None
        elif key == "size":
            ok = spec.sizes.takes_pixels or bool(spec.sizes.aspect_ratios)
        if ok:
            carried[key] = value
        else:
            notes.append(f"session default {key}={value} not supported by {spec.id}; not applied")
    return carried, notes


def _turn(record: TurnRecord) -> SessionTurn:
    return SessionTurn(**{f.name: getattr(record, f.name) for f in fields(TurnRecord)})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_if_file(path: Path) -> str | None:
    """The file's SHA-256, or None when it is not a regular file (blocking)."""
    return _sha256(path) if path.is_file() else None
