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
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
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
from atelier_core.engine.jobs import JobManager
from atelier_core.engine.pipeline import CallOutcome, OutputRequest, Pipeline, Plan
from atelier_core.engine.sessions import SessionManager, SessionView
from atelier_core.mcp.render import ReturnImage, render
from atelier_core.mcp.schema import OUTCOME_SCHEMA, compact_tool, hints
from atelier_core.mcp.tasks import MAX_WAIT_S, job_error_text, job_line, job_ticket, task_slot
from atelier_core.media.thumbnails import Thumbnails
from atelier_core.plugin.errors import AtelierError, InvalidParameterError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall
from atelier_core.settings import Settings
from atelier_core.state.jobs import Job, JobState, validate_job_ids

log = structlog.get_logger("atelier.server")

async def _ask_user(ctx: Context, message: str) -> bool | None:
    """Ask the user to confirm through MCP elicitation; None when the client cannot ask."""
    caps = ctx.client_capabilities
    if caps is None or caps.elicitation is None:
        return None
    answer = await ctx.elicit(message, _Confirmation)
    return answer.action == "accept" and bool(getattr(answer.data, "confirm", False))


def _live_confirm(ctx: Context) -> Callable[[str], Awaitable[bool]] | None:
    """A confirm callback for calls made within this request (None if the client cannot ask)."""
    caps = ctx.client_capabilities
    if caps is None or caps.elicitation is None:
        return None

    async def confirm(message: str) -> bool:
        return bool(await _ask_user(ctx, message))

    return confirm


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
        if pipeline.spend.check(plan.quote, plan.entry.canonical_id) != "ask":
            return False
        answer = await _ask_user(ctx, pipeline.ask_message(plan))
        if not answer:
            raise pipeline.spend.ask_refusal(plan.quote, asked=answer is not None)
        return True

    async def _run(self, ctx: Context, call_args: dict[str, Any], operation: Operation,
                   filename: str | None, overwrite: bool, return_image: ReturnImage | None,
                   dry_run: bool, as_job: bool = False,
                   idempotency_key: str | None = None) -> CallToolResult:
        pipeline = self.atelier
        mode: ReturnImage = return_image or pipeline.settings.preview.default

        async def progress(fraction: float | None, message: str) -> None:
            if fraction is not None:  # stage-only updates carry no fraction
                await ctx.report_progress(fraction, 1.0, message)

        try:
            call = ImageCall(**{k: v for k, v in call_args.items() if v is not None})
            # A repeat of a keyed call finds its earlier job even though its files exist now.
            repeat = (idempotency_key is not None and self.jobs is not None
                      and await self.jobs.knows_key(idempotency_key))
            plan = await pipeline.plan(call, operation, output=OutputRequest(filename=filename, overwrite=overwrite),
                                       require_available=not dry_run, check_outputs=not repeat)
            if dry_run:
                return await render(pipeline.dry_run_outcome(plan), mode, pipeline.settings, pipeline.previews,
                                    pipeline.thumbnails)
            plan.want_preview = mode != "none"  # nothing inlined: no preview to make
            if await self._confirm_spend(ctx, plan):
                plan.spec.confirmed = True
            if self.jobs is not None:
                # Through the job machinery: a long call is handed off, never re-sent.
                return await self._run_job(plan, mode, as_job, progress, idempotency_key)
            outcome = await pipeline.run(plan, progress=progress)
        except AtelierError as exc:
            log.info("tool call refused", operation=operation.value, code=exc.code)
            raise ToolError(str(exc)) from None
        return await render(outcome, mode, pipeline.settings, pipeline.previews, pipeline.thumbnails)

    async def generate_image(
        self,
        ctx: Context,
        prompt: Annotated[str, Field(description="What to draw.")],
        model: Annotated[str | None, Field(description="Model id or alias; see list_available_models.")] = None,
        size: Annotated[str | None, Field(description="'WxH', 'auto', or 'W:H'.")] = None,
        aspect_ratio: Annotated[str | None, Field(description="'W:H'.")] = None,
        resolution: Annotated[str | None, Field(description="Tier, e.g. 1K, 2K, 4K.")] = None,
        quality: Annotated[str | None, Field(description="e.g. low, medium, high.")] = None,
        n: Annotated[int, Field(ge=1, description="Number of images.")] = 1,
        output_format: Annotated[str | None, Field(description="png, jpeg, webp.")] = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100, description="jpeg/webp, 0-100.")] = None,
        background: Annotated[str | None, Field(description="auto, opaque, transparent.")] = None,
        seed: int | None = None,
        negative_prompt: Annotated[str | None, Field(description="What to avoid.")] = None,
        style: str | None = None,
        options: Annotated[dict[str, Any] | None, Field(description="Model-specific extras.")] = None,
        images: Annotated[list[str] | None, Field(description="Reference images (e.g. a subject portrait) for models that take them.")] = None,
        filename: Annotated[str | None, Field(description="Output path under the output dir.")] = None,
        overwrite: Annotated[bool, Field(description="Replace an existing file.")] = False,
        return_image: Annotated[ReturnImage | None, Field(description="Inline image: preview (default), full, none.")] = None,
        dry_run: Annotated[bool, Field(description="Validate and price only; nothing sent.")] = False,
        as_job: Annotated[bool, Field(description=_AS_JOB_DOC)] = False,
        idempotency_key: Annotated[str | None, Field(max_length=200, description=_IDEMPOTENCY_DOC)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(prompt=prompt, model=model, size=size, aspect_ratio=aspect_ratio,
                    resolution=resolution, quality=quality, n=n, output_format=output_format,
                    output_compression=output_compression, background=background, seed=seed,
                    negative_prompt=negative_prompt, style=style, options=options, images=images)
        return await self._run(ctx, args, Operation.GENERATE, filename, overwrite, return_image, dry_run,
                               as_job, idempotency_key)

    async def edit_image(
        self,
        ctx: Context,
        images: Annotated[list[str], Field(min_length=1, description="First is edited. Path, file:// or https URL, data URL, base64, or atelier:// URI.")],
        prompt: Annotated[str | None, Field(description="The change to make.")] = None,
        mask: Annotated[str | None, Field(description="PNG; transparent pixels mark the area to change.")] = None,
        model: str | None = None,
        size: str | None = None,
        aspect_ratio: str | None = None,
        resolution: str | None = None,
        quality: str | None = None,
        n: Annotated[int, Field(ge=1)] = 1,
        output_format: str | None = None,
        output_compression: Annotated[int | None, Field(ge=0, le=100)] = None,
        background: str | None = None,
        seed: int | None = None,
        negative_prompt: str | None = None,
        style: str | None = None,
        options: dict[str, Any] | None = None,
        filename: str | None = None,
        overwrite: bool = False,
        return_image: ReturnImage | None = None,
        dry_run: bool = False,
        as_job: bool = False,
        idempotency_key: Annotated[str | None, Field(max_length=200)] = None,
    ) -> Annotated[CallToolResult, CallOutcome]:
        args = dict(prompt=prompt, images=images, mask=mask, model=model, size=size,
                    aspect_ratio=aspect_ratio, resolution=resolution, quality=quality, n=n,
                    output_format=output_format, output_compression=output_compression,
                    background=background, seed=seed, negative_prompt=negative_prompt,
                    style=style, options=options)
        return await self._run(ctx, args, Operation.EDIT, filename, overwrite, return_image, dry_run,
                               as_job, idempotency_key)

    # -- background jobs --------------------------------------------------------------

    async def _run_job(self, plan: Plan, mode: ReturnImage, as_job: bool,
                       progress: Callable[[float | None, str], Awaitable[None]],
                       idempotency_key: str | None = None) -> CallToolResult:
        assert self.jobs is not None
        operation = plan.spec.operation.value
        ticket = CallOutcome(
            model=plan.entry.canonical_id, provider=plan.entry.provider_name,
            operation=plan.operation, requested=plan.validated.requested,
            applied=plan.validated.applied, notes=plan.notes, cost=plan.cost,
        )
        slot = task_slot.get()
        if as_job or slot is not None:
            job = await self.jobs.submit(operation, plan.spec, origin="task" if slot is not None else "job",
                                         idempotency_key=idempotency_key, context=plan)
            self._remember_mode(job.id, mode)
            if slot is not None:
                slot.job = job
            return job_ticket(job, ticket, handed_off=False)
        job = await self.jobs.call(operation, plan.spec, on_progress=progress,
                                   idempotency_key=idempotency_key, context=plan)
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
                    content=[TextContent(type="text", text=f"{job.id} finished (recorded by another "
                                         f"Atelier version; no preview). Files:\n{files}")],
                    structured_content=job.outcome)
            if job.reused:
                outcome.notes.append(f"idempotency_key matched job {job.id}: this is its result; "
                                     "nothing was sent again")
            return await render(outcome, mode, self.atelier.settings, self.atelier.previews,
                            self.atelier.thumbnails)
        raise ToolError(job_error_text(job))

    def _require_jobs(self) -> JobManager:
        if self.jobs is None:
            raise ToolError("background jobs are not enabled on this server")
        return self.jobs

    async def get_jobs(
        self,
        job_ids: Annotated[list[str] | None, Field(description="Omit to list recent jobs.")] = None,
        wait_s: Annotated[float, Field(ge=0, description="Wait up to this long (max 45 s) for all to finish.")] = 0,
    ) -> CallToolResult:
        jobs = self._require_jobs()
        settings = self.atelier.settings
        try:
            if not job_ids:
                recent = await jobs.recent(limit=20)
                lines = [job_line(job) for job in recent] or ["No jobs yet."]
                return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))],
                                      structured_content={"jobs": [j.summary() for j in recent]})
            ids = validate_job_ids(job_ids)
            limit = settings.jobs.handoff_after_s or MAX_WAIT_S
            found = await jobs.wait(ids, min(wait_s, limit, MAX_WAIT_S))
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
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
        return CallToolResult(content=content, structured_content={
            "jobs": entries, "all_finished": not pending, "pending": pending})

    async def cancel_job(self, job_id: str) -> CallToolResult:
        jobs = self._require_jobs()
        try:
            (job_id,) = validate_job_ids([job_id])
            job, message = await jobs.cancel(job_id)
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        return CallToolResult(content=[TextContent(type="text", text=f"{job_id}: {message}")],
                              structured_content={**job.summary(), "message": message})

    # -- edit sessions ------------------------------------------------------------------

    async def edit_session(
        self,
        ctx: Context,
        action: Annotated[Literal["start", "continue", "history", "list", "end"], Field(description=_SESSION_ACTION_DOC)],
        session_id: str | None = None,
        prompt: str | None = None,
        image: Annotated[str | None, Field(description="start from this image instead of a prompt")] = None,
        from_turn: Annotated[int | None, Field(description="continue from this turn (branch); default the latest")] = None,
        model: Annotated[str | None, Field(description="switch model (any that can edit)")] = None,
        images: Annotated[list[str] | None, Field(description="extra reference images")] = None,
        mask: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        output_format: str | None = None,
        options: dict[str, Any] | None = None,
        return_image: ReturnImage | None = None,
    ) -> CallToolResult:
        sessions = self.sessions
        if sessions is None:
            raise ToolError("edit sessions are not enabled on this server")
        settings = self.atelier.settings
        mode: ReturnImage = return_image or settings.preview.default
        call = ImageCall(**{k: v for k, v in dict(
            model=model, prompt=prompt, images=images or [], mask=mask, size=size,
            quality=quality, output_format=output_format, options=options or {},
        ).items() if v is not None})
        try:
            if action in ("continue", "history", "end") and not session_id:
                raise InvalidParameterError("session_id", None, f"is required for action={action}",
                                            fix="pass the session_id returned by action=start")
            if action == "list":
                views = sessions.list(include_ended=True, limit=20)
                lines = [_session_line(v) for v in views] or ["No sessions yet."]
                return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))],
                                      structured_content={"sessions": [v.summary() for v in views]})
            if action == "history":
                assert session_id is not None
                return await _history(sessions.get(session_id), settings, self.atelier.thumbnails)
            if action == "end":
                assert session_id is not None
                view = sessions.end(session_id)
                text = f"{_session_line(view)}. Its files stay in the output directory."
                return CallToolResult(content=[TextContent(type="text", text=text)],
                                      structured_content={"session": view.summary()})
            confirm = _live_confirm(ctx)  # sessions run in this request: ask when needed
            if action == "start":
                view, outcome = await sessions.start(prompt=prompt, image=image, call=call, confirm=confirm)
            else:
                assert session_id is not None
                view, outcome = await sessions.continue_(session_id, call=call, from_turn=from_turn,
                                                         confirm=confirm)
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        head = view.turns[view.head] if view.head is not None else None
        line = (f"Session {view.id}: turn {head.turn if head else 0}"
                + (f" (from turn {head.parent})" if head and head.parent is not None else "")
                + f"; continue with edit_session(action=\"continue\", session_id=\"{view.id}\", prompt=...).")
        if outcome is None:  # started from an existing image: nothing generated yet
            assert head is not None
            return CallToolResult(
                content=[TextContent(type="text", text=line + f" Turn 0 is {head.image_path}."),
                         ResourceLink(type="resource_link", uri=head.resource_uri or "", name=Path(head.image_path).name)],
                structured_content={"session": view.summary(), "turn": head.summary()})
        rendered = await render(outcome, mode, settings, self.atelier.previews,
                            self.atelier.thumbnails)
        rendered.content.insert(0, TextContent(type="text", text=line))
        rendered.structured_content = {"session": view.summary(), "turn": head.summary() if head else None,
                                       "outcome": rendered.structured_content}
        return rendered

    # -- cost ---------------------------------------------------------------------------

    async def get_usage(
        self, days: Annotated[int, Field(ge=1, le=366, description="Days back (UTC).")] = 30,
    ) -> CallToolResult:
        atelier = self.atelier
        report = await asyncio.to_thread(usage_report, atelier.ledger, days=days)
        limits = atelier.settings.cost.model_dump(exclude={"prices"}, exclude_none=True)
        report["limits"] = limits
        report["spent_this_run_usd"] = round(await asyncio.to_thread(
            atelier.ledger.spent, run_id=atelier.spend.run_id), 6)
        lines = [f"Spent ${report['total_usd']:.4f} on {report['images']} image(s) in "
                 f"{report['calls']} call(s) over the last {days} day(s) (estimates where the "
                 "provider reports no cost)."]
        lines += [f"  {model}: ${v['usd']:.4f}, {v['images']} image(s)" for model, v in report["by_model"].items()]
        if limits:
            lines.append("Limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
        return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))],
                              structured_content=report)

    async def list_available_models(
        self,
        provider: Annotated[str | None, Field(description="Only this provider.")] = None,
        capability: Annotated[Literal["generate", "edit", "variation"] | None, Field(description="Only models that can do this.")] = None,
    ) -> CallToolResult:
        try:
            data = self.atelier.describe_models(provider=provider, capability=capability)
        except AtelierError as exc:
            raise ToolError(str(exc)) from None
        models = data["models"]
        ready = [m["id"] for m in models if m["available"]]
        text = (f"{len(models)} model(s), {len(ready)} available: {', '.join(ready) or 'none'}."
                " Details in structured content.")
        if "plugin_problems" in data:
            text += " Some plugins failed to load (see plugin_problems)."

        return CallToolResult(
            content=[TextContent(type="text", text=text + "\n" + json.dumps(data, separators=(",", ":")))],
            structured_content=data,
        )


_GENERATE_DOC = (
    "Generate images from a prompt with any model. Saves full-size files; returns per image "
    "a small preview and a resource link, plus metadata (paths, applied parameters, cost). "
    "Unsupported parameters are refused with the allowed values."
)
_EDIT_DOC = (
    "Edit images (mask inpainting, composing several, restyling) with any model that can "
    "edit. Options and result as generate_image. No prompt: a variation, where supported."
)
_IDEMPOTENCY_DOC = "Same key + same request = the earlier result, never billed twice."
_AS_JOB_DOC = "Return a job id at once; collect with get_jobs."
_GET_JOBS_DOC = (
    "Status and results of background jobs (as_job, or calls still running after 45 s). "
    "Finished jobs return images like a direct call. The barrier: wait_s waits for all."
)
_CANCEL_JOB_DOC = (
    "Cancel a background job. A queued job is never sent; a running one is abandoned, but "
    "the provider may still bill it."
)
_LIST_DOC = (
    "List models: availability (or why not), operations, sizes, qualities, formats, limits, "
    "options, prices; and plugins that failed to load."
)


_SESSION_DOC = (
    "Multi-turn editing with any model that can edit, kept across restarts. start (prompt, or "
    "image) then continue with short prompts: each turn edits the latest output, or from_turn "
    "to branch. Also history, list, end. Defaults (size, quality, format) carry over."
)
_SESSION_ACTION_DOC = "start | continue | history | list | end"
_USAGE_DOC = "Spend so far (USD) by day, provider and model, and the configured limits."


def _session_line(view: SessionView) -> str:
    state = view.status if view.status == "open" else f"ended ({view.ended_reason})"
    model = view.defaults.get("model", "?")
    return f"{view.id}: {state}, {len(view.turns)} turn(s), model {model}"


def _history_thumbnails(view: SessionView, settings: Settings,
                        thumbnails: Thumbnails) -> dict[int, ImageContent | str]:
    """Per turn (newest first, within the inline budget): its thumbnail, or why there is
    none. One worker-thread job for the whole history; kept thumbnails are not re-made."""
    budget = settings.preview.max_full_inline_bytes
    found: dict[int, ImageContent | str] = {}
    for turn in reversed(view.turns):  # newest first: the budget favours recent turns
        path = Path(turn.image_path)
        if budget <= 0 or not path.is_file():
            continue
        try:
            thumb = thumbnails.get(path, max_edge=min(256, settings.preview.max_edge), max_bytes=30_000,
                                   fmt=settings.preview.format)
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
        text = (f"turn {turn.turn}" + (f" (from {turn.parent})" if turn.parent is not None else "")
                + f": {turn.operation} {turn.model or ''} {turn.prompt or ''}".rstrip())
        content.append(TextContent(type="text", text=text))
        thumb = thumbs.get(turn.turn)
        if isinstance(thumb, str):
            content.append(TextContent(type="text", text=thumb))
        elif thumb is not None:
            content.append(thumb)
        if turn.resource_uri:
            content.append(ResourceLink(type="resource_link", uri=turn.resource_uri,
                                        name=Path(turn.image_path).name))
    return CallToolResult(content=content, structured_content={
        "session": view.summary(), "turns": [t.summary() for t in view.turns]})


def build_tools(tools: Tools) -> list[Tool]:
    """The MCP tools over ``tools`` (job and session tools only when those are enabled)."""
    jobs, sessions = tools.jobs, tools.sessions
    # Not read-only (writes files, may spend money); destructive only with overwrite=true,
    # but the hint says "may", so it is set; open world: calls external providers.
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                             open_world_hint=True)
    return [
        compact_tool(tools.generate_image, name="generate_image", description=_GENERATE_DOC,
                     annotations=ToolAnnotations(title="Generate image", **hints(writes)),
                     output_schema=OUTCOME_SCHEMA),
        compact_tool(tools.edit_image, name="edit_image", description=_EDIT_DOC,
                     annotations=ToolAnnotations(title="Edit image", **hints(writes)),
                     output_schema=OUTCOME_SCHEMA),
        compact_tool(tools.list_available_models, name="list_available_models",
                     description=_LIST_DOC,
                     annotations=ToolAnnotations(title="List models", read_only_hint=True,
                                                 open_world_hint=False)),
        *([] if jobs is None else [
            compact_tool(tools.get_jobs, name="get_jobs", description=_GET_JOBS_DOC,
                         annotations=ToolAnnotations(title="Get jobs", read_only_hint=True,
                                                     open_world_hint=False)),
            compact_tool(tools.cancel_job, name="cancel_job", description=_CANCEL_JOB_DOC,
                         annotations=ToolAnnotations(title="Cancel job", read_only_hint=False,
                                                     destructive_hint=True, idempotent_hint=True,
                                                     open_world_hint=False)),
        ]),
        *([] if sessions is None else [
            compact_tool(tools.edit_session, name="edit_session", description=_SESSION_DOC,
                         annotations=ToolAnnotations(title="Edit session", **hints(writes))),
        ]),
        compact_tool(tools.get_usage, name="get_usage", description=_USAGE_DOC,
                     annotations=ToolAnnotations(title="Usage and spend", read_only_hint=True,
                                                 open_world_hint=False)),
    ]
