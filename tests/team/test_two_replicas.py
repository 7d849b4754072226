"""The team server: two `atelier-mcp serve --http` replicas on one PostgreSQL and one
bucket, with the environment docs/deploying.md gives (plus test ports and folders).

The provider is the real OpenAI plugin aimed at a fake upstream on 127.0.0.1, so every
request that reached the "vendor" is counted, with its prompt. A job submitted on one
replica is finished and fetched on the other; a replica SIGKILLed mid-job has its job
ended by the other within the lease; 200 calls from 4 principals spread over both replicas
are each answered once, sent at most once, in each principal's ledger exactly, under a
daily limit that racing calls never exceed; no principal sees another's jobs, sessions or
images.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest
from replica_kit import RpcError, call_tool, replicas, rpc, start_replica
from s3_kit import CREDENTIALS

from atelier_core.testing.upstream import FakeUpstream, Recorded, Reply
from reliability.reliability_kit import openai_ok

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PRINCIPALS = ("alice", "bob", "carol", "dave")  # the 200 racing calls
KILLED = "erin"  # whose job is running when its replica is killed
TOKENS = {name: f"{name}-token-{'0123456789abcdef' * 2}" for name in (*PRINCIPALS, KILLED)}
MODEL = "openai/gpt-image-1-mini"
PRICE = 0.005  # the quote of one low-quality 1024x1024 image with the configured prices
DAILY_LIMIT = 0.2025  # 40 images a day per principal
CALLS_PER_PRINCIPAL = 50
LEASE_S = 10.0


def team_env(*, state_url: str, bucket: str, endpoint: str, upstream: str, data_dir: Path) -> dict[str, str]:
    """The replicas' environment, as in docs/deploying.md."""
    return {
        "ATELIER_STATE__URL": state_url,
        "ATELIER_STORAGE__URL": f"s3://{bucket}/atelier",
        "ATELIER_STORAGE__ENDPOINT_URL": endpoint,
        "ATELIER_HTTP__TOKENS": json.dumps(TOKENS),
        "ATELIER_HTTP__STATELESS": "true",
        "ATELIER_JOBS__LEASE_S": str(LEASE_S),
        "ATELIER_COST__MAX_PER_DAY_USD": str(DAILY_LIMIT),
        "ATELIER_COST__PRICES": json.dumps({MODEL: {"per_image": PRICE}}),
        "ATELIER_PROVIDERS__OPENAI__API_KEY": "sk-test-team-0123456789",
        "ATELIER_PROVIDERS__OPENAI__BASE_URL": f"{upstream}/v1",
        "ATELIER_PROVIDERS__OPENAI__MAX_RETRIES": "0",
        "ATELIER_DATA_DIR": str(data_dir),
        **CREDENTIALS,
    }


def _prompt(request: Recorded) -> str:
    return str(request.json().get("prompt", ""))


def _answer(request: Recorded) -> Reply:
    if _prompt(request).startswith("hang"):
        return Reply(hang=True)  # a vendor that never answers: the job stays running
    return _answer_ok()


def _answer_ok() -> Reply:
    answer = openai_ok()
    del answer["usage"]  # no token counts: each image costs its quote, so the limit is a count
    return Reply(json=answer)


async def _generate(http: httpx2.AsyncClient, url: str, principal: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return await call_tool(
        http,
        url,
        "generate_image",
        {
            "prompt": prompt,
            "model": MODEL,
            "size": "1024x1024",
            "quality": "low",
            "return_image": "none",
            **extra,
        },
        token=TOKENS[principal],
    )


def _text(result: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in result.get("content", []))


async def test_two_replicas_share_jobs_limits_and_images(tmp_path: Path, postgres, s3_server, s3_bucket: str) -> None:
    upstream = FakeUpstream().start()
    upstream.handle("POST", "/v1/images/generations", _answer)
    upstream.handle("POST", "/v1/images/edits", lambda _: _answer_ok())
    env = team_env(
        state_url=postgres.create_database(),
        bucket=s3_bucket,
        endpoint=s3_server.endpoint,
        upstream=upstream.url,
        data_dir=tmp_path / "data",
    )
    envs = {name: {**env, "ATELIER_STORAGE__OUTPUT_DIR": str(tmp_path / f"images-{name}")} for name in ("a", "b")}
    try:
        with replicas(tmp_path, envs, host="0.0.0.0") as running:
            async with httpx2.AsyncClient(timeout=120) as http:
                quote = await _generate(http, running["a"].url, "alice", "a quote", dry_run=True)
                assert quote["structuredContent"]["cost"]["estimate_usd"] == PRICE, quote
                for replica in running.values():  # the vendor SDK's first import stalls a replica
                    warm = await _generate(http, replica.url, "alice", f"warm-up {replica.name}")
                    assert not warm.get("isError"), warm
                await _one_job_across_replicas(http, running["a"].url, running["b"].url)
                await _sessions_are_private(http, running["a"].url, running["b"].url)
                await _racing_calls(http, [running["a"].url, running["b"].url], upstream, postgres, env)
                await _killed_replica(http, running, upstream, tmp_path)
        for replica in running.values():
            log = replica.log_text()
            assert "Traceback" not in log, log[-3000:]
            assert all(token not in log for token in TOKENS.values())
    finally:
        upstream.close()


async def _one_job_across_replicas(http: httpx2.AsyncClient, a: str, b: str) -> None:
    started = await _generate(http, a, "alice", "a job across replicas", as_job=True)
    assert not started.get("isError"), started
    job_id = started["structuredContent"]["job"]["job_id"]
    fetched = await call_tool(http, b, "get_jobs", {"job_ids": [job_id], "wait_s": 30}, token=TOKENS["alice"])
    assert not fetched.get("isError"), fetched
    (entry,) = fetched["structuredContent"]["jobs"]
    assert entry["state"] == "done", json.dumps(entry)[:2000]
    (image,) = entry["result"]["images"]
    # Replica b has no such file on its disk; it serves the image from the bucket.
    read = await rpc(http, b, "resources/read", {"uri": image["resource_uri"]}, token=TOKENS["alice"])
    assert read["contents"][0]["mimeType"] == "image/png"
    assert image["object_uri"].startswith("s3://")

    # Bob: the same answers as for an id that never existed, on both replicas.
    unknown = "job_" + "0" * len(job_id.removeprefix("job_"))
    for url in (a, b):
        seen = await call_tool(http, url, "get_jobs", {"job_ids": [job_id]}, token=TOKENS["bob"])
        never = await call_tool(http, url, "get_jobs", {"job_ids": [unknown]}, token=TOKENS["bob"])
        assert seen.get("isError") and never.get("isError")
        assert _text(seen).replace(job_id, "<id>") == _text(never).replace(unknown, "<id>")
        cancel = await call_tool(http, url, "cancel_job", {"job_id": job_id}, token=TOKENS["bob"])
        assert cancel.get("isError") and "a job across replicas" not in json.dumps(cancel)
        listed = await call_tool(http, url, "get_jobs", {}, token=TOKENS["bob"])
        assert job_id not in json.dumps(listed)
        with pytest.raises(RpcError):
            await rpc(http, url, "resources/read", {"uri": image["resource_uri"]}, token=TOKENS["bob"])
    mine = await call_tool(http, a, "get_jobs", {}, token=TOKENS["alice"])
    assert job_id in {job["job_id"] for job in mine["structuredContent"]["jobs"]}


async def _racing_calls(
    http: httpx2.AsyncClient, urls: list[str], upstream: FakeUpstream, postgres, env: dict[str, str]
) -> None:
    before = Counter(_prompt(r) for r in upstream.requests_to("/images/generations"))
    database = env["ATELIER_STATE__URL"].rsplit("/", 1)[1]

    def billed(principal: str) -> tuple[int, float]:
        rows = postgres.psql(
            "SELECT count(*), coalesce(round(sum(coalesce(cost_usd, estimate_usd))::numeric, 6), 0) "
            f"FROM ledger WHERE principal = '{principal}'",
            database=database,
        )
        count, spent = rows.split("|")
        return int(count), float(spent)

    earlier = {principal: billed(principal)[0] for principal in PRINCIPALS}
    gate = asyncio.Semaphore(40)
    calls = [(principal, index) for index in range(CALLS_PER_PRINCIPAL) for principal in PRINCIPALS]

    async def one(principal: str, index: int) -> tuple[str, int, dict[str, Any]]:
        async with gate:
            url = urls[index % 2]  # each principal's calls alternate between the replicas
            key = f"{principal}-key-{index}" if index < 10 else None
            extra = {"idempotency_key": key} if key else {}
            result = await _generate(http, url, principal, f"{principal} call {index}", **extra)
            if key is not None:  # the same key again, on the other replica: not sent again
                again = await _generate(http, urls[(index + 1) % 2], principal, f"{principal} call {index}", **extra)
                assert again.get("isError") == result.get("isError"), (result, again)
                if not result.get("isError"):
                    assert again["structuredContent"]["images"] == result["structuredContent"]["images"]
            return principal, index, result

    results = await asyncio.gather(*(one(p, i) for p, i in calls))
    assert len(results) == len(PRINCIPALS) * CALLS_PER_PRINCIPAL  # none lost: every call answered

    sent = Counter(_prompt(r) for r in upstream.requests_to("/images/generations")) - before
    assert all(count == 1 for count in sent.values()), [p for p, c in sent.items() if c > 1]  # none sent twice
    for principal in PRINCIPALS:
        allowed = int(DAILY_LIMIT / PRICE + 1e-9) - earlier[principal]
        ok = [i for p, i, r in results if p == principal and not r.get("isError")]
        refused = [r for p, _, r in results if p == principal and r.get("isError")]
        assert all("daily spend limit" in _text(r) for r in refused), [_text(r) for r in refused][:3]
        assert len(ok) == allowed, (
            principal,
            len(ok),
            postgres.psql(
                "SELECT principal, day, status, count(*), sum(estimate_usd), sum(cost_usd) FROM ledger GROUP BY 1, 2, 3",
                database=database,
            ),
            postgres.psql("SELECT count(*) FROM spend_reservations", database=database),
        )  # the limit holds, and is not over-reserved
        assert {f"{principal} call {i}" for i in ok} == {p for p in sent if p.startswith(f"{principal} ")}
        count, spent = billed(principal)
        assert count == earlier[principal] + allowed and spent <= DAILY_LIMIT, (principal, count, spent)
        usage = await call_tool(http, urls[0], "get_usage", {"days": 1}, token=TOKENS[principal])
        assert usage["structuredContent"]["calls"] == count, usage["structuredContent"]
        # The image library (resources/list, find_images) lists this principal's images only.
        others = [f"{other}-call-" for other in PRINCIPALS if other != principal]
        for url in urls:
            listed = await rpc(http, url, "resources/list", {}, token=TOKENS[principal])
            names = [resource["uri"] for resource in listed["resources"]]
            assert any(f"{principal}-call-" in name for name in names), names[:5]
            assert not [name for name in names if any(o in name for o in others)]
            found = await call_tool(http, url, "find_images", {"query": "call"}, token=TOKENS[principal])
            assert not found.get("isError"), found
            assert f"{principal}-call-" in json.dumps(found)
            assert not any(o in json.dumps(found) for o in others)


async def _sessions_are_private(http: httpx2.AsyncClient, a: str, b: str) -> None:
    started = await call_tool(
        http,
        a,
        "edit_session",
        {
            "action": "start",
            "prompt": "carol's secret garden",
            "model": MODEL,
            "size": "1024x1024",
            "quality": "low",
            "return_image": "none",
        },
        token=TOKENS["carol"],
    )
    assert not started.get("isError"), _text(started)
    session_id = started["structuredContent"]["session"]["session_id"]
    history = await call_tool(
        http, b, "edit_session", {"action": "history", "session_id": session_id}, token=TOKENS["carol"]
    )
    assert not history.get("isError"), history
    # The next turn on the other replica: the head image is on a's disk, b reads it from the bucket.
    turned = await call_tool(
        http,
        b,
        "edit_session",
        {"action": "continue", "session_id": session_id, "prompt": "add a fountain", "return_image": "none"},
        token=TOKENS["carol"],
    )
    assert not turned.get("isError"), _text(turned)
    assert turned["structuredContent"]["turn"]["turn"] == 1
    for url in (a, b):
        other = await call_tool(
            http, url, "edit_session", {"action": "history", "session_id": session_id}, token=TOKENS["dave"]
        )
        assert other.get("isError") and "secret garden" not in json.dumps(other)
        listed = await call_tool(http, url, "edit_session", {"action": "list"}, token=TOKENS["dave"])
        assert session_id not in json.dumps(listed)


async def _killed_replica(
    http: httpx2.AsyncClient, running: dict[str, Any], upstream: FakeUpstream, tmp_path: Path
) -> None:
    a, b = running["a"], running["b"]
    started = await _generate(http, a.url, KILLED, "hang until the replica dies", as_job=True)
    assert not started.get("isError"), started
    job_id = started["structuredContent"]["job"]["job_id"]
    deadline = time.monotonic() + 30
    while not any(_prompt(r).startswith("hang") for r in upstream.requests_to("/images/generations")):
        assert time.monotonic() < deadline, "the job never reached the vendor"
        await asyncio.sleep(0.05)
    a.kill()
    killed_at = time.monotonic()
    while True:
        seen = await call_tool(http, b.url, "get_jobs", {"job_ids": [job_id]}, token=TOKENS[KILLED])
        (entry,) = seen["structuredContent"]["jobs"]
        if entry["state"] != "running" and entry["state"] != "queued":
            break
        assert time.monotonic() - killed_at < LEASE_S, "the other replica did not end the job within the lease"
        await asyncio.sleep(0.1)
    assert entry["state"] == "failed" and entry["error"]["code"] == "interrupted", entry
    assert entry.get("may_be_billed") is True
    # A replacement replica joins and serves the same state.
    running["a"] = start_replica("a2", tmp_path, a.env, host=a.host)
    again = await call_tool(http, running["a"].url, "get_jobs", {"job_ids": [job_id]}, token=TOKENS[KILLED])
    assert again["structuredContent"]["jobs"][0]["state"] == "failed"
