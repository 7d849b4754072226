"""http.stateless: every request answered on its own, so two replicas behind one URL need
no session affinity; a job submitted through one is read through the other."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from replica_kit import call_tool, replicas, rpc

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_requests_without_a_session_reach_either_replica(tmp_path: Path) -> None:
    shared = {
        "ATELIER_HTTP__STATELESS": "true",
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        "ATELIER_STORAGE__OUTPUT_DIR": str(tmp_path / "images"),
        # What stateless costs: the server cannot ask the user, so a call above the
        # ask-first threshold is refused, saying why.
        "ATELIER_COST__ASK_ABOVE_USD": "0.02",
        "ATELIER_COST__PRICES": json.dumps({"placeholder/placeholder": {"per_image": 0.01}}),
    }
    with replicas(tmp_path, {"a": shared, "b": shared}) as running:
        a, b = running["a"].url, running["b"].url
        async with httpx2.AsyncClient(timeout=60) as http:
            # No initialize and no mcp-session-id: each POST stands alone.
            tools = await rpc(http, b, "tools/list", {})
            assert "generate_image" in {tool["name"] for tool in tools["tools"]}
            started = await call_tool(
                http,
                a,
                "generate_image",
                {"prompt": "a lighthouse", "model": "placeholder", "size": "256x256", "as_job": True},
            )
            assert not started.get("isError"), started
            job_id = started["structuredContent"]["job"]["job_id"]

            fetched = await call_tool(http, b, "get_jobs", {"job_ids": [job_id], "wait_s": 30})
            assert not fetched.get("isError"), fetched
            (entry,) = fetched["structuredContent"]["jobs"]
            assert entry["state"] == "done"
            (image,) = entry["result"]["images"]
            saved = Path(image["path"])
            asked = await call_tool(
                http,
                a,
                "generate_image",
                {"prompt": "three lighthouses", "model": "placeholder", "size": "256x256", "n": 3},
            )
            assert asked.get("isError")
            assert "cannot ask the user" in json.dumps(asked) and "ask_above_usd" in json.dumps(asked).lower()
            listed = await call_tool(http, b, "get_jobs", {})
            assert job_id in {job["job_id"] for job in listed["structuredContent"]["jobs"]}
    assert saved.is_file()
    for replica in running.values():
        assert "Traceback" not in replica.log_text()
