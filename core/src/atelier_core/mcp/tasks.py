"""Background jobs seen through MCP: job tickets and lines, and SEP-2663 tasks on the job store."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    RequestParams,
    TextContent,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from atelier_core.engine.pipeline import CallOutcome
from atelier_core.plugin.errors import AtelierError, NotFoundError
from atelier_core.state.jobs import Job, JobState, iso_utc, validate_job_ids

if TYPE_CHECKING:
    from atelier_core.mcp.tools import Tools

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
_TASK_TOOLS = frozenset({"generate_image", "edit_image"})
MAX_WAIT_S = 45.0
_POLL_INTERVAL_MS = 1000


@dataclass(slots=True)
class TaskSlot:
    """Set while a task-capable client's tools/call runs: the tool submits a job here."""

    job: Job | None = None


task_slot: ContextVar[TaskSlot | None] = ContextVar("atelier_task_slot", default=None)


def job_error_text(job: Job) -> str:
    if job.state is JobState.CANCELLED:
        return f"job {job.id} was cancelled: {job.message}"
    error = job.error or {}
    return str(error.get("message") or f"job {job.id} failed")


def job_line(job: Job) -> str:
    parts = [f"{job.id}: {job.state.value}"]
    model = job.request.get("model") or job.request.get("call", {}).get("model")
    if model:
        parts.append(f"({model})")
    if job.state is JobState.FAILED or job.state is JobState.CANCELLED:
        parts.append(f"- {job_error_text(job)}")
    elif not job.terminal and job.message:
        share = f" {job.progress:.0%}" if job.progress is not None else ""
        parts.append(f"- {job.message}{share}")
    if job.may_be_billed:
        parts.append("(the provider may have billed it)")
    return " ".join(parts)


def job_ticket(job: Job, outcome: CallOutcome, *, handed_off: bool, after_s: float = 0.0) -> CallToolResult:
    """The answer when a call continues as a job: its id and how to collect the result."""
    collect = f'get_jobs(job_ids=["{job.id}"], wait_s=30)'
    if handed_off:
        text = (
            f"Still running after {after_s:g} s, so it continues in the background as job "
            f"{job.id} ({outcome.model}); it will not be sent again. Collect the result "
            f"with {collect}; cancel with cancel_job."
        )
    else:
        text = (
            f"Started background job {job.id} ({outcome.model}). Collect the result with "
            f"{collect}; cancel with cancel_job."
        )
    outcome = outcome.model_copy(update={"job": {**job.summary(), "handed_off": handed_off, "collect_with": collect}})
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=outcome.model_dump(mode="json")
    )


class TaskIdParams(RequestParams):
    task_id: str = Field(alias="taskId")


class TasksExtension(Extension):
    """SEP-2663 tasks (``io.modelcontextprotocol/tasks``, 2026-07-28 era) on the job store.

    When a request declares the extension, ``generate_image``/``edit_image`` answer with a
    task handle (``resultType: "task"``) once the job row is committed; ``tasks/get``
    reports it (the final ``CallToolResult`` inlined when completed), ``tasks/cancel``
    cancels it, ``tasks/update`` is acknowledged (these tasks never ask for input).
    Clients that do not declare it get ordinary results.
    """

    identifier = TASKS_EXTENSION

    def __init__(self, tools: Tools) -> None:
        self._tools = tools

    def methods(self) -> Sequence[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel),
            MethodBinding("tasks/update", TaskIdParams, self._update),
        ]

    @staticmethod
    def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
        caps = ctx.session.client_capabilities
        return (
            ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
            and caps is not None
            and bool(caps.extensions)
            and TASKS_EXTENSION in (caps.extensions or {})
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if params.name not in _TASK_TOOLS or self._tools.jobs is None or not self._declared(ctx):
            return await call_next(ctx)
        slot = TaskSlot()
        token = task_slot.set(slot)
        try:
            result = await call_next(ctx)
        finally:
            task_slot.reset(token)
        if slot.job is None:  # refused before a job existed (or a dry run): answer directly
            return result
        return {"resultType": "task", **self._task(slot.job)}

    async def _job(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> Job:
        if not self._declared(ctx):
            raise MCPError(
                -32021,
                "Missing required client capability",
                {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )
        jobs = self._tools.jobs
        try:
            if jobs is None:
                raise NotFoundError("background jobs are not enabled")
            (task_id,) = validate_job_ids([params.task_id])
            return await jobs.get(task_id)
        except AtelierError:
            raise MCPError(-32602, "Failed to retrieve task: Task not found") from None

    def _task(self, job: Job) -> dict[str, Any]:
        status = {JobState.DONE: "completed", JobState.CANCELLED: "cancelled"}.get(job.state, "working")
        if job.state is JobState.FAILED:
            # An Atelier error is a tool result (completed, isError); a lost process is not.
            code = (job.error or {}).get("code")
            status = "failed" if code in ("interrupted", "internal_error") else "completed"
        retention_ms = int(self._tools.atelier.settings.jobs.retention_days * 86_400_000)
        task: dict[str, Any] = {
            "taskId": job.id,
            "status": status,
            "createdAt": iso_utc(job.created_at),
            "lastUpdatedAt": iso_utc(job.updated_at),
            "ttlMs": retention_ms,
            "pollIntervalMs": _POLL_INTERVAL_MS,
        }
        message = job_line(job).split(": ", 1)[1]
        task["statusMessage"] = message
        if status == "failed":
            task["error"] = {"code": -32603, "message": job_error_text(job)}
        return task

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        job = await self._job(ctx, params)
        task = self._task(job)
        if task["status"] == "completed":
            mode = self._tools.mode_of(job)
            try:
                result = await self._tools._finished(job, mode)
            except ToolError as exc:
                result = CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
            task["result"] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {"resultType": "complete", **task}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        job = await self._job(ctx, params)
        assert self._tools.jobs is not None
        await self._tools.jobs.cancel(job.id)
        return {"resultType": "complete"}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        await self._job(ctx, params)  # known task; no input is ever outstanding: ignore
        return {"resultType": "complete"}
