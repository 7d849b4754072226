"""The MCP tools: thin translations between MCP arguments and the pipeline.

:class:`Tools` gathers the tool groups: the image tools (:mod:`~atelier_core.mcp.image_tools`),
the job tools (:mod:`~atelier_core.mcp.job_tools`), the session tool
(:mod:`~atelier_core.mcp.session_tools`), and here the catalogue, usage and health tools;
their shared state and job plumbing is :mod:`~atelier_core.mcp.tool_base`, their texts
:mod:`~atelier_core.mcp.tool_texts`. :func:`build_tools` lists them for the server.

Tool bodies are a few lines: build an :class:`ImageCall`, call the router, render the
:class:`CallOutcome` (a text line, a bounded preview, a resource link per image, and the
outcome as structured content). Errors become tool errors with the router's message;
anything unexpected is logged here and reported as a generic internal error.

Adding a tool (jobs, sessions, usage): write the function, then add it in
:func:`build_tools` with :func:`compact_tool` so its schema stays small — every client sends
the whole ``tools/list`` to its model on every turn.
"""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from atelier_core.engine.cost import usage_report
from atelier_core.engine.health import health_report
from atelier_core.identity import current_principal
from atelier_core.mcp.catalogue import catalogue_text, health_text, summarize_model
from atelier_core.mcp.image_tools import ImageTools
from atelier_core.mcp.job_tools import JobTools
from atelier_core.mcp.library import FIND_DESCRIPTION, FindImages
from atelier_core.mcp.schema import OUTCOME_SCHEMA, compact_tool, hints
from atelier_core.mcp.session_tools import SessionTools
from atelier_core.mcp.tool_texts import (
    CANCEL_JOB_DOC,
    EDIT_DOC,
    GENERATE_DOC,
    GET_JOBS_DOC,
    HEALTH_DOC,
    LIST_DOC,
    SESSION_DOC,
    USAGE_DOC,
)


class Tools(ImageTools, JobTools, SessionTools):
    """The tool bodies: each translates MCP arguments into a pipeline call and back.

    Built as ``Tools(pipeline, jobs, sessions)``; the catalogue, usage and health tools are here.
    """

    __slots__ = ()

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
            description=GENERATE_DOC,
            annotations=ToolAnnotations(title="Generate image", **hints(writes)),
            output_schema=OUTCOME_SCHEMA,
        ),
        compact_tool(
            tools.edit_image,
            name="edit_image",
            description=EDIT_DOC,
            annotations=ToolAnnotations(title="Edit image", **hints(writes)),
            output_schema=OUTCOME_SCHEMA,
        ),
        compact_tool(
            tools.list_available_models,
            name="list_available_models",
            description=LIST_DOC,
            annotations=ToolAnnotations(title="List models", read_only_hint=True, open_world_hint=False),
        ),
        *(
            []
            if jobs is None
            else [
                compact_tool(
                    tools.get_jobs,
                    name="get_jobs",
                    description=GET_JOBS_DOC,
                    annotations=ToolAnnotations(title="Get jobs", read_only_hint=True, open_world_hint=False),
                ),
                compact_tool(
                    tools.cancel_job,
                    name="cancel_job",
                    description=CANCEL_JOB_DOC,
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
                    description=SESSION_DOC,
                    annotations=ToolAnnotations(title="Edit session", **hints(writes)),
                ),
            ]
        ),
        compact_tool(
            tools.get_usage,
            name="get_usage",
            description=USAGE_DOC,
            annotations=ToolAnnotations(title="Usage", read_only_hint=True, open_world_hint=False),
        ),
        compact_tool(
            tools.health,
            name="health",
            description=HEALTH_DOC,
            annotations=ToolAnnotations(title="Health", read_only_hint=True, open_world_hint=False),
        ),
        compact_tool(
            FindImages(tools.atelier.library, tools.atelier.resolve).__call__,
            name="find_images",
            description=FIND_DESCRIPTION,
            annotations=ToolAnnotations(title="Find images", read_only_hint=True, open_world_hint=False),
        ),
    ]
