"""The MCP server: built from a pipeline, with its tools, tasks extension, resources and job manager.

The ``atelier_core.mcp`` wing is the only importer of the MCP SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus

from atelier_core import __version__
from atelier_core.engine.jobs import JobManager, build_jobs
from atelier_core.engine.library import open_work_images
from atelier_core.engine.memory import MemoryReturner
from atelier_core.engine.pipeline import Pipeline
from atelier_core.engine.reconcile import reconcile
from atelier_core.engine.sessions import SessionManager
from atelier_core.logging import add_secret, add_url_credentials, configure_logging, secrets_of
from atelier_core.mcp.auth import principal_scope
from atelier_core.mcp.library import VIEWER_TOOLS, LibraryMiddleware, view_meta, viewer_apps
from atelier_core.mcp.prompts import add_prompts
from atelier_core.mcp.protocol import error_codes, protocol_compat
from atelier_core.mcp.resources import add_image_resources, install_image_reads
from atelier_core.mcp.tasks import TasksExtension
from atelier_core.mcp.tools import Tools, build_tools
from atelier_core.mcp.warmup import WarmUp

log = structlog.get_logger("atelier.server")

INSTRUCTIONS = (
    "Atelier generates and edits images with many providers. Call list_available_models to "
    "see models and what each accepts; name one in model. Results are saved as files: each "
    "image comes back as a small preview plus a resource link (atelier://images/...) that "
    "edit_image accepts as input. The placeholder model draws placeholders, not AI images."
)


def build_server(atelier: Pipeline, *, configure_logs: bool = True) -> MCPServer[Pipeline]:
    """The MCP server for ``atelier`` (logging is configured first: MCPServer's own
    ``basicConfig`` is then a no-op and every log line goes through our redaction)."""
    # Provider secrets are registered when the registry is built (on first use, see
    # WarmUp); a registry passed in already built is covered here.
    built = atelier if atelier.registry_built else None
    secrets = secrets_of(atelier.settings, [p.settings for p in built.registry.providers.values()] if built else ())
    if configure_logs:
        configure_logging(atelier.settings.logging, secrets=secrets)
    for secret in secrets:
        add_secret(secret)  # results are scrubbed even when logging is configured elsewhere
    add_url_credentials(atelier.settings.model_dump(mode="json"))
    if built is not None:
        for provider in built.registry.providers.values():
            add_url_credentials(dict(provider.settings))  # e.g. a base_url with user:password@

    sessions = SessionManager(atelier)
    jobs = build_jobs(atelier, sessions)
    warm_up = WarmUp(atelier)
    tools = Tools(atelier, jobs, sessions)  # one instance: the tools and the tasks extension share it
    configure_retention(atelier, sessions, jobs)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Pipeline]) -> AsyncIterator[Pipeline]:
        log.debug("server session starting")
        # Memory a burst of large answers leaves behind goes back to the system.
        returner = asyncio.create_task(MemoryReturner().run())
        sweep: asyncio.Task[Any] | None = None
        # Images made before the index existed are indexed once from their sidecars.
        backfill = asyncio.ensure_future(_backfill(atelier))
        try:
            async with jobs.running():  # background jobs live as long as the server
                # What a crash left in the output folder, reconciled with the jobs just
                # recovered: off the event loop, never blocking start-up.
                sweep = asyncio.create_task(
                    reconcile(atelier.store, jobs.records, retention_s=atelier.settings.jobs.retention_days * 86_400)
                )
                yield atelier
        finally:
            returner.cancel()
            if sweep is not None:
                await asyncio.gather(sweep, return_exceptions=True)
            if warm_up.task is not None:
                await warm_up.task  # a thread cannot be cancelled; let it finish before closing
            await backfill
            await atelier.aclose()

    listed = build_tools(tools)
    for tool in listed:  # MCP Apps hosts show these results in the viewer; others ignore _meta
        if tool.name in VIEWER_TOOLS:
            tool.meta = {**(tool.meta or {}), **view_meta()}
    bus = InMemorySubscriptionBus()
    server: MCPServer[Pipeline] = MCPServer(
        "atelier",
        title="Atelier",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=listed,
        extensions=[TasksExtension(tools), viewer_apps()],
        subscriptions=bus,
        lifespan=lifespan,
        log_level=atelier.settings.logging.level,
        middleware=[
            principal_scope,
            protocol_compat,
            error_codes,
            warm_up.middleware,
            LibraryMiddleware(atelier.library, bus),
        ],
    )
    add_image_resources(server, atelier)
    install_image_reads(server, atelier)
    add_prompts(server)
    return server


def configure_retention(atelier: Pipeline, sessions: SessionManager, jobs: JobManager | None) -> None:
    """The library prunes by the configured limits, sparing what open sessions and
    unfinished jobs need."""
    library = atelier.library
    library.max_total_bytes = atelier.settings.library.max_total_bytes
    library.max_age_days = atelier.settings.library.max_age_days

    async def protected() -> set[str]:
        return await open_work_images(library, sessions, jobs)

    library.protected = protected


async def _backfill(atelier: Pipeline) -> None:
    try:
        await atelier.library.backfill()
    except Exception as exc:  # the index is a convenience: never stop the server for it
        log.warning("image index backfill failed", error=type(exc).__name__)


def serve_stdio(atelier: Pipeline) -> None:
    """Serve over stdio until the client disconnects (a request the SDK cannot decode
    still gets an error answer when its id can be recovered: see mcp/stdio.py)."""
    from atelier_core.mcp.stdio import run_stdio

    anyio.run(run_stdio, build_server(atelier))
