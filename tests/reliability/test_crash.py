"""Guarantees 3 and 7 under crashes: a real ``atelier-mcp`` stdio process dies at chosen
points — half-way through writing an image, after the temp file is complete but before
it is published, right after publishing (before the sidecar and the job row), and while
the provider still holds the request — then a new process starts on the same data
directory.

After every crash: no torn file at any final path (each image verifies), no stuck job
(the interrupted one is ``failed: interrupted`` and flagged as possibly billed), the job
finished before the crash is still readable, hidden temp files are swept at start-up,
and the interrupted request is never re-sent.

The failpoints are test-only (``child_hooks/sitecustomize.py``): ``os._exit(137)`` —
no cleanup code runs, as with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from reliability_kit import CANARY, image_files, temp_leftovers, verify_image_file
from stdio_kit import child_env, server_params

from atelier_core.testing import FakeUpstream

pytestmark = pytest.mark.slow

SIZE = {"size": "256x256"}


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status or "State:\tX" in status


async def _wait_dead(pid: int, timeout_s: float = 20) -> None:
    with anyio.fail_after(timeout_s):
        while not _gone(pid):
            await anyio.sleep(0.02)


async def _submit(client: Client, **args: Any) -> str:
    result = await client.call_tool("generate_image", {"prompt": "crash test", "as_job": True, **args})
    assert not result.is_error, result.content
    return str((result.structured_content or {})["job"]["job_id"])


async def _jobs(client: Client, ids: list[str], wait_s: float = 0) -> dict[str, dict[str, Any]]:
    result = await client.call_tool("get_jobs", {"job_ids": ids, "wait_s": wait_s})
    assert not result.is_error, result.content
    return {job["job_id"]: job for job in (result.structured_content or {})["jobs"]}


def _check_final_paths(images: Path) -> None:
    """What a reader sees: every visible image file is complete and decodes."""
    for path in image_files(images):
        verify_image_file(path)


async def _restart_and_check(env: dict[str, str], errlog: Path, done_id: str, crashed_id: str) -> dict[str, Any]:
    with errlog.open("a") as errors:
        errors.write("--- restart ---\n")
        errors.flush()
        async with Client(stdio_client(server_params(env), errlog=errors)) as client:
            with anyio.fail_after(30):
                after = await _jobs(client, [done_id, crashed_id])
                listed = await client.call_tool("get_jobs", {})
                done_path = Path(after[done_id]["result"]["images"][0]["path"])
                read = await client.read_resource(after[done_id]["result"]["images"][0]["resource_uri"])
    assert after[done_id]["state"] == "done"
    verify_image_file(done_path)
    assert read.contents and getattr(read.contents[0], "blob", None)
    crashed = after[crashed_id]
    assert crashed["state"] == "failed", crashed  # never stuck in running
    assert crashed["error"]["code"] == "interrupted"
    assert crashed["may_be_billed"] is True  # it was sent: say so, never re-send silently
    unfinished = [j for j in (listed.structured_content or {})["jobs"] if j["state"] in ("queued", "running")]
    assert unfinished == []
    return crashed


@pytest.mark.parametrize("failpoint", ["mid_write", "before_link", "after_link"])
async def test_crash_while_publishing_an_image(failpoint: str, isolated_env: Path, tmp_path: Path) -> None:
    images = isolated_env / "data" / "images"
    pidfile = tmp_path / "pid"
    errlog = tmp_path / "stderr.log"
    crashing = child_env(
        {
            "ATELIER_TEST_PIDFILE": str(pidfile),
            "ATELIER_TEST_FAILPOINT": failpoint,
            "ATELIER_TEST_FAILPOINT_SKIP": "1",
            "ATELIER_DEFAULT_MODEL": "placeholder",
        }
    )
    with errlog.open("w") as errors, contextlib.suppress(Exception):  # the client notices its server died
        async with Client(stdio_client(server_params(crashing), errlog=errors)) as client:
            with anyio.fail_after(60):
                done_id = await _submit(client, **SIZE)  # the first image passes the failpoint
                assert (await _jobs(client, [done_id], wait_s=20))[done_id]["state"] == "done"
                crashed_id = await _submit(client, **SIZE)
                await _wait_dead(int(pidfile.read_text()))
    assert _gone(int(pidfile.read_text()))

    # Right after the crash, before any restart: no torn file at a final path.
    _check_final_paths(images)
    leftovers = temp_leftovers(images)
    if failpoint in ("mid_write", "before_link"):
        assert len(image_files(images)) == 1  # only the finished job's image
        assert leftovers, "the crash should have left a hidden temp file"
    else:
        assert len(image_files(images)) == 2  # published complete; sidecar/job row not written
    # Age the leftovers past the sweep threshold: start-up removes crash orphans.
    old = time.time() - 7200
    for path in leftovers:
        os.utime(path, (old, old))

    await _restart_and_check(child_env({"ATELIER_DEFAULT_MODEL": "placeholder"}), errlog, done_id, crashed_id)
    _check_final_paths(images)
    assert temp_leftovers(images) == []
    assert "Traceback" not in errlog.read_text().split("--- restart ---")[-1]  # recovery is quiet


async def test_sigkill_while_the_provider_holds_the_request(isolated_env: Path, tmp_path: Path) -> None:
    images = isolated_env / "data" / "images"
    pidfile = tmp_path / "pid"
    errlog = tmp_path / "stderr.log"
    with FakeUpstream() as upstream:
        from reliability_kit import openai_ok

        upstream.reply("POST", "/v1/images/generations", json=openai_ok())  # the job that finishes
        upstream.reply("POST", "/v1/images/generations", hang=True)  # held until the kill
        upstream.reply("POST", "/v1/images/generations", json=openai_ok())  # would be a re-send
        vendor = {
            "OPENAI_API_KEY": CANARY,
            "ATELIER_PROVIDERS__OPENAI__BASE_URL": upstream.url + "/v1",
            "ATELIER_DEFAULT_MODEL": "openai/gpt-image-1-mini",
        }
        env = child_env({"ATELIER_TEST_PIDFILE": str(pidfile), **vendor})
        with errlog.open("w") as errors, contextlib.suppress(Exception):
            async with Client(stdio_client(server_params(env), errlog=errors)) as client:
                with anyio.fail_after(60):
                    done_id = await _submit(client)
                    assert (await _jobs(client, [done_id], wait_s=20))[done_id]["state"] == "done"
                    crashed_id = await _submit(client)
                    while len(upstream.requests) < 2:
                        await anyio.sleep(0.02)
                    os.kill(int(pidfile.read_text()), signal.SIGKILL)
                    await _wait_dead(int(pidfile.read_text()))
        _check_final_paths(images)
        crashed = await _restart_and_check(child_env(vendor), errlog, done_id, crashed_id)
        assert "not re-sent" in crashed["error"]["message"]
        time.sleep(0.3)  # give a (wrong) automatic re-send the chance to show up
        assert len(upstream.requests) == 2  # the interrupted call was never resubmitted
    assert len(image_files(images)) == 1


async def test_crash_after_two_of_four_images_keeps_the_two(isolated_env: Path, tmp_path: Path) -> None:
    """PF3: a job asked for 4 images dies right after publishing the second. After the
    restart the two published files are intact, the job is interrupted, nothing is torn."""
    images = isolated_env / "data" / "images"
    pidfile = tmp_path / "pid"
    errlog = tmp_path / "stderr.log"
    crashing = child_env(
        {
            "ATELIER_TEST_PIDFILE": str(pidfile),
            "ATELIER_TEST_FAILPOINT": "after_link",
            "ATELIER_TEST_FAILPOINT_SKIP": "2",
            "ATELIER_DEFAULT_MODEL": "placeholder",
        }
    )
    with errlog.open("w") as errors, contextlib.suppress(Exception):
        async with Client(stdio_client(server_params(crashing), errlog=errors)) as client:
            with anyio.fail_after(60):
                done_id = await _submit(client, **SIZE)  # image 1 of the run passes
                assert (await _jobs(client, [done_id], wait_s=20))[done_id]["state"] == "done"
                crashed_id = await _submit(client, n=4, **SIZE)  # 2nd of these 4 is the last
                await _wait_dead(int(pidfile.read_text()))
    published = image_files(images)
    assert len(published) == 3  # the finished job's image + two of the four
    crashed = await _restart_and_check(child_env({"ATELIER_DEFAULT_MODEL": "placeholder"}), errlog, done_id, crashed_id)
    assert image_files(images) == published
    # The job recorded each file it finished publishing: the caller learns what it has and
    # needs to ask only for the rest (the second file was linked, then the process died
    # before it could be recorded, so at least the first one is reported).
    recorded = crashed["error"]["saved"]
    assert recorded and set(recorded) <= {str(p) for p in published}
    assert "were saved before it stopped" in crashed["error"]["message"]
    for path in published:
        verify_image_file(path)
