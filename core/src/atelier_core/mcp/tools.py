"""The MCP tools: thin translations between MCP arguments and the pipeline.

:func:`build_server` turns an :class:`~atelier_core.engine.pipeline.Pipeline` into an ``MCPServer``
with three tools (``generate_image``, ``edit_image``, ``list_available_models``) and a
resource template that serves every saved image (``atelier://images/<path>``).

Tool bodies are a few lines: build an :class:`ImageCall`, call the router, render the
:class:`CallOutcome` (a text line, a bounded preview, a resource link per image, and the
outcome as structured content). Errors become tool errors with the router's message;
anything unexpected is logged here and reported as a generic internal error.

Adding a tool (jobs, sessions, usage): write the function, then add it in
:func:`_tools` with :func:`compact_tool` so its schema stays small — every client sends
the whole ``tools/list`` to its model on every turn.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import (
    CallToolResult,
    ImageContent,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, Field, ValidationError

from atelier_core.engine.cost import usage_report
from atelier_core.engine.health import health_report
from atelier_core.engine.jobs import JobManager
from atelier_core.engine.pipeline import CallOutcome, OutputRequest, Pipeline, Plan
from atelier_core.engine.sessions import CARRIED, SessionManager, SessionView, new_session_id
from atelier_core.identity import current_principal
from atelier_core.mcp.catalogue import catalogue_text, health_text, summarize_model
from atelier_core.mcp.library import FIND_DESCRIPTION, FindImages
from atelier_core.mcp.render import ReturnImage, render
from atelier_core.mcp.reporting import ProgressReporter
from atelier_core.mcp.schema import OUTCOME_SCHEMA, CodedToolError, compact_tool, hints
from atelier_core.mcp.tasks import MAX_WAIT_S, job_error_text, job_line, job_ticket, task_slot
from atelier_core.media.thumbnails import Thumbnails
from atelier_core.plugin.errors import AtelierError, InvalidParameterError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings
from atelier_core.state.jobs import Job, JobState, validate_job_ids

log = structlog.get_logger("atelier.server")

#: How often a get_jobs barrier reports progress while it waits.
_BARRIER_TICK_S = 5.0


async def _ask_user(ctx: Context, message: str) -> bool | None:
    """Ask the user to confirm through MCP elicitation; None when the client cannot ask."""
    caps = ctx.client_capabilities
    if caps is None or caps.elicitation is None:
        return None
    answer = await ctx.elicit(message, _Confirmation)
    return answer.action == "accept" and bool(getattr(answer.data, "confirm", False))


class _Confirmation(BaseModel):
    confirm: bool = Field(description="Go ahead with this paid call?")


@dataclass(slots=True)
class Tools:
    """The tool bodies: each translates MCP arguments into a pipeline call and back."""

    atelier: Pipeline
    jobs: JobManager | None = None
    sessions: SessionManager | None = None
    modes: dict[str, ReturnImage] = field(default_factory=dict)

    async def _confirm_spend(self, ctx: Context, plan: Plan) -> bool:
        """Ask first when the quote is above cost.ask_above_usd; raise if the user says no.

        Returns True when the user confirmed (the call may then run unattended, e.g. as a
        job). Hard limits are enforced again by the admit stage when the call runs.
        """
        pipeline = self.atelier
        if pipeline.settings.cost.ask_above_usd is None:
            return False
        if await pipeline.spend.check(plan.quote, plan.entry.canonical_id) != "ask":
            return False
        answer = await _ask_user(ctx, pipeline.ask_message(plan))
        if not answer:
            raise pipeline.spend.ask_refusal(plan.quote, asked=answer is not None)
        return True

    async def _run(
        self,
        ctx: Context,
        call_args: dict[str, Any],
        operation: Operation,
        filename: str | None,
        overwrite: bool,
        return_image: ReturnImage | None,
        dry_run: bool,
        as_job: bool = False,
        idempotency_key: str | None = None,
    ) -> CallToolResult:
        pipeline = self.atelier
        mode: ReturnImage = return_image or pipeline.settings.preview.default
        progress = ProgressReporter(ctx)
        try:
            call = ImageCall(**{k: v for k, v in call_args.items() if v is not None})
            # A repeat of a keyed call finds its earlier job even though its files exist now.
            repeat = (
                idempotency_key is not None and self.jobs is not None and await self.jobs.knows_key(idempotency_key)
            )
            plan = await pipeline.plan(
                call,
                operation,
                output=OutputRequest(filename=filename, overwrite=overwrite),
                require_available=not dry_run,
                check_outputs=not repeat,
            )
            if dry_run:
                return await render(
                    await pipeline.dry_run_outcome(plan),
                    mode,
                    pipeline.settings,
                    pipeline.previews,
                    pipeline.thumbnails,
                )
            plan.want_preview = mode != "none"  # nothing inlined: no preview to make
            if await self._confirm_spend(ctx, plan):
                plan.spec.confirmed = True
            if self.jobs is not None:
                # Through the job machinery: a long call is handed off, never re-sent.
                return await self._run_job(plan, mode, as_job, progress, idempotency_key)
            outcome = await pipeline.run(plan, progress=progress)
        except AtelierError as exc:
            log.info("tool call refused", operation=operation.value, code=exc.code)
            raise
        finally:
            await progress.close()  # every notification goes out before the result
        return await render(outcome, mode, pipeline.settings, pipeline.previews, pipeline.thumbnails)

    async def generate_image(
        self,
        ctx: Context,
        prompt: Annotated[str, Field(description="What to draw.")],
        model: Annotated[str | None, Field(description=_MODEL_DOC)] = None,
        size: Annotated[str | None, Field(description="WxH, auto, or W:H.")] = None,
        aspect_ratio: Annotated[str | None, Field(description="W:H, for ratio-based models.")] = None,
        resolution: Annotated[str | None, Field(description="Tier: 1K, 2K, 4K.")] = None,
        quality: Annotated[str | None, Field(description="e.g. low, medium, high.")] = None,
        n: Annotated[int, Field(ge=1, description="Images; each is billed.")] = 1,
        output_format: Annotated[str | None, Field(description="png, jpeg, webp.")] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description=_COMPRESSION_DOC)] = None,
        background: Annotated[str | None, Field(description="auto, opaque, transparent.")] = None,
        seed: Annotated[int | None, Field(description="Repeatable results, where supported.")] = None,
        negative_prompt: Annotated[str | None, Field(description="What to avoid.")] = None,
        style: Annotated[str | None, Field(description="A model's named style.")] = None,
        options: Annotated[dict[str, Any] | None, Field(description="Model-specific extras.")] = None,
        images: Annotated[list[str] | None, Field(description="Reference images, where taken.")] = None,
        filename: Annotated[str | None, Field(description="Path under the output dir.")] = None,
        overwrite: Annotated[bool, Field(description="Replace that file.")] = False,
        return_image: Annotated[ReturnImage | None, Field(description="Inline image.")] = None,
        dry_run: Annotated[bool, Field(description="Check and price; send nothing.")] = False,
        as_job: Annotated[bool, Field(description=_AS_JOB_DOC)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=_IDEMPOTENCY_DOC)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(
            prompt=prompt,
            model=model,
            size=size,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            quality=quality,
            n=n,
            output_format=output_format,
            output_compression=output_compression,
            background=background,
            seed=seed,
            negative_prompt=negative_prompt,
            style=style,
            options=options,
            images=images,
        )
        return await self._run(
            ctx, args, Operation.GENERATE, filename, overwrite, return_image, dry_run, as_job, idempotency_key
        )

    async def edit_image(
        self,
        ctx: Context,
        images: Annotated[list[str], Field(min_length=1, description=_IMAGES_DOC)],
        prompt: Annotated[str | None, Field(description="The change; none = a variation.")] = None,
        mask: Annotated[str | None, Field(description=_MASK_DOC)] = None,
        model: Annotated[str | None, Field(description=_SAME)] = None,
        size: Annotated[str | None, Field(description=_SAME)] = None,
        aspect_ratio: Annotated[str | None, Field(description=_SAME)] = None,
        resolution: Annotated[str | None, Field(description=_SAME)] = None,
        quality: Annotated[str | None, Field(description=_SAME)] = None,
        n: Annotated[int, Field(ge=1, description=_SAME)] = 1,
        output_format: Annotated[str | None, Field(description=_SAME)] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description=_SAME)] = None,
        background: Annotated[str | None, Field(description=_SAME)] = None,
        seed: Annotated[int | None, Field(description=_SAME)] = None,
        negative_prompt: Annotated[str | None, Field(description=_SAME)] = None,
        style: Annotated[str | None, Field(description=_SAME)] = None,
        options: Annotated[dict[str, Any] | None, Field(description=_SAME)] = None,
        filename: Annotated[str | None, Field(description=_SAME)] = None,
        overwrite: Annotated[bool, Field(description=_SAME)] = False,
        return_image: Annotated[ReturnImage | None, Field(description=_SAME)] = None,
        dry_run: Annotated[bool, Field(description=_SAME)] = False,
        as_job: Annotated[bool, Field(description=_SAME)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=_SAME)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(
            prompt=prompt,
            images=images,
            mask=mask,
            model=model,
            size=size,
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            quality=quality,
            n=n,
            output_format=output_format,
            output_compression=output_compression,
            background=background,
            seed=seed,
            negative_prompt=negative_prompt,
            style=style,
            options=options,
        )
        return await self._run(
            ctx, args, Operation.EDIT, filename, overwrite, return_image, dry_run, as_job, idempotency_key
        )

    # -- background jobs --------------------------------------------------------------

    async def _run_job(
        self,
        plan: Plan,
        mode: ReturnImage,
        as_job: bool,
        progress: Callable[[float | None, str], Awaitable[None]],
        idempotency_key: str | None = None,
        identity: dict[str, Any] | None = None,
    ) -> CallToolResult:
        assert self.jobs is not None
        operation = plan.spec.operation.value
        ticket = CallOutcome(
            model=plan.entry.canonical_id,
            provider=plan.entry.provider_name,
            operation=plan.operation,
            requested=plan.validated.requested,
            applied=plan.validated.applied,
            notes=plan.notes,
            cost=plan.cost,
        )
        slot = task_slot.get()
        if as_job or slot is not None:
            job = await self.jobs.submit(
                operation,
                plan.spec,
                origin="task" if slot is not None else "job",
                idempotency_key=idempotency_key,
                context=plan,
                identity=identity,
            )
            self._remember_mode(job.id, mode)
            if slot is not None:
                slot.job = job
            return job_ticket(job, ticket, handed_off=False)
        job = await self.jobs.call(
            operation, plan.spec, on_progress=progress, idempotency_key=idempotency_key, context=plan, identity=identity
        )
        if job.terminal:
            return await self._finished(job, mode)
        self._remember_mode(job.id, mode)
        return job_ticket(job, ticket, handed_off=True, after_s=self.atelier.settings.jobs.handoff_after_s)

    def _remember_mode(self, job_id: str, mode: ReturnImage) -> None:
        """How the caller wanted images inlined, for when the job is collected (a
        presentation choice: kept here, not in the job's plan; bounded)."""
        self.modes[job_id] = mode
        while len(self.modes) > 1000:
            self.modes.pop(next(iter(self.modes)))

    def mode_of(self, job: Job) -> ReturnImage:
        return self.modes.get(job.id) or self.atelier.settings.preview.default

    async def _finished(self, job: Job, mode: ReturnImage) -> CallToolResult:
        """A terminal job as the synchronous call would have answered."""
        if job.state is JobState.DONE and job.outcome is not None:
            try:
                outcome = CallOutcome.model_validate(job.outcome)
            except ValidationError:
                # Recorded by another Atelier release: report what is known, do not fail.
                log.warning("stored job result does not match this release", job_id=job.id)
                files = "\n".join(job.files) or "none recorded"
                return CallToolResult(
                    content=[
                        TextContent(
                            type="text",
                            text=f"{job.id} finished (recorded by another "
                            f"Atelier version; no preview). Files:\n{files}",
                        )
                    ],
                    structured_content=job.outcome,
                )
            if job.reused:
                outcome.notes.append(
                    f"idempotency_key matched job {job.id}: this is its result; nothing was sent again"
                )
            return await render(outcome, mode, self.atelier.settings, self.atelier.previews, self.atelier.thumbnails)
        error = dict(job.error or {})
        code = "job_cancelled" if job.state is JobState.CANCELLED else str(error.pop("code", "job_failed"))
        error.pop("message", None)
        raise CodedToolError(job_error_text(job), code, job_id=job.id, **error)

    def _require_jobs(self) -> JobManager:
        if self.jobs is None:
            raise CodedToolError("background jobs are not enabled on this server", "jobs_disabled")
        return self.jobs

    async def get_jobs(
        self,
        ctx: Context,
        job_ids: Annotated[
            list[str] | None, Field(description="Omit: your unfinished (wait_s) or recent jobs.")
        ] = None,
        wait_s: Annotated[float, Field(ge=0, description=_WAIT_DOC)] = 0,
    ) -> CallToolResult:
        jobs = self._require_jobs()
        settings = self.atelier.settings
        notes: list[str] = []
        if not job_ids and not wait_s:
            recent = await jobs.recent(limit=20)
            lines = [job_line(job) for job in recent] or ["No jobs yet."]
            return CallToolResult(
                content=[TextContent(type="text", text="\n".join(lines))],
                structured_content={"jobs": [j.summary() for j in recent]},
            )
        if job_ids:
            ids = validate_job_ids(job_ids)
        else:  # the barrier over every job this server still runs (over stdio: this client's)
            # Other processes share the job store (each stdio client starts its own server);
            # their jobs are theirs to wait for.
            ids = [job.id for job in await jobs.recent(limit=100, include_finished=False) if job.owner == jobs.owner]
            if not ids:
                return CallToolResult(
                    content=[TextContent(type="text", text="No unfinished jobs.")],
                    structured_content={"jobs": [], "all_finished": True, "pending": []},
                )
        cap = min(settings.jobs.handoff_after_s or MAX_WAIT_S, MAX_WAIT_S)
        if wait_s > cap:
            notes.append(
                f"waited at most {cap:g} s (so the answer comes before client timeouts); "
                "call get_jobs again to keep waiting"
            )
        found = await self._barrier(ctx, jobs, ids, min(wait_s, cap))
        content: list[Any] = []
        entries: list[dict[str, Any]] = []
        budget = settings.preview.max_full_inline_bytes  # inline images over all jobs
        for job in found:
            entry = job.summary()
            content.append(TextContent(type="text", text=job_line(job)))
            if job.state is JobState.DONE and job.outcome is not None:
                mode: ReturnImage = self.mode_of(job) if budget > 0 else "none"
                rendered = await self._finished(job, mode)
                for block in rendered.content:
                    if isinstance(block, ImageContent):
                        budget -= len(block.data)
                content.extend(rendered.content)
                entry["result"] = job.outcome
            elif not job.terminal and job.partial and job.partial_mime and budget > len(job.partial):
                data = base64.b64encode(job.partial).decode()
                budget -= len(data)
                content.append(ImageContent(type="image", data=data, mime_type=job.partial_mime))
            entries.append(entry)
        pending = [job.id for job in found if not job.terminal]
        content.extend(TextContent(type="text", text=f"Note: {note}") for note in notes)
        return CallToolResult(
            content=content,
            structured_content={"jobs": entries, "all_finished": not pending, "pending": pending, "notes": notes},
        )

    async def _barrier(self, ctx: Context, jobs: JobManager, ids: list[str], wait_s: float) -> list[Job]:
        """Wait until every job in ``ids`` ends or ``wait_s`` passes, reporting the share done."""
        progress = ProgressReporter(ctx)
        deadline = time.monotonic() + wait_s
        try:
            while True:
                found = await jobs.wait(ids, max(0.0, min(deadline - time.monotonic(), _BARRIER_TICK_S)))
                done = sum(job.terminal for job in found)
                await progress(done / len(found) if found else 1.0, f"{done} of {len(found)} job(s) finished")
                if done == len(found) or time.monotonic() >= deadline:
                    return found
        finally:
            await progress.close()

    async def cancel_job(
        self,
        job_id: Annotated[str, Field(description="A job id.")],
    ) -> CallToolResult:
        jobs = self._require_jobs()
        (job_id,) = validate_job_ids([job_id])
        job, message = await jobs.cancel(job_id)
        return CallToolResult(
            content=[TextContent(type="text", text=f"{job_id}: {message}")],
            structured_content={**job.summary(), "message": message},
        )

    # -- edit sessions ------------------------------------------------------------------

    async def edit_session(
        self,
        ctx: Context,
        action: Annotated[
            Literal["start", "continue", "history", "list", "end"], Field(description=_SESSION_ACTION_DOC)
        ],
        session_id: Annotated[str | None, Field(description="From start.")] = None,
        prompt: Annotated[str | None, Field(description="What to draw, or the change.")] = None,
        image: Annotated[str | None, Field(description="Start from this image.")] = None,
        from_turn: Annotated[int | None, Field(description="Branch from this turn.")] = None,
        model: Annotated[str | None, Field(description="Switch model.")] = None,
        images: Annotated[list[str] | None, Field(description="Extra reference images.")] = None,
        mask: Annotated[str | None, Field(description=_TURN)] = None,
        size: Annotated[str | None, Field(description=_TURN)] = None,
        aspect_ratio: Annotated[str | None, Field(description=_TURN)] = None,
        resolution: Annotated[str | None, Field(description=_TURN)] = None,
        quality: Annotated[str | None, Field(description=_TURN)] = None,
        output_format: Annotated[str | None, Field(description=_TURN)] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description=_TURN)] = None,
        background: Annotated[str | None, Field(description=_TURN)] = None,
        seed: Annotated[int | None, Field(description=_TURN)] = None,
        negative_prompt: Annotated[str | None, Field(description=_TURN)] = None,
        style: Annotated[str | None, Field(description=_TURN)] = None,
        options: Annotated[dict[str, Any] | None, Field(description=_TURN)] = None,
        return_image: Annotated[ReturnImage | None, Field(description=_TURN)] = None,
        dry_run: Annotated[bool, Field(description=_TURN)] = False,
        as_job: Annotated[bool, Field(description=_TURN)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=_TURN)] = None,
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

    # -- cost and health ----------------------------------------------------------------

    async def get_usage(
        self,
        days: Annotated[int, Field(ge=1, le=366, description="Days back (UTC).")] = 30,
    ) -> CallToolResult:
        atelier = self.atelier
        report = await usage_report(atelier.ledger, days=days)
        limits = atelier.settings.cost.model_dump(exclude={"prices"}, exclude_none=True)
        report["limits"] = limits
        report["spent_this_run_usd"] = round(
            await atelier.ledger.spent(run_id=atelier.spend.run_id, principal=current_principal()), 6
        )
        lines = [
            f"Spent ${report['total_usd']:.4f} on {report['images']} image(s) in "
            f"{report['calls']} call(s) over the last {days} day(s) (estimates where the "
            "provider reports no cost)."
        ]
        lines += [f"  {model}: ${v['usd']:.4f}, {v['images']} image(s)" for model, v in report["by_model"].items()]
        if limits:
            lines.append("Limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
        return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))], structured_content=report)

    async def health(self) -> CallToolResult:
        report = await health_report(self.atelier, self.jobs)
        return CallToolResult(content=[TextContent(type="text", text=health_text(report))], structured_content=report)

    async def list_available_models(
        self,
        model: Annotated[str | None, Field(description="One model in full.")] = None,
        provider: Annotated[str | None, Field(description="Only this provider, in full.")] = None,
        capability: Annotated[
            Literal["generate", "edit", "variation"] | None, Field(description="Only models that can.")
        ] = None,
        detail: Annotated[bool, Field(description="Full detail for all listed.")] = False,
    ) -> CallToolResult:
        data = self.atelier.describe_models(provider=provider, capability=capability)
        if model is not None:
            entry = self.atelier.resolve(model)
            data["models"] = [m for m in data["models"] if m["id"] == entry.canonical_id]
        full = detail or model is not None or provider is not None
        if not full:
            data["models"] = [summarize_model(m) for m in data["models"]]
            data["detail"] = "summary; full per-model detail with model=<id>, provider=<name> or detail=true"
        return CallToolResult(
            content=[TextContent(type="text", text=catalogue_text(data, full=full))], structured_content=data
        )


# Tool texts. Every client sends the whole tools/list to its model on every turn, so they
# are short; tests/clients/test_tool_texts.py keeps every argument described and the whole
# list within 10 KB. Each says what the tool does, when to use it (and not), what it
# writes and bills, and what comes back.
# Tool texts. Every client sends the whole tools/list to its model on every turn, so they
# are short; tests/clients/test_tool_texts.py keeps every argument described and the whole
# list within 10 KB. Each says what the tool does, when to use it (and not), what it
# writes and bills, and what comes back.
_GENERATE_DOC = (
    "Make images from a prompt with any model (see list_available_models). Billed per image "
    "(dry_run: free quote); saves files + JSON sidecars. Returns previews, resource links, applied "
    "parameters, cost. Unsupported parameters are refused unbilled; calls past 45 s become jobs. "
    "To change an image: edit_image."
)
_EDIT_DOC = (
    "Change images (mask inpainting, combining, restyling) with a model that can edit; billed, "
    "saved and returned as generate. Several rounds on one picture: edit_session."
)
_MODEL_DOC = "Model id or alias."
_COMPRESSION_DOC = "jpeg/webp; 100 = least compressed."
_IMAGES_DOC = "First is edited: path, URL, data URL, base64, atelier:// URI."
_MASK_DOC = "PNG; transparent = area to change."
_SAME = "As generate."
_TURN = "As edit_image."
_IDEMPOTENCY_DOC = "A repeat returns the first result, unbilled."
_AS_JOB_DOC = "Reply at once with a job id."
_WAIT_DOC = "Wait up to this (max 45 s) for all to end."
_GET_JOBS_DOC = (
    "Status and results of background jobs (as_job, or calls past 45 s); finished ones return "
    "images like the call. Barrier: wait_s without job_ids waits for all unfinished jobs. "
    "Bills nothing."
)
_CANCEL_JOB_DOC = (
    "Cancel a background job: a queued one is never sent; a running one is abandoned but may "
    "still be billed. Returns its state."
)
_LIST_DOC = (
    "Model catalogue; call before generating. Default: a summary per model (available or why not, "
    "operations, formats, price); model, provider, detail=true: everything. Bills nothing."
)
_SESSION_DOC = (
    "Iterative edits of one picture, kept across restarts: start (prompt or image), then continue "
    "with short prompts, editing the latest turn or from_turn (a branch). Turns are billed and "
    "saved like edit_image; settings carry over. history, list, end bill nothing."
)
_SESSION_ACTION_DOC = "What to do."
_USAGE_DOC = "Spend (USD) by day, provider and model, and the limits. Bills nothing."
_HEALTH_DOC = (
    "Is the server ready? Usable models (or why not), plugin problems, folders, jobs, spend vs "
    "limits. Sends and bills nothing."
)


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


def build_tools(tools: Tools) -> list[Tool]:
    """The MCP tools over ``tools`` (job and session tools only when those are enabled)."""
    jobs, sessions = tools.jobs, tools.sessions
    # Not read-only (writes files, may spend money); destructive only with overwrite=true,
    # but the hint says "may"; open world: calls external providers. Not read-only,
    # destructive and non-idempotent are the protocol defaults, so they cost no bytes.
    writes = ToolAnnotations(open_world_hint=True)
    return [
        compact_tool(
            tools.generate_image,
            name="generate_image",
            description=_GENERATE_DOC,
            annotations=ToolAnnotations(title="Generate image", **hints(writes)),
            output_schema=OUTCOME_SCHEMA,
        ),
        compact_tool(
            tools.edit_image,
            name="edit_image",
            description=_EDIT_DOC,
            annotations=ToolAnnotations(title="Edit image", **hints(writes)),
            output_schema=OUTCOME_SCHEMA,
        ),
        compact_tool(
            tools.list_available_models,
            name="list_available_models",
            description=_LIST_DOC,
            annotations=ToolAnnotations(title="List models", read_only_hint=True, open_world_hint=False),
        ),
        *(
            []
            if jobs is None
            else [
                compact_tool(
                    tools.get_jobs,
                    name="get_jobs",
                    description=_GET_JOBS_DOC,
                    annotations=ToolAnnotations(title="Get jobs", read_only_hint=True, open_world_hint=False),
                ),
                compact_tool(
                    tools.cancel_job,
                    name="cancel_job",
                    description=_CANCEL_JOB_DOC,
                    annotations=ToolAnnotations(
                        title="Cancel job",
                        read_only_hint=False,
                        destructive_hint=True,
                        idempotent_hint=True,
                        open_world_hint=False,
                    ),
                ),
            ]
        ),
        *(
            []
            if sessions is None
            else [
                compact_tool(
                    tools.edit_session,
                    name="edit_session",
                    description=_SESSION_DOC,
                    annotations=ToolAnnotations(title="Edit session", **hints(writes)),
                ),
            ]
        ),
        compact_tool(
            tools.get_usage,
            name="get_usage",
            description=_USAGE_DOC,
            annotations=ToolAnnotations(title="Usage", read_only_hint=True, open_world_hint=False),
        ),
        compact_tool(
            tools.health,
            name="health",
            description=_HEALTH_DOC,
            annotations=ToolAnnotations(title="Health", read_only_hint=True, open_world_hint=False),
        ),
        compact_tool(
            FindImages(tools.atelier.library, tools.atelier.resolve).__call__,
            name="find_images",
            description=FIND_DESCRIPTION,
            annotations=ToolAnnotations(title="Find images", read_only_hint=True, open_world_hint=False),
        ),
    ]
