"""Jobs across real server processes: SIGKILL mid-job over stdio and a restart on the
same data directory; background jobs and MCP tasks over streamable HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextContent

from test_jobs_mcp import ClientTasks  # the task-capable client extension

pytestmark = pytest.mark.slow

SERVER_SCRIPT = """
import os, sys
from pathlib import Path

import anyio

from atelier_core.mcp.app import serve_stdio
from atelier_core.mcp.http import serve_http
from atelier_core.testing.fakes import FakeProvider, Outcome
from atelier_core.testing.harness import build_test_atelier

root, transport = Path(sys.argv[1]), sys.argv[2]
(root / f"pid-{transport}").write_text(str(os.getpid()))
fake = FakeProvider(latency_s=0.05)
fake.when(lambda request: (request.prompt or "").startswith("hang"), Outcome(hang=True))
atelier = build_test_atelier(root, [fake], default_model="fake/fake-image",
                             jobs={"lease_s": 30.0}, logging={"level": "WARNING"})
if transport == "http":
    anyio.run(lambda: serve_http(atelier, host="127.0.0.1", port=int(sys.argv[3])))
else:
    serve_stdio(atelier)
"""


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def _script(root: Path) -> Path:
    path = root / "server.py"
    path.write_text(SERVER_SCRIPT)
    return path


def _stdio(root: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=[str(_script(root)), str(root), "stdio"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def _submit(client: Client, prompt: str) -> str:
    result = await client.call_tool("generate_image", {"prompt": prompt, "as_job": True, "size": "256x256"})
    assert not result.is_error, text_of(result)
    return str((result.structured_content or {})["job"]["job_id"])


async def _states(client: Client, ids: list[str], wait_s: float = 0) -> dict[str, dict[str, Any]]:
    result = await client.call_tool("get_jobs", {"job_ids": ids, "wait_s": wait_s})
    assert not result.is_error, text_of(result)
    return {job["job_id"]: job for job in (result.structured_content or {})["jobs"]}


async def test_sigkill_mid_job_then_restart_keeps_results_and_fails_the_interrupted_job(
    tmp_path: Path,
) -> None:
    root = tmp_path / "server"
    root.mkdir()
    with anyio.fail_after(60):
        async with Client(_stdio(root)) as first:
            done_id = await _submit(first, "finished before the crash")
            finished = await _states(first, [done_id], wait_s=10)
            assert finished[done_id]["state"] == "done"
            image_path = Path(finished[done_id]["result"]["images"][0]["path"])
            hung_id = await _submit(first, "hang until killed")
            while (await _states(first, [hung_id]))[hung_id]["state"] != "running":
                await anyio.sleep(0.05)
            os.kill(int((root / "pid-stdio").read_text()), signal.SIGKILL)
            # The client notices the dead server when it leaves the block.
            with contextlib.suppress(Exception):
                await first.call_tool("get_jobs", {})

    with anyio.fail_after(60):
        async with Client(_stdio(root)) as second:
            after = await _states(second, [done_id, hung_id])
            result = await second.call_tool("get_jobs", {"job_ids": [done_id]})
            resource = next(b for b in result.content if isinstance(b, ResourceLink))
            read = await second.read_resource(str(resource.uri))
            listed = await second.call_tool("get_jobs", {})

    assert after[done_id]["state"] == "done"
    assert image_path.is_file() and after[done_id]["result"]["images"][0]["path"] == str(image_path)
    assert any(isinstance(b, ImageContent) for b in result.content)
    assert read.contents and getattr(read.contents[0], "blob", None)
    interrupted = after[hung_id]
    assert interrupted["state"] == "failed"
    assert interrupted["stage"] == "failed: interrupted"
    assert interrupted["error"]["code"] == "interrupted"
    assert interrupted["may_be_billed"] is True  # it was running: say so, never re-send
    assert "not re-sent" in interrupted["error"]["message"]
    listed_ids = [job["job_id"] for job in (listed.structured_content or {})["jobs"]]
    assert set(listed_ids) == {done_id, hung_id}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _http_server(root: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(_script(root)), str(root), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"HTTP server did not start: {process.stderr.read().decode()[-2000:]}"
                    if process.stderr
                    else "HTTP server did not start"
                )
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr:
            process.stderr.close()


async def test_jobs_and_tasks_over_streamable_http(tmp_path: Path) -> None:
    root = tmp_path / "http"
    root.mkdir()
    tasks = ClientTasks()
    with _http_server(root) as url:
        with anyio.fail_after(60):
            async with Client(url) as client:
                ids = [await _submit(client, f"http job {i}") for i in range(3)]
                states = await _states(client, ids, wait_s=10)
                hung = await _submit(client, "hang over http")
                cancelled = await client.call_tool("cancel_job", {"job_id": hung})
            async with Client(url, extensions=[tasks]) as task_client:
                as_task = await task_client.call_tool(
                    "generate_image", {"prompt": "a task over http", "size": "256x256"}
                )
    assert [job["state"] for job in states.values()] == ["done"] * 3
    assert not cancelled.is_error and "cancelled" in text_of(cancelled)
    assert not as_task.is_error
    assert [type(b).__name__ for b in as_task.content] == ["TextContent", "ImageContent", "ResourceLink"]
    assert len(tasks.created) == 1 and tasks.polled[-1] == "completed"
