"""Queue-based vendors (submit → poll → fetch): the contract kit's queue checks, the
vendor task id stored with the job, polling resumed after a restart, cancel reaching the
vendor — and a server that stops keeps the vendor task for the next start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from atelier_core import CallContext, ImageRequest, ProviderResult
from atelier_core.engine.jobs import build_jobs
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall
from atelier_core.state.jobs import JobState
from atelier_core.testing import FakeQueueProvider, FakeQueueVendor, ProviderContract, build_test_atelier, read_image

pytestmark = pytest.mark.anyio


class TestFakeQueueVendorContract(ProviderContract):
    """The kit's own fake queue vendor passes the kit, queue checks included."""

    refusals = False
    queue_based = True

    @pytest.fixture
    def plugin(self) -> object:
        return FakeQueueProvider(FakeQueueVendor(polls_before_done=2))

    @pytest.fixture
    def provider(self, plugin: FakeQueueProvider) -> FakeQueueProvider:
        return plugin

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"


class Forgetful(FakeQueueProvider):
    """Keeps the task ids it submitted in the instance: a new instance cannot resume."""

    def __init__(self, vendor: FakeQueueVendor | None = None) -> None:
        super().__init__(vendor)
        self.mine: set[str] = set()

    async def submit(self, request: ImageRequest, ctx: CallContext) -> str:
        task_id = await super().submit(request, ctx)
        self.mine.add(task_id)
        return task_id

    async def poll(self, task_id: str, request: ImageRequest, ctx: CallContext) -> ProviderResult | None:
        if task_id not in self.mine:
            from atelier_core import UpstreamError

            raise UpstreamError(f"unknown task {task_id}", code="upstream_not_found", provider=self.name)
        return await super().poll(task_id, request, ctx)


class Uncancellable(FakeQueueProvider):
    async def cancel(self, task_id: str) -> None:  # forgets to tell the vendor
        return None


async def test_the_kit_fails_a_queue_provider_that_cannot_resume_or_cancel() -> None:
    kit = ProviderContract()
    with pytest.raises(pytest.fail.Exception, match="resuming task 'task-1' in a new Forgetful failed"):
        await kit.test_queue_task_resumes_in_a_new_instance(Forgetful(FakeQueueVendor(polls_before_done=2)))
    vendor = FakeQueueVendor(hold=True)
    await kit.test_queue_cancel_cancels_the_vendor_task(Uncancellable(vendor))
    # The spy sees cancel() called, but this provider never told the vendor: a real
    # provider's test would see the vendor's task still running.
    assert vendor.cancelled == []


async def _wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    with anyio.fail_after(timeout_s):
        while not await predicate():
            await anyio.sleep(0.02)


async def test_a_job_resumes_polling_its_vendor_task_after_a_restart(tmp_path: Path) -> None:
    vendor = FakeQueueVendor(hold=True)  # outlives both "servers"
    first = build_test_atelier(tmp_path, [FakeQueueProvider(vendor)], jobs={"lease_s": 30.0})
    jobs = build_jobs(first)
    async with jobs.running():
        plan = await first.plan(ImageCall(model="queue/queued-image", prompt="a fox", n=2), Operation.GENERATE)
        job = await jobs.submit("generate", plan.spec, context=plan)

        async def task_recorded() -> bool:
            return bool((await jobs.get(job.id)).vendor_tasks)

        await _wait_for(task_recorded)
    stopped = await jobs.get(job.id)
    assert stopped.state is JobState.RUNNING, stopped  # kept for the next start, not failed
    assert stopped.vendor_tasks == {"0": "task-1"}
    assert vendor.cancelled == []  # and the vendor keeps working on it
    await first.aclose()

    vendor.release()
    second = build_test_atelier(tmp_path, [FakeQueueProvider(vendor)], jobs={"lease_s": 30.0})
    jobs = build_jobs(second)
    async with jobs.running():

        async def finished() -> bool:
            return (await jobs.get(job.id)).state.terminal

        await _wait_for(finished)
        done = await jobs.get(job.id)
    await second.aclose()
    assert done.state is JobState.DONE, done.error
    assert vendor.submitted == ["task-1"]  # polled again, never re-submitted
    images = done.outcome["images"]
    assert len(images) == 2
    for image in images:
        assert read_image(Path(image["path"]).read_bytes()).format == "png"


async def test_cancelling_a_job_cancels_the_vendor_task(tmp_path: Path) -> None:
    vendor = FakeQueueVendor(hold=True)
    atelier = build_test_atelier(tmp_path, [FakeQueueProvider(vendor)])
    jobs = build_jobs(atelier)
    async with jobs.running():
        plan = await atelier.plan(ImageCall(model="queue/queued-image", prompt="a fox"), Operation.GENERATE)
        job = await jobs.submit("generate", plan.spec, context=plan)

        async def task_recorded() -> bool:
            return bool((await jobs.get(job.id)).vendor_tasks)

        await _wait_for(task_recorded)
        await jobs.cancel(job.id)

        async def told() -> bool:
            return vendor.cancelled == ["task-1"]

        await _wait_for(told)
        assert (await jobs.get(job.id)).state is JobState.CANCELLED
    await atelier.aclose()
