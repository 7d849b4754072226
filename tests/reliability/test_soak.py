"""Bounded soak (Z8): hundreds of calls over stdio against a real ``atelier-mcp``
process, with a random mix of upstream faults and concurrency.

CI runs a small count (60 calls); run more locally with ``ATELIER_SOAK_CALLS=600``.
At the end: every call was answered, no job is left queued or running, every image
file verifies, no temp file is left, the upstream saw a bounded number of requests
(one retry layer), the server's memory has not grown without bound, and it still answers.
"""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from reliability_kit import (
    CANARY,
    OPENAI_MODERATION,
    OPENAI_ROUTE,
    image_files,
    openai_ok,
    rss_kib,
    temp_leftovers,
    verify_image_file,
)
from stdio_kit import child_env, server_params

from atelier_core.testing import FakeUpstream, Recorded, Reply

pytestmark = [pytest.mark.soak, pytest.mark.slow]

CALLS = int(os.environ.get("ATELIER_SOAK_CALLS", "60"))
CONCURRENCY = 8
MAX_RETRIES = 1


class FaultMix:
    """Answers every OpenAI images request with a seeded random outcome."""

    WEIGHTS: ClassVar[dict[str, int]] = {
        "ok": 50,
        "ok_n2": 8,
        "slow": 6,
        "rate_limited": 8,
        "unavailable": 8,
        "reset": 4,
        "malformed": 4,
        "truncated": 4,
        "moderation": 4,
        "auth_echo": 2,
        "partial": 2,
    }

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.seen: dict[str, int] = {}

    def __call__(self, request: Recorded) -> Reply:
        with self._lock:
            kind = self._random.choices(list(self.WEIGHTS), weights=list(self.WEIGHTS.values()))[0]
            self.seen[kind] = self.seen.get(kind, 0) + 1
        n = int(request.json().get("n", 1))
        match kind:
            case "ok" | "ok_n2":
                return Reply(json=openai_ok(n), delay=0.01)
            case "slow":
                return Reply(json=openai_ok(n), delay=0.3)
            case "rate_limited":
                return Reply(
                    status=429,
                    headers={"retry-after": "0.05"},
                    json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
                )
            case "unavailable":
                return Reply(status=503, json={"error": {"message": "overloaded", "type": "server_error"}})
            case "reset":
                return Reply(reset=True)
            case "malformed":
                return Reply(body=b'{"data": [', content_type="application/json")
            case "truncated":
                return Reply(json=openai_ok(n, truncate=0))
            case "moderation":
                return Reply(status=400, json=OPENAI_MODERATION)
            case "auth_echo":
                return Reply(
                    status=401,
                    json={"error": {"message": f"Incorrect API key provided: {CANARY}", "code": "invalid_api_key"}},
                )
            case _:
                return Reply(json=openai_ok(max(n, 2), truncate=1))


def _call_args(index: int) -> dict[str, Any]:
    shape = index % 10
    args: dict[str, Any] = {"prompt": f"soak {index}", "model": "openai/gpt-image-1-mini"}
    if shape == 3:
        args["n"] = 2
    if shape == 5:
        args["as_job"] = True
    if shape == 7:
        args["size"] = "1000x1000"  # refused before any request
    if shape == 8:
        args = {"prompt": f"soak {index}", "model": "placeholder", "size": "256x256"}
    if shape == 9:
        args["return_image"] = "none"
    return args


async def test_soak(isolated_env: Path, tmp_path: Path) -> None:
    images = isolated_env / "data" / "images"
    pidfile = tmp_path / "pid"
    mix = FaultMix(seed=20261121)
    outcomes: dict[int, dict[str, Any]] = {}
    job_ids: list[str] = []
    with FakeUpstream() as upstream:
        upstream.handle("POST", OPENAI_ROUTE, mix)
        env = child_env(
            {
                "ATELIER_TEST_PIDFILE": str(pidfile),
                "OPENAI_API_KEY": CANARY,
                "ATELIER_PROVIDERS__OPENAI__BASE_URL": upstream.url + "/v1",
                "ATELIER_PROVIDERS__OPENAI__MAX_RETRIES": str(MAX_RETRIES),
                "ATELIER_PROVIDERS__OPENAI__BACKOFF_BASE_S": "0.01",
                "ATELIER_PROVIDERS__OPENAI__TIMEOUT_S": "10",
                "ATELIER_PROVIDERS__OPENAI__MAX_CONCURRENCY": "4",
                "ATELIER_LOGGING__LEVEL": "WARNING",
            }
        )
        with (tmp_path / "stderr.log").open("w") as errors:
            async with Client(stdio_client(server_params(env), errlog=errors)) as client:
                pid = int(pidfile.read_text())
                limiter = anyio.Semaphore(CONCURRENCY)
                baseline: list[int] = []

                async def one(index: int) -> None:
                    async with limiter:
                        result = await client.call_tool("generate_image", _call_args(index))
                    data = json.loads(result.model_dump_json())
                    outcomes[index] = data
                    job = (data.get("structured_content") or {}).get("job")
                    if job:
                        job_ids.append(job["job_id"])
                    if len(outcomes) == min(20, CALLS):
                        baseline.append(rss_kib(pid))  # after warm-up: SDKs imported, caches built

                with anyio.fail_after(60 + CALLS * 1.5):
                    async with anyio.create_task_group() as group:
                        for index in range(CALLS):
                            group.start_soon(one, index)
                    waits = [
                        await client.call_tool("get_jobs", {"job_ids": job_ids[i : i + 50], "wait_s": 30})
                        for i in range(0, len(job_ids), 50)
                    ]  # get_jobs takes 50 ids at a time
                    listed = await client.call_tool("get_jobs", {})
                    alive = await client.call_tool("list_available_models", {"provider": "openai"})
                end_rss = rss_kib(pid)

    assert len(outcomes) == CALLS  # every call answered
    assert not alive.is_error
    assert all(not waited.is_error for waited in waits)
    states = [job["state"] for job in (listed.structured_content or {})["jobs"]]
    assert "queued" not in states and "running" not in states, states
    assert sum(1 for o in outcomes.values() if not o["is_error"]) >= CALLS // 4  # a healthy share succeeded
    refused = sum(1 for i in range(CALLS) if i % 10 == 7)
    for index, outcome in outcomes.items():
        if index % 10 == 7:  # invalid size: a clear refusal, whatever the load
            assert outcome["is_error"] and "size" in outcome["content"][0]["text"], outcome
        elif not outcome["is_error"] and not (outcome.get("structured_content") or {}).get("job"):
            for record in outcome["structured_content"]["images"]:
                assert Path(record["path"]).is_file()
    upstream_calls = len(upstream.requests)
    sent_calls = CALLS - refused - sum(1 for i in range(CALLS) if i % 10 == 8)
    extra_for_n2 = 0  # n=2 is one request (native batch)
    assert sent_calls <= upstream_calls <= (sent_calls + extra_for_n2) * (1 + MAX_RETRIES)
    files = image_files(images)
    assert files, "nothing was saved"
    for path in files:
        verify_image_file(path)
    assert temp_leftovers(images) == []
    assert baseline, "no warm-up measurement"
    growth_kib = end_rss - baseline[0]
    assert growth_kib < max(80 * 1024, baseline[0] // 2), (baseline[0], end_rss)
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()
    print(
        f"soak: {CALLS} calls, {upstream_calls} upstream requests, {len(files)} files, "
        f"RSS {baseline[0] // 1024} MiB after warm-up -> {end_rss // 1024} MiB, faults {mix.seen}"
    )
    assert {"ok", "rate_limited", "unavailable"} <= set(mix.seen)
