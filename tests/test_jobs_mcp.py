"""Background jobs and MCP tasks through the MCP layer (in-memory client).

The provider is :class:`FakeProvider` with a scripted latency, so the figures here are
about Atelier's own scheduling: concurrency, the rate limiter, the barrier, hand-off and
task resolution.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolResult,
    EmptyResult,
    ImageContent,
    Request,
    RequestParams,
    Result,
    TextContent,
)
from pydantic import ConfigDict, Field

from atelier_core.engine.pipeline import Pipeline
from atelier_core.engine.throttle import LimiterPool
from atelier_core.mcp.app import build_server
from atelier_core.mcp.tasks import TASKS_EXTENSION
from atelier_core.plugin.errors import SafetyRefusalError
from atelier_core.testing.fakes import FakeProvider, Outcome
from atelier_core.testing.harness import build_test_atelier

MODEL = "fake/fake-image"


def make_atelier(
    tmp_path: Path, fake: FakeProvider, *, provider: dict[str, Any] | None = None, **jobs: Any
) -> Pipeline:
    return build_test_atelier(
        tmp_path,
        [fake],
        default_model=MODEL,
        providers={"fake": {"max_concurrency": 50, "max_retries": 0, **(provider or {})}},
        jobs={"handoff_after_s": 30.0, "lease_s": 5.0, **jobs},
    )


async def _connect(atelier: Pipeline, **options: Any) -> AsyncIterator[Client]:
    async with Client(build_server(atelier, configure_logs=False), **options) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def submit(client: Client, prompt: str, **extra: Any) -> str:
    # Small images: the fake draws them on the event loop, and this is about scheduling.
    args = {"prompt": prompt, "as_job": True, "size": "256x256", **extra}
    result = await client.call_tool("generate_image", args)
    assert not result.is_error, text_of(result)
    job = (result.structured_content or {})["job"]
    return str(job["job_id"])


async def get_jobs(client: Client, ids: list[str] | None = None, wait_s: float = 0) -> CallToolResult:
    args: dict[str, Any] = {"wait_s": wait_s}
    if ids is not None:
        args["job_ids"] = ids
    result = await client.call_tool("get_jobs", args)
    assert not result.is_error, text_of(result)
    return result


def states(result: CallToolResult) -> list[str]:
    return [job["state"] for job in (result.structured_content or {})["jobs"]]


async def test_as_job_returns_a_durable_id_at_once_and_results_match_a_direct_call(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=1.0)
    atelier = make_atelier(tmp_path, fake)
    async for client in _connect(atelier):
        await client.call_tool("generate_image", {"prompt": "warm-up", "dry_run": True})
        started = time.monotonic()
        ticket = await client.call_tool("generate_image", {"prompt": "a fox", "as_job": True})
        assert time.monotonic() - started < 0.8  # did not wait for the 1 s call
        job = ticket.structured_content["job"]
        assert job["state"] == "queued" and job["job_id"].startswith("job_")
        assert ticket.structured_content["model"] == MODEL
        assert ticket.structured_content["cost"]["estimate_usd"] is not None
        assert f'get_jobs(job_ids=["{job["job_id"]}"]' in text_of(ticket)
        # Durable before the answer: the row is in the database file already.
        import sqlite3

        conn = sqlite3.connect(tmp_path / "data" / "state.sqlite3")
        assert conn.execute("SELECT state FROM jobs WHERE id = ?", (job["job_id"],)).fetchone()
        conn.close()

        done = await get_jobs(client, [job["job_id"]], wait_s=5)
        direct = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert states(done) == ["done"]
    kinds = [type(block).__name__ for block in done.content]
    assert kinds == ["TextContent", "TextContent", "ImageContent", "ResourceLink"]
    assert [type(b).__name__ for b in direct.content] == kinds[1:]  # same content as a call
    result = done.structured_content["jobs"][0]["result"]
    assert result["model"] == MODEL and len(result["images"]) == 1
    assert Path(result["images"][0]["path"]).is_file()
    assert len(fake.calls) == 2


async def test_invalid_calls_are_refused_before_a_job_exists(tmp_path: Path) -> None:
    async for client in _connect(make_atelier(tmp_path, FakeProvider())):
        bad = await client.call_tool("generate_image", {"prompt": "x", "size": "7x7", "as_job": True})
        assert bad.is_error and "size" in text_of(bad)
        listed = await get_jobs(client)
    assert listed.structured_content == {"jobs": []}


async def test_twenty_jobs_run_concurrently_in_about_one_latency(tmp_path: Path) -> None:
    latency = 1.0
    fake = FakeProvider(latency_s=latency)
    async for client in _connect(make_atelier(tmp_path, fake)):
        await client.call_tool("generate_image", {"prompt": "warm-up", "dry_run": True})
        started = time.monotonic()
        ids = [await submit(client, f"picture {i}") for i in range(20)]
        submitted = time.monotonic()
        done = await get_jobs(client, ids, wait_s=20)
        wall = time.monotonic() - started
    assert states(done) == ["done"] * 20
    first = min(call.started for call in fake.calls)
    last = max(call.finished or 0 for call in fake.calls)
    print(
        f"20 jobs, latency {latency} s: submissions took {submitted - started:.2f} s, "
        f"provider calls spanned {last - first:.2f} s, last finished "
        f"{last - submitted:.2f} s after the last submission, barrier wall {wall:.2f} s, "
        f"max in flight {fake.max_in_flight}"
    )
    assert fake.max_in_flight == 20  # all overlapped
    assert last - submitted < 1.5 * latency  # once submitted, done in about one latency


async def test_a_burst_of_fifty_is_queued_and_runs_as_fast_as_the_cap_allows(tmp_path: Path) -> None:
    latency, cap = 0.1, 5
    fake = FakeProvider(latency_s=latency)
    atelier = make_atelier(tmp_path, fake, provider={"max_concurrency": cap})
    async for client in _connect(atelier):
        started = time.monotonic()
        ids = [await submit(client, f"p{i}") for i in range(50)]
        submitting = time.monotonic() - started
        early = await get_jobs(client, ids)
        assert states(early).count("queued") >= 10  # accepted at once, waiting for a slot
        done = await get_jobs(client, ids, wait_s=20)
    assert states(done) == ["done"] * 50
    first = min(call.started for call in fake.calls)
    last = max(call.finished or 0 for call in fake.calls)
    waves = 50 / cap
    print(
        f"burst of 50, cap {cap}, latency {latency} s: provider span {last - first:.2f} s "
        f"({waves:.0f} waves = {waves * latency:.1f} s minimum), max in flight {fake.max_in_flight}"
    )
    assert fake.max_in_flight == cap  # never faster
    assert last - first >= waves * latency * 0.95
    # About as fast as allowed (or as the 50 submissions arrived, on a loaded machine).
    assert last - first < max(waves * latency, submitting) * 2


async def test_a_rate_limit_is_respected_under_a_burst(tmp_path: Path) -> None:
    # Time runs 60x faster for the limiter: its 60 s window is 1 s of real time.
    scale = 60.0
    rpm = 4

    def clock() -> float:
        return time.monotonic() * scale

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / scale)

    fake = FakeProvider(latency_s=0.01)
    atelier = make_atelier(tmp_path, fake, provider={"requests_per_minute": rpm})
    atelier.limits = LimiterPool(clock=clock, sleep=sleep)
    async for client in _connect(atelier):
        ids = [await submit(client, f"burst {i}") for i in range(10)]
        sync_call = await client.call_tool("generate_image", {"prompt": "synchronous, same limiter"})
        assert not sync_call.is_error
        done = await get_jobs(client, ids, wait_s=10)
    assert states(done) == ["done"] * 10
    starts = sorted(call.started * scale for call in fake.calls)  # limiter seconds
    assert len(starts) == 11
    gaps = [starts[i + rpm] - starts[i] for i in range(len(starts) - rpm)]
    print(f"{rpm}/min burst of 11: windows of {rpm + 1} starts span >= {min(gaps):.1f} limiter-seconds (60 required)")
    # Never more than rpm starts in any 60 s window, as the provider saw them (10% allowed
    # for the jitter between admission and the provider's clock: a durable write sits there).
    assert min(gaps) >= 60 * 0.9


async def test_the_barrier_returns_on_timeout_with_per_job_states(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=0.05)
    fake.when(lambda request: request.prompt == "slow", Outcome(delay_s=1.5))
    async for client in _connect(make_atelier(tmp_path, fake)):
        fast = [await submit(client, "fast") for _ in range(2)]
        slow = await submit(client, "slow")
        started = time.monotonic()
        partial = await get_jobs(client, [*fast, slow], wait_s=0.6)
        waited = time.monotonic() - started
        assert 0.5 < waited < 2
        assert states(partial) == ["done", "done", "running"]
        data = partial.structured_content or {}
        assert data["all_finished"] is False and data["pending"] == [slow]
        assert "running" in text_of(partial)
        started = time.monotonic()
        finished = await get_jobs(client, [*fast, slow], wait_s=10)
        assert 0.8 < time.monotonic() - started + waited < 4  # returned when the last one did
    assert states(finished) == ["done"] * 3
    assert (finished.structured_content or {})["all_finished"] is True


async def test_cancel_prevents_a_queued_call_and_flags_a_running_one(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=5)
    atelier = make_atelier(tmp_path, fake, provider={"max_concurrency": 1})
    async for client in _connect(atelier):
        running = await submit(client, "holds the slot")
        queued = await submit(client, "waits")
        with anyio.fail_after(3):
            while states(await get_jobs(client, [running])) != ["running"]:
                await anyio.sleep(0.02)
        cancelled = await client.call_tool("cancel_job", {"job_id": queued})
        assert "nothing was billed" in text_of(cancelled)
        stopped = await client.call_tool("cancel_job", {"job_id": running})
        assert "may still bill" in text_of(stopped)
        assert (stopped.structured_content or {})["may_be_billed"] is True
        final = await get_jobs(client, [running, queued])
        again = await client.call_tool("cancel_job", {"job_id": running})
        unknown = await client.call_tool("cancel_job", {"job_id": "job_doesnotexist"})
    assert states(final) == ["cancelled", "cancelled"]
    assert len(fake.calls) == 1  # the queued one never reached the provider
    assert "already finished" in text_of(again)
    assert unknown.is_error and "no job" in text_of(unknown)


async def test_a_failed_job_reports_the_error_like_a_call(tmp_path: Path) -> None:
    fake = FakeProvider()
    fake.script(Outcome(error=SafetyRefusalError("refused: moderation_blocked", provider="fake")))
    async for client in _connect(make_atelier(tmp_path, fake)):
        job = await submit(client, "something refused")
        failed = await get_jobs(client, [job], wait_s=5)
    entry = (failed.structured_content or {})["jobs"][0]
    assert entry["state"] == "failed" and entry["error"]["code"] == "safety_refusal"
    assert "moderation_blocked" in text_of(failed)


async def test_a_slow_call_is_handed_off_and_completes_without_being_resent(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=1.5)
    atelier = make_atelier(tmp_path, fake, handoff_after_s=0.3)
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async for client in _connect(atelier):
        await client.call_tool("generate_image", {"prompt": "warm-up", "dry_run": True})
        started = time.monotonic()
        result = await client.call_tool("generate_image", {"prompt": "slow"}, progress_callback=on_progress)
        assert time.monotonic() - started < 1.2  # answered long before the 1.5 s call ended
        assert not result.is_error
        job = (result.structured_content or {})["job"]
        assert job["handed_off"] is True and job["state"] in ("queued", "running")
        assert "continues in the background" in text_of(result)
        listed = await get_jobs(client)
        assert job["job_id"] in [j["job_id"] for j in (listed.structured_content or {})["jobs"]]
        with anyio.fail_after(5):  # wait_s is capped at handoff_after_s (0.3 s here)
            while states(done := await get_jobs(client, [job["job_id"]], wait_s=5)) != ["done"]:
                pass
    assert any(isinstance(block, ImageContent) for block in done.content)
    assert len(fake.calls) == 1  # continued, never re-sent
    assert any("sent to" in message for message in messages)


class StreamingFake(FakeProvider):
    """Streams one partial image, then keeps working for ``hold_s``."""

    hold_s = 1.0

    async def _perform(self, request: Any, ctx: Any, outcome: Outcome) -> Any:
        from atelier_core.testing.samples import make_image

        await ctx.partial_image(make_image(64, 64, "png"), 0)
        await ctx.progress(0.5, "partial 1 of 2")
        await asyncio.sleep(self.hold_s)
        return await super()._perform(request, ctx, Outcome(delay_s=0))


async def test_job_status_shows_the_stage_and_the_latest_partial_preview(tmp_path: Path) -> None:
    fake = StreamingFake()
    async for client in _connect(make_atelier(tmp_path, fake)):
        job = await submit(client, "streams")
        with anyio.fail_after(5):
            while True:
                status = await get_jobs(client, [job])
                entry = (status.structured_content or {})["jobs"][0]
                if entry.get("partial_preview", {}).get("available"):
                    break
                await anyio.sleep(0.05)
        done = await get_jobs(client, [job], wait_s=5)
    assert entry["state"] == "running" and entry["stage"] == "partial 1 of 2"
    assert 0.1 < entry["progress"] < 0.85
    assert [type(b).__name__ for b in status.content] == ["TextContent", "ImageContent"]
    assert "partial 1 of 2" in text_of(status)
    assert states(done) == ["done"] and "partial_preview" not in (done.structured_content or {})["jobs"][0]


async def test_a_client_giving_up_on_a_plain_call_cancels_its_job(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=5)
    async for client in _connect(make_atelier(tmp_path, fake)):
        with anyio.move_on_after(0.5):
            await client.call_tool("generate_image", {"prompt": "abandoned", "size": "256x256"})
        await anyio.sleep(0.3)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "data" / "state.sqlite3")
    rows = conn.execute("SELECT state, may_be_billed FROM jobs").fetchall()
    conn.close()
    assert rows == [("cancelled", 1)]  # abandoned, never handed off, never re-sent
    assert len(fake.calls) == 1


# -- MCP tasks (SEP-2663) ------------------------------------------------------------------


class TaskIdParams(RequestParams):
    task_id: str = Field(alias="taskId")


class CreateTaskResult(Result):
    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str = Field(alias="taskId")
    status: str
    poll_interval_ms: int | None = Field(None, alias="pollIntervalMs")


class DetailedTask(Result):
    model_config = ConfigDict(extra="allow")
    task_id: str = Field(alias="taskId")
    status: str
    status_message: str | None = Field(None, alias="statusMessage")
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class GetTaskRequest(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams


class CancelTaskRequest(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams


class ClientTasks(ClientExtension):
    """A task-capable client: declares the extension and polls tasks/get to the end."""

    identifier = TASKS_EXTENSION

    def __init__(self) -> None:
        self.created: list[CreateTaskResult] = []
        self.polled: list[str] = []

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self.resolve)]

    async def resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        self.created.append(created)
        with anyio.fail_after(10):
            while True:
                task = await ctx.session.send_request(
                    GetTaskRequest(params=TaskIdParams(taskId=created.task_id)), DetailedTask
                )
                self.polled.append(task.status)
                if task.status == "completed":
                    assert task.result is not None
                    return CallToolResult.model_validate(task.result)
                if task.status in ("failed", "cancelled"):
                    raise RuntimeError(f"task {task.status}: {task.error or task.status_message}")
                await anyio.sleep(0.05)


async def test_a_task_capable_client_runs_generate_as_a_task_end_to_end(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=0.3)
    tasks = ClientTasks()
    atelier = make_atelier(tmp_path, fake)
    async for client in _connect(atelier, extensions=[tasks]):
        result = await client.call_tool("generate_image", {"prompt": "a task"})
        listed = await get_jobs(client)
        missing = None
        try:
            await client.session.send_request(GetTaskRequest(params=TaskIdParams(taskId="job_nope")), DetailedTask)
        except MCPError as exc:
            missing = exc
    assert not result.is_error
    assert [type(b).__name__ for b in result.content] == ["TextContent", "ImageContent", "ResourceLink"]
    assert (result.structured_content or {})["model"] == MODEL
    (created,) = tasks.created
    assert created.status == "working" and created.task_id.startswith("job_")
    assert created.poll_interval_ms == 1000
    assert tasks.polled[-1] == "completed" and "working" in tasks.polled
    jobs = (listed.structured_content or {})["jobs"]
    assert [(j["job_id"], j["state"]) for j in jobs] == [(created.task_id, "done")]
    assert missing is not None and missing.code == -32602
    assert len(fake.calls) == 1


async def test_task_refusals_and_cancel(tmp_path: Path) -> None:
    fake = FakeProvider(latency_s=5)
    tasks = ClientTasks()
    async for client in _connect(make_atelier(tmp_path, fake), extensions=[tasks]):
        # A bad call is answered at once with the tool error, no task.
        bad = await client.call_tool("generate_image", {"prompt": "x", "size": "7x7"})
        assert bad.is_error and not tasks.created
        # Cancel through tasks/cancel: start a task without resolving it.
        raw = await client.session.call_tool("generate_image", {"prompt": "to cancel"}, allow_claimed=True)
        assert isinstance(raw, CreateTaskResult)
        ack = await client.session.send_request(CancelTaskRequest(params=TaskIdParams(taskId=raw.task_id)), EmptyResult)
        task = await client.session.send_request(GetTaskRequest(params=TaskIdParams(taskId=raw.task_id)), DetailedTask)
    assert isinstance(ack, EmptyResult)
    assert task.status == "cancelled"


async def test_clients_without_the_extension_get_ordinary_results(tmp_path: Path) -> None:
    for era in ("auto", "legacy"):
        async for client in _connect(make_atelier(tmp_path / era, FakeProvider()), mode=era):
            result = await client.call_tool("generate_image", {"prompt": "plain"})
            listed = await get_jobs(client)
            refused = None
            if era == "auto":
                try:
                    await client.session.send_request(GetTaskRequest(params=TaskIdParams(taskId="job_x")), DetailedTask)
                except MCPError as exc:
                    refused = exc
        assert not result.is_error and (result.structured_content or {})["job"] is None
        assert listed.structured_content == {"jobs": []}  # a plain call is not a listed job
        if era == "auto":
            assert refused is not None and refused.code == -32021


async def test_get_jobs_refuses_malformed_ids_and_bounds_waits(tmp_path: Path) -> None:
    async for client in _connect(make_atelier(tmp_path, FakeProvider())):
        bad = await client.call_tool("get_jobs", {"job_ids": ["../../etc/passwd"]})
        many = await client.call_tool("get_jobs", {"job_ids": [f"job_{i}" for i in range(60)]})
        negative = await client.call_tool("get_jobs", {"wait_s": -1})
    assert bad.is_error and "job ids look like" in text_of(bad)
    assert many.is_error and "at most 50" in text_of(many)
    assert negative.is_error
    assert json.dumps(bad.model_dump(mode="json"))  # serialisable, no internals


async def test_a_result_recorded_by_another_release_is_reported_not_crashed_on(tmp_path: Path) -> None:
    import sqlite3

    async for client in _connect(make_atelier(tmp_path, FakeProvider())):
        job = await submit(client, "from the past")
        assert states(await get_jobs(client, [job], wait_s=5)) == ["done"]
        drifted = {"model": MODEL, "images": [], "field_from_the_future": 1}
        conn = sqlite3.connect(tmp_path / "data" / "state.sqlite3")
        with conn:
            conn.execute("UPDATE jobs SET outcome = ? WHERE id = ?", (json.dumps(drifted), job))
        conn.close()
        result = await get_jobs(client, [job])
    assert "recorded by another Atelier version" in text_of(result)
    assert (result.structured_content or {})["jobs"][0]["result"] == drifted
