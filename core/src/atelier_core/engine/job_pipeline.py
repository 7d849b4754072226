"""The job manager of a server: :func:`build_jobs` and the runner it uses,
:func:`pipeline_runner` (a job's stored plan through the pipeline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from atelier_core.engine.job_run import JobRun, Runner
from atelier_core.engine.library import origin
from atelier_core.engine.plan import CallPlan, Plan
from atelier_core.engine.progress import SAVING_FRACTION, SENT_FRACTION
from atelier_core.media import images as imaging
from atelier_core.state.jobs import JobState

__all__ = ["build_jobs", "pipeline_runner"]

if TYPE_CHECKING:
    from atelier_core.engine.jobs import JobManager
    from atelier_core.engine.outcome import CallOutcome
    from atelier_core.engine.pipeline import Pipeline
    from atelier_core.engine.sessions import SessionManager


def pipeline_runner(pipeline: Pipeline, sessions: SessionManager | None = None) -> Runner:
    """The runner for stored jobs: the job's plan through the pipeline, its progress
    mapped to job stages. A job submitted in this process carries its
    :class:`~atelier_core.engine.plan.Plan` (inputs read once, outputs checked); a bare
    stored :class:`~atelier_core.engine.plan.CallPlan` is planned again. A plan that is an
    edit-session turn is recorded in its session when it has run."""

    async def run(job: JobRun) -> CallOutcome:
        plan = job.context
        if not isinstance(plan, Plan):
            spec = CallPlan.model_validate(job.request)
            plan = await pipeline.plan(spec.call, spec.operation, output=spec.output, confirmed=spec.confirmed)

        async def progress(fraction: float, message: str) -> None:
            stage = (
                JobState.SAVING
                if fraction >= SAVING_FRACTION
                else JobState.RUNNING
                if fraction > SENT_FRACTION
                else None
            )
            await job.progress(fraction, message, stage=stage)

        plan.job_id = job.job_id  # its files name the job, for start-up after a crash
        plan.vendor_task_sink = job.vendor_task  # a queue-based vendor's task id, kept with the job
        plan.resume_tasks = job.resume_tasks
        plan.keep_vendor_tasks = lambda: job.keeping
        session = plan.spec.session
        with origin(job_id=job.job_id, session_id=session["session_id"] if session else None):
            outcome = await pipeline.run(plan, progress=progress, partial=job.partial, saved=job.saved)
        if session is not None and sessions is not None:
            view = await sessions.record(session, outcome)
            outcome.notes.insert(0, f"session {view.id}: this is turn {view.head}")
            await pipeline.library.tag_turn([image.path for image in outcome.images], view.id, view.head)
        return outcome

    return run


def build_jobs(pipeline: Pipeline, sessions: SessionManager | None = None) -> JobManager:
    """The job manager on the state database in the data directory, running the pipeline."""
    from atelier_core.engine.jobs import JobManager  # here: jobs re-exports this module

    settings = pipeline.settings
    preview = settings.preview

    def shrink(data: bytes) -> tuple[bytes, str]:
        small = imaging.make_preview(data, max_edge=preview.max_edge, max_bytes=preview.max_bytes, fmt=preview.format)
        return small.data, small.mime_type

    return JobManager(
        pipeline.state,
        pipeline_runner(pipeline, sessions),
        settings.jobs,
        max_partial_bytes=preview.max_bytes,
        shrink_partial=shrink,
    )
