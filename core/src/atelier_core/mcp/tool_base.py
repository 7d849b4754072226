"""The state and plumbing the MCP tool groups share (see :mod:`atelier_core.mcp.tools`).

:class:`ToolsBase` holds the pipeline, the job and session managers and the per-job
inline-image choice; every tool group (image, job, session tools) derives from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field, ValidationError

from atelier_core.engine.jobs import JobManager
from atelier_core.engine.pipeline import CallOutcome, Pipeline, Plan
from atelier_core.engine.sessions import SessionManager
from atelier_core.mcp.render import ReturnImage, render
from atelier_core.mcp.schema import CodedToolError
from atelier_core.mcp.tasks import job_error_text, job_ticket, task_slot
from atelier_core.state.jobs import Job, JobState

log = structlog.get_logger("atelier.server")


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
class ToolsBase:
    """What every tool group shares: the services, spend confirmation and the job plumbing
    (a call handed to the job store, and a finished job answered as the call would have been)."""

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
