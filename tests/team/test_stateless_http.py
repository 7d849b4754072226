"""http.stateless: every request answered on its own, so two replicas behind one URL need
no session affinity; a job submitted through one is read through the other."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from replica_kit import call_tool, replicas, rpc

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_requests_without_a_session_reach_either_replica(tmp_path: Path) -> None:
    shared = {"ATELIER_HTTP__STATELESS": "true", "ATELIER_DATA_DIR": str(tmp_path / "data"),
              "ATELIER_STORAGE__OUTPUT_DIR": str(tmp_path / "images")}
    with replicas(tmp_path, {"a": shared, "b": shared}) as running:
        a, b = running["a"].url, running["b"].url
        async with httpx2.AsyncClient(timeout=60) as http:
            # No initialize and no mcp-session-id: each POST stands alone.
            tools = await rpc(http, b, "tools/list", {})
            assert "generate_image" in {tool["name"] for tool in tools["tools"]}
            started = await call_tool(http, a, "generate_image", {
                "prompt": "a lighthouse", "model": "placeholder", "size": "256x256", "as_job": True})
            assert not started.get("isError"), started
            job_id = started["structuredContent"]["job"]["job_id"]

            fetched = await call_tool(http, b, "get_jobs", {"job_ids": [job_id], "wait_s": 30})
            assert not fetched.get("isError"), fetched
            (entry,) = fetched["structuredContent"]["jobs"]
            assert entry["state"] == "done"
            (image,) = entry["result"]["images"]
            saved = Path(image["path"])
            listed = await call_tool(http, b, "get_jobs", {})
            assert job_id in {job["job_id"] for job in listed["structuredContent"]["jobs"]}
    assert saved.is_file()
    for replica in running.values():
        assert "Traceback" not in replica.log_text()
