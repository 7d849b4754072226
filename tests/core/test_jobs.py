"""JobManager against a scripted runner: durability, concurrency, the barrier,
cancellation (queued vs running), hand-off, leases and recovery, pruning."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from atelier_core.engine.jobs import JobManager, JobRun
from atelier_core.plugin.errors import InvalidParameterError, NotFoundError
from atelier_core.settings import JobSettings
from atelier_core.state.db import Database
from atelier_core.state.jobs import JobState, new_job_id, validate_job_ids
from atelier_core.state.store import StateStore


class FakeWork:
    """A scripted runner: waits for a slot (queued), 'calls the provider', returns."""

    def __init__(self, latency_s: float = 0.05, slots: int = 1000) -> None:
        self.latency_s = latency_s
        self.slots = anyio.Semaphore(slots)
        self.calls: list[str] = []
        self.gate: anyio.Event | None = None
        self.fail_with: Exception | None = None

    async def __call__(self, run: JobRun) -> dict[str, Any]:
        async with self.slots:
            if self.gate is not None:
                await self.gate.wait()
            await run.stage(JobState.RUNNING, "calling the provider")
            self.calls.append(run.job_id)
            await run.progress(0.5, "halfway")
            await run.partial(b"\x89PNG fake partial", 0)
            await anyio.sleep(self.latency_s)
            if self.fail_with is not None:
                raise self.fail_with
            await run.stage(JobState.SAVING)
            return {"images": [{"path": f"/tmp/{run.job_id}.png"}], "prompt": run.request["prompt"]}


def _settings(**overrides: Any) -> JobSettings:
    values: dict[str, Any] = {"handoff_after_s": 5.0, "lease_s": 0.6, "retention_days": 30.0}
    values.update(overrides)
    return JobSettings(**values)


_OPEN: list[StateStore] = []


def _store(path: Path) -> StateStore:
    """The default SQLite state file in ``path`` (connected on first use, closed after the test)."""
    store = StateStore(Database(None, path))
    _OPEN.append(store)
    return store


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


@asynccontextmanager
async def manager(path: Path, work: FakeWork, **settings: Any) -> AsyncIterator[JobManager]:
    jobs = JobManager(_store(path), work, _settings(**settings))
    async with jobs.running():
        yield jobs


def _raw(path: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path / "state.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_job_ids_are_128_bit_random_and_unordered() -> None:
    ids = [new_job_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"job_[A-Za-z0-9_-]{22}", i) for i in ids)
    assert sorted(ids) != ids  # not sequential
    assert len({i[4:8] for i in ids}) > 4000  # no shared prefix


async def test_submit_returns_after_the_row_is_committed(tmp_path: Path) -> None:
    work = FakeWork()
    work.gate = anyio.Event()
    async with manager(tmp_path, work) as jobs:
        job = await jobs.submit("generate", {"prompt": "a fox"})
        # A separate connection (another process) sees it at once.
        rows = _raw(tmp_path, "SELECT state, request FROM jobs WHERE id = ?", job.id)
        assert rows and rows[0]["state"] == "queued"
        assert json.loads(rows[0]["request"]) == {"prompt": "a fox"}
        assert work.calls == []
        work.gate.set()
        (done,) = await jobs.wait([job.id], 5)
    assert done.state is JobState.DONE
    assert done.outcome == {"images": [{"path": f"/tmp/{job.id}.png"}], "prompt": "a fox"}
    assert done.files == [f"/tmp/{job.id}.png"]
    assert done.started_at is not None and done.finished_at is not None


async def test_twenty_jobs_finish_in_about_one_latency(tmp_path: Path) -> None:
    work = FakeWork(latency_s=0.5)
    async with manager(tmp_path, work) as jobs:
        ids = [(await jobs.submit("generate", {"prompt": f"p{i}"})).id for i in range(20)]
        finished = await jobs.wait(ids, 10)
    assert [job.state for job in finished] == [JobState.DONE] * 20
    assert len(work.calls) == 20
    # Submissions are serial durable commits (an fsync each); the work itself overlaps:
    # from the first provider call to the last finish is about one latency.
    span = max(j.finished_at or 0 for j in finished) - min(j.started_at or 0 for j in finished)
    assert span < 1.5 * work.latency_s, span


async def test_the_barrier_returns_on_timeout_with_per_job_states(tmp_path: Path) -> None:
    work = FakeWork(latency_s=0.05)
    slow = FakeWork(latency_s=5)

    async def runner(run: JobRun) -> dict[str, Any]:
        return await (slow if run.request["prompt"] == "slow" else work)(run)

    jobs = JobManager(_store(tmp_path), runner, _settings())
    async with jobs.running():
        fast_ids = [(await jobs.submit("generate", {"prompt": "fast"})).id for _ in range(2)]
        slow_id = (await jobs.submit("generate", {"prompt": "slow"})).id
        started = time.monotonic()
        states = await jobs.wait([*fast_ids, slow_id], 0.4)
        waited = time.monotonic() - started
        assert 0.35 < waited < 1.5
        assert [job.state for job in states] == [JobState.DONE, JobState.DONE, JobState.RUNNING]
        assert states[2].summary()["stage"] == "halfway"
        assert states[2].summary()["partial_preview"] == {"index": 0, "available": True}
        # All done -> the barrier returns as soon as the last one finishes.
        started = time.monotonic()
        again = await jobs.wait(fast_ids, 30)
        assert time.monotonic() - started < 0.2
        assert all(job.terminal for job in again)
        await jobs.cancel(slow_id)


async def test_unknown_and_malformed_job_ids_are_not_found(tmp_path: Path) -> None:
    async with manager(tmp_path, FakeWork()) as jobs:
        with pytest.raises(NotFoundError) as caught:
            await jobs.get(new_job_id())
        assert caught.value.parameter == "job_ids"
        assert "get_jobs without job_ids" in str(caught.value)
    with pytest.raises(NotFoundError):
        validate_job_ids(["../../etc/passwd"])
    with pytest.raises(InvalidParameterError):
        validate_job_ids([new_job_id() for _ in range(51)])


async def test_cancelling_a_queued_job_prevents_the_call(tmp_path: Path) -> None:
    work = FakeWork(slots=1)
    work.gate = anyio.Event()
    async with manager(tmp_path, work) as jobs:
        first = await jobs.submit("generate", {"prompt": "holds the only slot"})
        queued = await jobs.submit("generate", {"prompt": "waits"})
        await anyio.sleep(0.05)
        job, message = await jobs.cancel(queued.id)
        assert job.state is JobState.CANCELLED and not job.may_be_billed
        assert "nothing was billed" in message
        work.gate.set()
        await jobs.wait([first.id], 5)
        await anyio.sleep(0.05)
        final = await jobs.get(queued.id)
    assert work.calls == [first.id]  # the cancelled job never reached the provider
    assert final.state is JobState.CANCELLED


async def test_cancelling_a_running_job_records_that_it_may_be_billed(tmp_path: Path) -> None:
    work = FakeWork(latency_s=10)
    async with manager(tmp_path, work) as jobs:
        job = await jobs.submit("generate", {"prompt": "slow"})
        with anyio.fail_after(5):
            while (await jobs.get(job.id)).state is not JobState.RUNNING:
                await anyio.sleep(0.02)
        started = time.monotonic()
        cancelled, message = await jobs.cancel(job.id)
        assert time.monotonic() - started < 1
        assert cancelled.state is JobState.CANCELLED and cancelled.may_be_billed
        assert "may still bill" in message
        assert cancelled.summary()["may_be_billed"] is True
        # Terminal states are final: a second cancel is a no-op that says so.
        again, message = await jobs.cancel(job.id)
        assert again.state is JobState.CANCELLED
        assert "already finished" in message


async def test_a_failing_call_ends_failed_with_the_error(tmp_path: Path) -> None:
    work = FakeWork()
    work.fail_with = InvalidParameterError("size", "7x7", "is not allowed", allowed=["1024x1024"])
    async with manager(tmp_path, work) as jobs:
        job = await jobs.submit("generate", {"prompt": "x"})
        (failed,) = await jobs.wait([job.id], 5)
    assert failed.state is JobState.FAILED
    assert failed.error is not None and failed.error["code"] == "invalid_parameter"
    assert failed.summary()["error"]["parameter"] == "size"


async def test_a_crashing_runner_fails_the_job_without_leaking_details(tmp_path: Path) -> None:
    work = FakeWork()
    work.fail_with = RuntimeError("secret internal detail sk-123")
    async with manager(tmp_path, work) as jobs:
        job = await jobs.submit("generate", {"prompt": "x"})
        (failed,) = await jobs.wait([job.id], 5)
    assert failed.error is not None and failed.error["code"] == "internal_error"
    assert "sk-123" not in json.dumps(failed.error)


async def test_call_returns_the_result_or_hands_off_and_keeps_running(tmp_path: Path) -> None:
    work = FakeWork(latency_s=0.02)
    seen: list[tuple[float | None, str]] = []

    async def on_progress(fraction: float | None, message: str) -> None:
        seen.append((fraction, message))

    async with manager(tmp_path, work) as jobs:
        quick = await jobs.call("generate", {"prompt": "quick"}, on_progress=on_progress)
        assert quick.state is JobState.DONE and quick.origin == "call"
        assert (0.5, "halfway") in seen
        work.latency_s = 0.6
        started = time.monotonic()
        handed = await jobs.call("generate", {"prompt": "slow"}, handoff_after_s=0.2)
        assert 0.15 < time.monotonic() - started < 0.5
        assert not handed.terminal and handed.origin == "handoff"
        listed = [job.id for job in await jobs.recent()]
        assert handed.id in listed and quick.id not in listed  # plain calls stay unlisted
        (done,) = await jobs.wait([handed.id], 5)
    assert done.state is JobState.DONE
    assert work.calls.count(handed.id) == 1  # continued, never re-sent


async def test_a_caller_that_gives_up_cancels_its_call(tmp_path: Path) -> None:
    work = FakeWork(latency_s=10)
    async with manager(tmp_path, work) as jobs:
        with anyio.move_on_after(0.3):
            await jobs.call("generate", {"prompt": "abandoned"})
        await anyio.sleep(0.05)
        rows = _raw(tmp_path, "SELECT state, may_be_billed FROM jobs")
    assert [(r["state"], r["may_be_billed"]) for r in rows] == [("cancelled", 1)]


def _insert_foreign(path: Path, *, state: str, host: str, pid: int, lease_until: float) -> str:
    job_id = new_job_id()
    now = time.time()
    conn = sqlite3.connect(path / "state.sqlite3")
    try:
        with conn:
            conn.execute(
                "INSERT INTO jobs (id, operation, origin, state, request, owner, owner_host, owner_pid,"
                " lease_until, created_at, updated_at) VALUES (?, 'generate', 'job', ?, '{}', ?, ?, ?, ?, ?, ?)",
                (job_id, state, f"{host}:{pid}:dead", host, pid, lease_until, now, now),
            )
    finally:
        conn.close()
    return job_id


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_recovery_interrupts_jobs_of_dead_owners_only(tmp_path: Path) -> None:
    import socket

    await _store(tmp_path).ready()  # creates the schema
    host, far = socket.gethostname(), time.time() + 3600
    dead_running = _insert_foreign(tmp_path, state="running", host=host, pid=_dead_pid(), lease_until=far)
    dead_queued = _insert_foreign(tmp_path, state="queued", host=host, pid=_dead_pid(), lease_until=far)
    expired = _insert_foreign(tmp_path, state="saving", host="elsewhere", pid=1, lease_until=time.time() - 1)
    live_remote = _insert_foreign(tmp_path, state="running", host="elsewhere", pid=1, lease_until=far)
    live_local = _insert_foreign(tmp_path, state="running", host=host, pid=os.getppid(), lease_until=far)
    async with manager(tmp_path, FakeWork()) as jobs:
        states = {
            job.id: job for job in await jobs.get_many([dead_running, dead_queued, expired, live_remote, live_local])
        }
    for job_id in (dead_running, dead_queued, expired):
        job = states[job_id]
        assert job.state is JobState.FAILED and job.message == "failed: interrupted"
        assert job.error is not None and job.error["code"] == "interrupted"
    assert states[dead_running].may_be_billed
    assert "may have billed" in (states[dead_running].error or {})["message"]
    assert not states[dead_queued].may_be_billed
    assert "nothing was billed" in (states[dead_queued].error or {})["message"]
    # A live owner elsewhere (lease valid) or on this host (pid alive) keeps its jobs.
    assert states[live_remote].state is JobState.RUNNING
    assert states[live_local].state is JobState.RUNNING


async def test_two_live_managers_share_the_database_without_stealing_jobs(tmp_path: Path) -> None:
    slow = FakeWork(latency_s=10)
    async with manager(tmp_path, slow, lease_s=0.3) as first:
        job = await first.submit("generate", {"prompt": "owned by the first"})
        async with manager(tmp_path, FakeWork(), lease_s=0.3) as second:
            await anyio.sleep(0.8)  # several heartbeats and recoveries of both
            assert (await second.get(job.id)).state is JobState.RUNNING
            # The second process cannot stop the work itself; it asks the owner.
            _, message = await second.cancel(job.id)
            assert "another server process" in message
            with anyio.fail_after(3):
                while not (await second.get(job.id)).terminal:
                    await anyio.sleep(0.05)
            final = await second.get(job.id)
    assert final.state is JobState.CANCELLED and final.may_be_billed


async def test_an_expired_lease_is_interrupted_by_a_running_peer(tmp_path: Path) -> None:
    async with manager(tmp_path, FakeWork(), lease_s=0.3) as jobs:
        stale = _insert_foreign(tmp_path, state="running", host="elsewhere", pid=1, lease_until=time.time() + 0.2)
        with anyio.fail_after(3):
            while not (await jobs.get(stale)).terminal:
                await anyio.sleep(0.05)
        assert (await jobs.get(stale)).error == {
            "code": "interrupted",
            "message": "Job interrupted: the server process running it stopped while the provider "
            "was working on it; the provider may have billed for it, and it was not re-sent.",
            "retryable": True,
            "fix": "submit the call again if you still want the image",
        }


async def test_stopping_the_manager_interrupts_its_unfinished_jobs(tmp_path: Path) -> None:
    async with manager(tmp_path, FakeWork(latency_s=10)) as jobs:
        job = await jobs.submit("generate", {"prompt": "x"})
        await anyio.sleep(0.05)
    async with manager(tmp_path, FakeWork()) as jobs:
        final = await jobs.get(job.id)
    assert final.state is JobState.FAILED and final.error and final.error["code"] == "interrupted"


async def test_pruning_removes_old_finished_jobs_and_keeps_files_by_default(tmp_path: Path) -> None:
    async def prune_round(name: str, *, delete: bool) -> Path:
        image = tmp_path / f"{name}.png"
        image.write_bytes(b"png")
        gate = anyio.Event()

        async def run(run: JobRun) -> dict[str, Any]:
            if run.request["prompt"] == "unfinished":
                await gate.wait()
            return {"images": [{"path": str(image)}]}

        jobs = JobManager(_store(tmp_path / name), run, _settings(retention_days=1, delete_files_on_prune=delete))
        async with jobs.running():
            old = await jobs.submit("generate", {"prompt": "old"})
            await jobs.wait([old.id], 5)
            unfinished = await jobs.submit("generate", {"prompt": "unfinished"})
            assert await jobs.prune(now=time.time() + 0.5 * 86400) == 0  # within retention
            assert await jobs.prune(now=time.time() + 2 * 86400) == 1
            with pytest.raises(NotFoundError):
                await jobs.get(old.id)
            assert not (await jobs.get(unfinished.id)).terminal  # never pruned while unfinished
            gate.set()
        return image

    assert (await prune_round("keep", delete=False)).exists()
    assert not (await prune_round("delete", delete=True)).exists()


async def test_too_many_unfinished_jobs_are_refused_as_busy(tmp_path: Path) -> None:
    work = FakeWork()
    work.gate = anyio.Event()
    jobs = JobManager(_store(tmp_path), work, _settings(), max_active=3)
    async with jobs.running():
        for _ in range(3):
            await jobs.submit("generate", {"prompt": "x"})
        with pytest.raises(Exception) as caught:
            await jobs.submit("generate", {"prompt": "one too many"})
        assert getattr(caught.value, "code", None) == "jobs_busy"
        assert caught.value.retryable  # type: ignore[attr-defined]
        work.gate.set()


async def test_a_job_that_cannot_be_recorded_is_refused_with_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from atelier_core.plugin.errors import StorageError

    work = FakeWork()
    async with manager(tmp_path, work) as jobs:
        original_write = Database.write

        def full_disk(self: Database, *, durable: bool = True) -> Any:
            raise OperationalError("INSERT INTO jobs ...", {}, Exception("database or disk is full"))

        monkeypatch.setattr(Database, "write", full_disk)
        with pytest.raises(StorageError) as caught:
            await jobs.submit("generate", {"prompt": "x"})
        monkeypatch.setattr(Database, "write", original_write)
    assert "disk is full" in str(caught.value) and "nothing was sent" in str(caught.value)
    assert work.calls == []


async def test_plain_calls_leave_no_row_and_inline_data_is_not_recorded(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def run(run: JobRun) -> dict[str, Any]:
        seen.append(run.request)
        return {"images": []}

    big = "data:image/png;base64," + "A" * 100_000
    jobs = JobManager(_store(tmp_path), run, _settings())
    async with jobs.running():
        answered = await jobs.call("edit", {"call": {"images": [big], "model": "fake/x"}})
        job = await jobs.submit("edit", {"call": {"images": [big], "model": "fake/x"}})
        (done,) = await jobs.wait([job.id], 5)
    assert answered.state is JobState.DONE
    assert _raw(tmp_path, "SELECT id FROM jobs WHERE id = ?", answered.id) == []  # served, gone
    assert seen[0]["call"]["images"] == [big] and seen[1]["call"]["images"] == [big]
    assert done.request["call"]["images"] == ["<100022 characters, not recorded>"]
    assert done.summary()["model"] == "fake/x"


async def test_running_is_on_disk_before_the_provider_is_called(tmp_path: Path) -> None:
    seen: list[str] = []

    async def run(run: JobRun) -> dict[str, Any]:
        await run.stage(JobState.RUNNING, "sent")
        # What a restarted process would read if this one died right now:
        seen.append(_raw(tmp_path, "SELECT state FROM jobs WHERE id = ?", run.job_id)[0]["state"])
        return {"images": []}

    jobs = JobManager(_store(tmp_path), run, _settings())
    async with jobs.running():
        job = await jobs.submit("generate", {"prompt": "x"})
        await jobs.wait([job.id], 5)
    assert seen == ["running"]
