"""The job tools: ``get_jobs`` (status, results and the barrier) and ``cancel_job``."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ImageContent, TextContent
from pydantic import Field

from atelier_core.engine.jobs import JobManager
from atelier_core.mcp.render import ReturnImage
from atelier_core.mcp.reporting import ProgressReporter
from atelier_core.mcp.tasks import MAX_WAIT_S, job_line
from atelier_core.mcp.tool_base import ToolsBase
from atelier_core.mcp.tool_texts import WAIT_DOC
from atelier_core.state.jobs import Job, JobState, validate_job_ids

#: How often a get_jobs barrier reports progress while it waits.
_BARRIER_TICK_S = 5.0


class JobTools(ToolsBase):
    """``get_jobs`` and ``cancel_job`` (listed only when background jobs are enabled)."""

    __slots__ = ()

    async def get_jobs(
        self,
        ctx: Context,
        job_ids: Annotated[
            list[str] | None, Field(description="Omit: your unfinished (wait_s) or recent jobs.")
        ] = None,
        wait_s: Annotated[float, Field(ge=0, description=WAIT_DOC)] = 0,
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
