"""The session tool: ``edit_session`` (start, continue, history, list, end).

A generating turn is planned, priced and run like ``edit_image`` (through the job store),
then recorded in the session; history replies carry bounded inline thumbnails.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextContent
from pydantic import Field

from atelier_core.engine.sessions import CARRIED, SessionView, new_session_id
from atelier_core.mcp.render import ReturnImage, render
from atelier_core.mcp.reporting import ProgressReporter
from atelier_core.mcp.schema import CodedToolError
from atelier_core.mcp.tool_base import ToolsBase
from atelier_core.mcp.tool_texts import SESSION_ACTION_DOC, TURN
from atelier_core.media.thumbnails import Thumbnails
from atelier_core.plugin.errors import AtelierError, InvalidParameterError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings


class SessionTools(ToolsBase):
    """``edit_session`` (listed only when sessions are enabled)."""

    __slots__ = ()

    async def edit_session(
        self,
        ctx: Context,
        action: Annotated[
            Literal["start", "continue", "history", "list", "end"], Field(description=SESSION_ACTION_DOC)
        ],
        session_id: Annotated[str | None, Field(description="From start.")] = None,
        prompt: Annotated[str | None, Field(description="What to draw, or the change.")] = None,
        image: Annotated[str | None, Field(description="Start from this image.")] = None,
        from_turn: Annotated[int | None, Field(description="Branch from this turn.")] = None,
        model: Annotated[str | None, Field(description="Switch model.")] = None,
        images: Annotated[list[str] | None, Field(description="Extra reference images.")] = None,
        mask: Annotated[str | None, Field(description=TURN)] = None,
        size: Annotated[str | None, Field(description=TURN)] = None,
        aspect_ratio: Annotated[str | None, Field(description=TURN)] = None,
        resolution: Annotated[str | None, Field(description=TURN)] = None,
        quality: Annotated[str | None, Field(description=TURN)] = None,
        output_format: Annotated[str | None, Field(description=TURN)] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description=TURN)] = None,
        background: Annotated[str | None, Field(description=TURN)] = None,
        seed: Annotated[int | None, Field(description=TURN)] = None,
        negative_prompt: Annotated[str | None, Field(description=TURN)] = None,
        style: Annotated[str | None, Field(description=TURN)] = None,
        options: Annotated[dict[str, Any] | None, Field(description=TURN)] = None,
        return_image: Annotated[ReturnImage | None, Field(description=TURN)] = None,
        dry_run: Annotated[bool, Field(description=TURN)] = False,
        as_job: Annotated[bool, Field(description=TURN)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=TURN)] = None,
    ) -> CallToolResult:
        sessions = self.sessions
        if sessions is None:
            raise CodedToolError("edit sessions are not enabled on this server", "sessions_disabled")
        settings = self.atelier.settings
        mode: ReturnImage = return_image or settings.preview.default
        turn_args = dict(
            model=model,
            prompt=prompt,
            images=images or [],
            mask=mask,
            size=size,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            quality=quality,
            output_format=output_format,
            output_compression=output_compression,
            background=background,
            seed=seed,
            negative_prompt=negative_prompt,
            style=style,
            options=options or {},
        )
        call = ImageCall(**{k: v for k, v in turn_args.items() if v is not None})
        if action in ("continue", "history", "end") and not session_id:
            raise InvalidParameterError(
                "session_id",
                None,
                f"is required for action={action}",
                fix="pass the session_id returned by action=start",
            )
        generating = action == "continue" or (action == "start" and image is None)
        if not generating:
            # Starting from an image keeps the model and the carried defaults for later turns.
            kept = {"model", *CARRIED} if action == "start" else set()
            given = {
                k: v
                for k, v in {
                    **turn_args,
                    "from_turn": from_turn,
                    "dry_run": dry_run,
                    "as_job": as_job,
                    "idempotency_key": idempotency_key,
                }.items()
                if v not in (None, False, [], {}) and k not in kept
            }
            if given:
                first = sorted(given)[0]
                raise InvalidParameterError(
                    first,
                    given[first],
                    f"does not apply to action={action}" + (" with image" if image else ""),
                    allowed="action=continue (or start with a prompt) for turn parameters",
                    fix=f"drop {', '.join(sorted(given))}, or start from a prompt / continue the session",
                )
        if action == "list":
            views = await sessions.list(include_ended=True, limit=20)
            lines = [_session_line(v) for v in views] or ["No sessions yet."]
            return CallToolResult(
                content=[TextContent(type="text", text="\n".join(lines))],
                structured_content={"sessions": [v.summary() for v in views]},
            )
        if action == "history":
            assert session_id is not None
            return await _history(await sessions.get(session_id), settings, self.atelier.thumbnails)
        if action == "end":
            assert session_id is not None
            view = await sessions.end(session_id)
            text = f"{_session_line(view)}. Its files stay in the output directory."
            return CallToolResult(
                content=[TextContent(type="text", text=text)], structured_content={"session": view.summary()}
            )
        if action == "start" and image is not None:
            view, _ = await sessions.start(prompt=prompt, image=image, call=call)
            head = view.turns[0]
            return CallToolResult(
                content=[
                    TextContent(type="text", text=_continue_line(view) + f" Turn 0 is {head.image_path}."),
                    ResourceLink(type="resource_link", uri=head.resource_uri or "", name=Path(head.image_path).name),
                ],
                structured_content={"session": view.summary(), "turn": head.summary()},
            )
        return await self._session_turn(
            ctx, action, session_id, call, from_turn, mode, dry_run, as_job, idempotency_key
        )

    async def _session_turn(
        self,
        ctx: Context,
        action: str,
        session_id: str | None,
        call: ImageCall,
        from_turn: int | None,
        mode: ReturnImage,
        dry_run: bool,
        as_job: bool,
        idempotency_key: str | None,
    ) -> CallToolResult:
        """One turn at a time per session: a second continue waits and builds on the first
        (until the first is handed off to a job or answered as one)."""
        args = (ctx, action, session_id, call, from_turn, mode, dry_run, as_job, idempotency_key)
        if action == "continue" and session_id and self.sessions is not None:
            async with self.sessions.turn_lock(session_id):
                return await self._session_turn_locked(*args)
        return await self._session_turn_locked(*args)

    async def _session_turn_locked(
        self,
        ctx: Context,
        action: str,
        session_id: str | None,
        call: ImageCall,
        from_turn: int | None,
        mode: ReturnImage,
        dry_run: bool,
        as_job: bool,
        idempotency_key: str | None,
    ) -> CallToolResult:
        """A generating turn (start from a prompt, or continue): planned and priced like
        generate/edit, confirmed above the ask threshold, then run through the job store
        (progress, hand-off after 45 s, as_job, idempotency_key); recorded in the session
        once it has run."""
        sessions = self.sessions
        pipeline = self.atelier
        assert sessions is not None
        notes: list[str] = []
        if action == "start":
            if not (call.prompt or "").strip():
                raise InvalidParameterError(
                    "prompt",
                    call.prompt,
                    "and image: give one to start a session",
                    fix="start from a prompt (generates the first image) or from an image",
                )
            session_id = new_session_id()
            turn_call, operation = call.model_copy(update={"n": 1}), Operation.GENERATE
            ref = sessions.turn_ref(session_id, call, start=True)
        else:
            assert session_id is not None
            view, base, turn_call, notes = await sessions.plan_turn(session_id, call=call, from_turn=from_turn)
            operation = Operation.EDIT
            ref = sessions.turn_ref(session_id, call, parent=base.turn, view=view)
        plan = await pipeline.plan(turn_call, operation, require_available=not dry_run)
        plan.notes.extend(notes)
        if dry_run:
            outcome = await pipeline.dry_run_outcome(plan)
            outcome.notes.append("dry run: no session turn was recorded")
            return await render(outcome, mode, pipeline.settings, pipeline.previews, pipeline.thumbnails)
        if await self._confirm_spend(ctx, plan):
            plan.spec.confirmed = True
        plan.spec.session = ref
        progress = ProgressReporter(ctx)
        try:
            if self.jobs is not None:
                # A repeat is the same turn asked again (same session, arguments and branch),
                # although the session's head has moved on since.
                identity = {
                    "session": {
                        "action": action,
                        "session_id": None if action == "start" else session_id,
                        "from_turn": from_turn,
                    },
                    "call": call.model_dump(mode="json"),
                }
                result = await self._run_job(plan, mode, as_job, progress, idempotency_key, identity)
            else:
                if as_job or idempotency_key:
                    raise CodedToolError(
                        "as_job and idempotency_key need background jobs, which are not enabled on this server",
                        "jobs_disabled",
                    )
                outcome = await pipeline.run(plan, progress=progress)
                await sessions.record(ref, outcome)
                result = await render(outcome, mode, pipeline.settings, pipeline.previews, pipeline.thumbnails)
        finally:
            await progress.close()
        if result.is_error or (result.structured_content or {}).get("job"):
            return result  # a job ticket (as_job or handed off): get_jobs returns the turn
        view = await sessions.get(session_id)
        head = view.turns[view.head] if view.head is not None else None
        result.content.insert(0, TextContent(type="text", text=_continue_line(view)))
        result.structured_content = {
            "session": view.summary(),
            "turn": head.summary() if head else None,
            "outcome": result.structured_content,
        }
        return result


def _continue_line(view: SessionView) -> str:
    head = view.turns[view.head] if view.head is not None and view.turns else None
    return (
        f"Session {view.id}: turn {head.turn if head else 0}"
        + (f" (from turn {head.parent})" if head and head.parent is not None else "")
        + f'; continue with edit_session(action="continue", session_id="{view.id}", prompt=...).'
    )


def _session_line(view: SessionView) -> str:
    state = view.status if view.status == "open" else f"ended ({view.ended_reason})"
    model = view.defaults.get("model", "?")
    return f"{view.id}: {state}, {len(view.turns)} turn(s), model {model}"


#: Inline thumbnails in one edit_session history reply (base64 bytes, all turns together).
HISTORY_INLINE_BYTES = 100_000


def _history_thumbnails(view: SessionView, settings: Settings, thumbnails: Thumbnails) -> dict[int, ImageContent | str]:
    """Per turn (newest first, within the inline budget): its thumbnail, or why there is
    none. One worker-thread job for the whole history; kept thumbnails are not re-made.
    The thumbnails of one reply take at most ``HISTORY_INLINE_BYTES`` (base64), newest
    first: a long session's history stays a small reply; older turns keep their links."""
    budget = min(settings.preview.max_full_inline_bytes, HISTORY_INLINE_BYTES)
    found: dict[int, ImageContent | str] = {}
    for turn in reversed(view.turns):  # newest first: the budget favours recent turns
        path = Path(turn.image_path)
        if budget <= 0 or not path.is_file():
            continue
        try:
            thumb = thumbnails.get(
                path, max_edge=min(256, settings.preview.max_edge), max_bytes=30_000, fmt=settings.preview.format
            )
        except (AtelierError, OSError):
            found[turn.turn] = f"(no preview: {turn.image_path} unreadable)"
            continue
        encoded = base64.b64encode(thumb.data).decode()
        if len(encoded) <= budget:
            budget -= len(encoded)
            found[turn.turn] = ImageContent(type="image", data=encoded, mime_type=thumb.mime_type)
    return found


async def _history(view: SessionView, settings: Settings, thumbnails: Thumbnails) -> CallToolResult:
    """Each turn: prompt, model, parameters, resource link and (within budget) a thumbnail."""
    content: list[Any] = [TextContent(type="text", text=_session_line(view))]
    thumbs = await asyncio.to_thread(_history_thumbnails, view, settings, thumbnails)
    for turn in reversed(view.turns):
        text = (
            f"turn {turn.turn}"
            + (f" (from {turn.parent})" if turn.parent is not None else "")
            + f": {turn.operation} {turn.model or ''} {turn.prompt or ''}".rstrip()
        )
        content.append(TextContent(type="text", text=text))
        thumb = thumbs.get(turn.turn)
        if isinstance(thumb, str):
            content.append(TextContent(type="text", text=thumb))
        elif thumb is not None:
            content.append(thumb)
        if turn.resource_uri:
            content.append(ResourceLink(type="resource_link", uri=turn.resource_uri, name=Path(turn.image_path).name))
    return CallToolResult(
        content=content, structured_content={"session": view.summary(), "turns": [t.summary() for t in view.turns]}
    )
