"""The state wing's interface, run against SQLite and PostgreSQL alike (``state_url``).

Two :class:`StateStore` objects on one database stand for two replicas (two engines,
two connection pools): the races below go through the database, not a Python lock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from atelier_core.plugin.errors import ConfigurationError, SpendLimitError
from atelier_core.state.db import HEAD_REVISION
from atelier_core.state.jobs import Ending, Job, JobState, KeyTaken, Lease
from atelier_core.state.ledger import LedgerEntry, Spent
from atelier_core.state.session_records import SessionRecord, TurnRecord
from atelier_core.state.store import StateStore


@pytest.fixture
async def state(state_url: str, tmp_path: Path) -> AsyncIterator[StateStore]:
    store = await StateStore.open_url(state_url, tmp_path)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def replica(state_url: str, tmp_path: Path, state: StateStore) -> AsyncIterator[StateStore]:
    """A second store on the same database (another engine, as another replica has)."""
    store = await StateStore.open_url(state_url, tmp_path)
    try:
        yield store
    finally:
        await store.aclose()


def _entry(
    usd: float,
    *,
    day: str = "2026-12-03",
    principal: str = "local",
    model: str = "p/m",
    run_id: str = "run-1",
    images: int = 1,
    estimate: float | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        at=time.time(),
        day=day,
        run_id=run_id,
        provider=model.split("/")[0],
        model=model,
        operation="generate",
        images=images,
        estimate_usd=estimate,
        cost_usd=usd,
        status="billed",
        usage={"output_tokens": 10},
        principal=principal,
    )


# -- schema -------------------------------------------------------------------------------


async def test_open_migrates_to_head_and_reopens_without_migrating(
    state: StateStore, state_url: str, tmp_path: Path
) -> None:
    assert await state.db.revision() == HEAD_REVISION
    again = await StateStore.open_url(state_url, tmp_path)
    try:
        assert await again.db.revision() == HEAD_REVISION
    finally:
        await again.aclose()


async def test_a_database_from_a_newer_release_is_refused(state: StateStore, state_url: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    async with state.db.write() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(ConfigurationError) as caught:
        await StateStore.open_url(state_url, tmp_path)
    assert "9999_future" in str(caught.value) and "newer release" in str(caught.value)
    assert caught.value.fix and "upgrade atelier-mcp" in caught.value.fix


# -- ledger -------------------------------------------------------------------------------


async def test_ledger_sums_and_usage_are_per_principal_and_aggregated_in_sql(state: StateStore) -> None:
    await state.ledger.record(_entry(0.5))
    await state.ledger.record(_entry(0.25, model="p/other", images=2))
    await state.ledger.record(
        _entry(0.0, estimate=0.1)
        if False
        else LedgerEntry(
            at=time.time(),
            day="2026-12-03",
            run_id="run-2",
            provider="p",
            model="p/m",
            operation="edit",
            images=1,
            estimate_usd=0.125,
            cost_usd=None,
            status="maybe_billed",
        )
    )
    await state.ledger.record(_entry(0.5, day="2026-12-02"))
    await state.ledger.record(_entry(9.0, principal="alice"))

    assert await state.ledger.spent(day="2026-12-03") == pytest.approx(0.875)  # estimate counts
    assert await state.ledger.spent(run_id="run-1") == pytest.approx(1.25)
    assert await state.ledger.spent(day="2026-12-03", principal="alice") == pytest.approx(9.0)
    rows = {(r.day, r.model): r for r in await state.ledger.usage(since_day="2026-12-02")}
    assert set(rows) == {("2026-12-03", "p/m"), ("2026-12-03", "p/other"), ("2026-12-02", "p/m")}
    today = rows[("2026-12-03", "p/m")]
    assert (today.usd, today.images, today.calls) == (pytest.approx(0.625), 2, 2)
    assert rows[("2026-12-03", "p/other")].images == 2
    assert [r.day for r in await state.ledger.usage(since_day="2026-12-03")] == ["2026-12-03"] * 2
    entries = await state.ledger.entries(since_day="2026-12-02")
    assert len(entries) == 4 and entries[0]["usage"] == {"output_tokens": 10}


# -- spend reservations -------------------------------------------------------------------


def _daily_limit(limit: float, amount: float) -> object:
    def check(spent: Spent) -> None:
        if spent.day + amount > limit + 1e-9:
            raise SpendLimitError(f"daily limit {limit} reached (spent {spent.day})")

    return check


async def test_a_reservation_counts_until_released_or_recorded(state: StateStore) -> None:
    seen: list[Spent] = []
    hold = await state.reservations.reserve(2.0, day="2026-12-03", run_id="run-1", ttl_s=60, check=seen.append)
    assert seen == [Spent(day=0.0, run=0.0)]
    assert await state.reservations.held() == 2.0
    spent = await state.reservations.spent(day="2026-12-03", run_id="run-1")
    assert spent == Spent(day=2.0, run=2.0)
    # Recording moves the amount from the reservation to the ledger in one transaction.
    await state.ledger.record(_entry(1.5), release=hold)
    assert await state.reservations.held() == 0.0
    assert await state.reservations.spent(day="2026-12-03", run_id="run-1") == Spent(1.5, 1.5)
    other = await state.reservations.reserve(1.0, day="2026-12-03", run_id="run-1", ttl_s=60, check=lambda s: None)
    await state.reservations.release(other)
    assert await state.reservations.held() == 0.0


async def test_an_expired_reservation_no_longer_holds_the_budget(state: StateStore) -> None:
    # Long enough that a loaded machine still sees the hold before it lapses.
    await state.reservations.reserve(5.0, day="2026-12-03", run_id="r", ttl_s=1.5, check=lambda s: None)
    assert await state.reservations.held() == 5.0
    await anyio.sleep(1.6)
    assert await state.reservations.held() == 0.0  # its process died: the hold lapsed
    check = _daily_limit(5.0, 5.0)
    await state.reservations.reserve(5.0, day="2026-12-03", run_id="r", ttl_s=60, check=check)  # type: ignore[arg-type]


async def test_racing_reservations_on_two_replicas_never_exceed_a_daily_limit(
    state: StateStore, replica: StateStore
) -> None:
    limit, amount, calls = 7.0, 1.0, 24
    admitted: list[str] = []
    refused: list[str] = []

    async def call(store: StateStore, n: int) -> None:
        try:
            hold = await store.reservations.reserve(
                amount,
                day="2026-12-03",
                run_id=f"run-{n % 2}",
                ttl_s=60,
                check=_daily_limit(limit, amount),  # type: ignore[arg-type]
            )
        except SpendLimitError:
            refused.append(str(n))
            return
        admitted.append(hold)
        await anyio.sleep(0.01)  # the call runs; half of them are billed
        if n % 2:
            await store.ledger.record(_entry(amount, run_id=f"run-{n % 2}"), release=hold)

    async with anyio.create_task_group() as tg:
        for n in range(calls):
            tg.start_soon(call, state if n % 2 else replica, n)
    assert len(admitted) == 7 and len(refused) == calls - 7
    spent = await replica.reservations.spent(day="2026-12-03", run_id="none")
    assert spent.day == pytest.approx(limit)


# -- idempotency keys ---------------------------------------------------------------------


def _job_fields(
    job_id: str, *, owner: str = "host:1:a", lease_s: float = 30.0, now: float | None = None
) -> dict[str, object]:
    now = time.time() if now is None else now
    return dict(
        job_id=job_id,
        operation="generate",
        origin="job",
        message="waiting",
        request={"call": {"model": "p/m", "prompt": "a cat"}},
        owner=owner,
        owner_host="host",
        owner_pid=1,
        lease_until=now + lease_s,
        now=now,
    )


async def test_an_idempotency_key_is_taken_by_exactly_one_racing_replica(
    state: StateStore, replica: StateStore
) -> None:
    outcomes: dict[str, str] = {}

    async def submit(store: StateStore, job_id: str) -> None:
        try:
            await store.jobs.insert(**_job_fields(job_id), idempotency=("key-1", "fp"))  # type: ignore[arg-type]
            outcomes[job_id] = "won"
        except KeyTaken:
            outcomes[job_id] = "taken"

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(submit, state if n % 2 else replica, f"job_{n}")
    winners = [job_id for job_id, result in outcomes.items() if result == "won"]
    assert len(winners) == 1
    found = await replica.idempotency.find("key-1")
    assert found is not None and found.job_id == winners[0] and found.fingerprint == "fp"
    assert await state.idempotency.find("key-1", principal="alice") is None  # keys are per principal
    losers = await state.jobs.get_many([f"job_{n}" for n in range(6)])
    assert list(losers) == winners  # the losers' rows were rolled back with their keys


# -- jobs ---------------------------------------------------------------------------------


async def test_job_rows_advance_finish_once_and_list(state: StateStore, replica: StateStore) -> None:
    await state.jobs.insert(**_job_fields("job_a"))  # type: ignore[arg-type]
    await state.jobs.insert(**_job_fields("job_b"), principal="alice")  # type: ignore[arg-type]
    await state.jobs.advance(
        "job_a", state=JobState.RUNNING, message="sent", progress=0.4, started_at=123.0, durable=True
    )
    await state.jobs.add_file("job_a", "/out/a.png")
    await state.jobs.add_file("job_a", "/out/a.png.json")
    await state.jobs.set_partial("job_a", b"\x89PNG...", "image/png", 0)
    job = (await replica.jobs.get_many(["job_a"]))["job_a"]
    assert (job.state, job.progress, job.started_at, job.partial_mime) == (JobState.RUNNING, 0.4, 123.0, "image/png")
    assert job.files == ["/out/a.png", "/out/a.png.json"] and job.partial == b"\x89PNG..."
    assert job.request == {"call": {"model": "p/m", "prompt": "a cat"}} and job.outcome is None

    done = Ending(JobState.DONE, "done", outcome={"images": [{"path": "/out/a.png"}]}, files=["/out/a.png"])
    assert await state.jobs.finish("job_a", done) is True
    late = Ending(JobState.CANCELLED, "cancelled", may_be_billed=True)
    assert await replica.jobs.finish("job_a", late) is False  # terminal states are final
    job = (await replica.jobs.get_many(["job_a"]))["job_a"]
    assert job.state is JobState.DONE and job.outcome and job.partial is None and not job.may_be_billed

    assert [j.id for j in await state.jobs.recent(limit=10)] == ["job_b", "job_a"]
    assert [j.id for j in await state.jobs.recent(limit=10, principal="alice")] == ["job_b"]
    assert [j.id for j in await state.jobs.recent(limit=10, include_finished=False)] == ["job_b"]
    assert list(await state.jobs.get_many(["job_a", "job_b"], principal="local")) == ["job_a"]


async def test_call_rows_are_forgotten_unless_a_key_names_them(state: StateStore) -> None:
    for job_id in ("job_c1", "job_c2", "job_c3"):
        fields = _job_fields(job_id) | {"origin": "call"}
        await state.jobs.insert(**fields, idempotency=("k", "fp") if job_id == "job_c2" else None)  # type: ignore[arg-type]
    await state.jobs.forget_call("job_c1")
    await state.jobs.forget_call("job_c2")
    await state.jobs.hand_off("job_c3")
    rows = await state.jobs.get_many(["job_c1", "job_c2", "job_c3"])
    assert sorted(rows) == ["job_c2", "job_c3"] and rows["job_c3"].origin == "handoff"


async def test_cancel_requests_and_lease_renewal(state: StateStore, replica: StateStore) -> None:
    await state.jobs.insert(**_job_fields("job_d", owner="me", lease_s=1.0))  # type: ignore[arg-type]
    await replica.jobs.request_cancel("job_d")
    assert [j.id for j in await state.jobs.cancel_requested("me")] == ["job_d"]
    await state.jobs.renew("me", time.time() + 100)
    leases: list[Lease] = []
    await replica.jobs.recover(exclude_owner="other", host="host", decide=lambda job, lease: leases.append(lease))  # type: ignore[func-returns-value]
    assert leases and leases[0].until > time.time() + 50 and leases[0].owner == "me"


def _interrupt_expired(job: Job, lease: Lease) -> Ending | None:
    if lease.until >= time.time():
        return None
    return Ending(
        JobState.FAILED,
        "failed: interrupted",
        error={"code": "interrupted"},
        may_be_billed=job.state is not JobState.QUEUED,
    )


async def test_an_expired_lease_is_ended_interrupted_by_another_replica_exactly_once(
    state: StateStore, replica: StateStore
) -> None:
    now = time.time()
    for n in range(30):  # a dead replica's jobs: leases ran out
        await state.jobs.insert(**_job_fields(f"job_dead{n}", owner="dead", lease_s=-5, now=now))  # type: ignore[arg-type]
    await state.jobs.insert(**_job_fields("job_alive", owner="alive", lease_s=60))  # type: ignore[arg-type]
    await state.jobs.advance("job_dead0", state=JobState.RUNNING, message="sent", progress=None, started_at=now)

    ended: list[list[str]] = []

    async def recover(store: StateStore) -> None:
        pairs = await store.jobs.recover(exclude_owner="me", decide=_interrupt_expired, limit=10)
        ended.append([job.id for job, _ in pairs])

    async with anyio.create_task_group() as tg:  # four recovery passes racing on two replicas
        for n in range(4):
            tg.start_soon(recover, state if n % 2 else replica)
    while sum(len(ids) for ids in ended) < 30:  # SKIP LOCKED may leave rows to a later pass
        await recover(replica)
    everything = [job_id for ids in ended for job_id in ids]
    assert sorted(everything) == sorted(f"job_dead{n}" for n in range(30))  # each once, none twice
    jobs = await state.jobs.get_many([*everything, "job_alive"])
    assert jobs["job_alive"].state is JobState.QUEUED
    assert jobs["job_dead0"].may_be_billed and not jobs["job_dead1"].may_be_billed
    assert all(jobs[i].state is JobState.FAILED and jobs[i].error == {"code": "interrupted"} for i in everything)


async def test_prune_deletes_old_finished_jobs_and_their_keys(state: StateStore) -> None:
    await state.jobs.insert(**_job_fields("job_old"), idempotency=("old-key", "fp"))  # type: ignore[arg-type]
    await state.jobs.insert(**_job_fields("job_running"))  # type: ignore[arg-type]
    await state.jobs.finish("job_old", Ending(JobState.DONE, "done", outcome={}), now=1000.0)
    pruned = await state.jobs.prune(cutoff=2000.0)
    assert [job.id for job in pruned] == ["job_old"]
    assert list(await state.jobs.get_many(["job_old", "job_running"])) == ["job_running"]
    assert await state.idempotency.find("old-key") is None


# -- sessions -----------------------------------------------------------------------------


def _turn(n: int, parent: int | None = None) -> TurnRecord:
    return TurnRecord(
        turn=n,
        parent=parent,
        created_at=float(n),
        operation="edit" if n else "generate",
        prompt=f"turn {n}",
        model="p/m",
        parameters={"size": "1024x1024"},
        image_path=f"/out/{n}.png",
        resource_uri=None,
        sha256="0" * 64,
        outcome={"images": []} if n else None,
    )


async def test_sessions_keep_turns_and_evict_by_idle_time_and_count(state: StateStore) -> None:
    for n, last_used in enumerate((100.0, 200.0, 300.0)):
        record = SessionRecord(
            id=f"ses_{n}", status="open", created_at=last_used, last_used=last_used, head=0, defaults={"model": "p/m"}
        )
        await state.sessions.create(record, _turn(0))
    await state.sessions.add_turn("ses_2", _turn(1, parent=0), defaults={"model": "p/x"}, now=400.0)
    view = await state.sessions.get("ses_2")
    assert view is not None and view.head == 1 and view.defaults == {"model": "p/x"}
    assert [t.turn for t in view.turns] == [0, 1] and view.turns[1].outcome == {"images": []}
    assert view.turns[0].outcome is None and view.turns[0].parameters == {"size": "1024x1024"}
    assert await state.sessions.get("ses_2", principal="alice") is None
    assert await state.sessions.ids() == ["ses_2", "ses_1", "ses_0"]

    ended = await state.sessions.evict(now=350.0, idle_ttl_s=200.0, max_open=1)
    assert [i for i, _ in ended] == ["ses_0", "ses_1"]
    assert "idle" in ended[0][1] and "more than 1 open" in ended[1][1]
    assert await state.sessions.ids() == ["ses_2"]
    assert await state.sessions.end("ses_2", reason="ended by request", now=500.0) is True
    assert await state.sessions.end("ses_2", reason="again") is False
    assert await state.sessions.ids(include_ended=True, limit=2) == ["ses_2", "ses_1"]
