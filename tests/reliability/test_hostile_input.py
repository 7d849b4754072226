"""Hostile input, round two (issue 18): each test attacks a real ``atelier-mcp`` process
(stdio or HTTP) and shows the bound or the refusal.

- ``resources/read`` refuses files above ``storage.max_resource_bytes`` before reading
  them, and reads off the event loop;
- vendor-URL allow-lists match scheme, host and port (an image link on the API host but
  another port is never fetched);
- credentials inside a configured URL never reach doctor, logs, errors or state;
- a vendor answer is bounded by what the requested size and format can take before it
  is decoded, and the saved file is exactly the image (no trailing junk);
- a call's input images together are capped in bytes and pixels, refused before any
  upstream call;
- a request that cannot be decoded (a lone surrogate) still gets a JSON-RPC error
  answer, with its id over stdio;
- the HTTP transport matches Host and Origin exactly (``127.0.0.1:1@evil.com`` fails);
- after a crash, start-up sweeps temp files at once, attaches a published image to its
  interrupted job and rebuilds missing sidecars from the job records.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from reliability_kit import (
    CANARY,
    MINIMAX_ROUTE,
    OPENAI_ROUTE,
    PROVIDERS,
    database_bytes,
    files_under,
    image_files,
    openai_ok,
    queue,
)
from stdio_kit import RawStdio, atelier_command, child_env, server_params

from atelier_core.testing import FakeUpstream
from test_e2e_http import INIT, MCP_HEADERS, free_port, running

pytestmark = pytest.mark.slow

MODEL = "openai/gpt-image-1-mini"


def _openai_env(url: str, **extra: str) -> dict[str, str]:
    """A child environment with the OpenAI provider aimed at ``url`` (no retries)."""
    env = {
        "OPENAI_API_KEY": CANARY,
        "ATELIER_PROVIDERS__OPENAI__BASE_URL": url + "/v1",
        "ATELIER_PROVIDERS__OPENAI__MAX_RETRIES": "0",
        **extra,
    }
    return child_env(env)


@asynccontextmanager
async def _stdio(env: dict[str, str], errlog: Path, *, timeout_s: float = 90) -> AsyncIterator[Client]:
    with errlog.open("w") as errors, anyio.fail_after(timeout_s):
        async with Client(stdio_client(server_params(env), errlog=errors)) as client:
            yield client


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


# -- 5. vendor-URL allow-lists: scheme, host and port ------------------------------------------


async def test_an_image_link_on_the_api_host_but_another_port_is_never_fetched(
    isolated_env: Path,
    tmp_path: Path,
) -> None:
    png = openai_ok()["data"][0]["b64_json"]
    with FakeUpstream() as api, FakeUpstream() as elsewhere:
        elsewhere.reply("GET", "/img.png", body=base64.b64decode(png), content_type="image/png")
        api.reply("GET", "/files/own.png", body=base64.b64decode(png), content_type="image/png")
        foreign = elsewhere.url + "/img.png"  # 127.0.0.1 as well, another port
        own = api.url + "/files/own.png"  # the API's own origin
        api.reply("POST", OPENAI_ROUTE, json={"created": 1, "data": [{"url": foreign}]})
        api.reply("POST", OPENAI_ROUTE, json={"created": 1, "data": [{"url": own}]})
        async with _stdio(_openai_env(api.url), tmp_path / "stderr.log") as client:
            refused = await client.call_tool("generate_image", {"prompt": "a fox", "model": MODEL})
            fetched = await client.call_tool("generate_image", {"prompt": "a fox", "model": MODEL})
        assert elsewhere.requests == []  # not one connection to the other port
        assert refused.is_error, _text(refused)
        assert not fetched.is_error, _text(fetched)  # the API's own origin still works
        assert [r.path for r in api.requests if r.method == "GET"] == ["/files/own.png"]
    assert len(image_files(isolated_env / "data" / "images")) == 1


# -- 7. exact Host and Origin matching ------------------------------------------------------


async def test_host_and_origin_are_matched_exactly_not_by_prefix(tmp_path: Path) -> None:
    with running(tmp_path) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx2.AsyncClient(timeout=10) as http:

            async def post(**headers: str) -> int:
                answer = await http.post(url, json=INIT, headers={**MCP_HEADERS, **headers})
                return answer.status_code

            for host in (
                "127.0.0.1:1@evil.com",
                f"127.0.0.1:{port}@evil.com",
                "127.0.0.1:80/evil",
                "127.0.0.1:x",
                "127.0.0.1:99999",
                "localhost.evil.com",
                "localhost:1.evil.com",
                "[::1]:1]evil",
                "127.0.0.1 :1",
                "",
            ):
                assert await post(host=host) == 421, host
            for origin in (
                "http://127.0.0.1:1@evil.com",
                "http://localhost:1.evil.com",
                "http://127.0.0.1:8/x",
                "http://localhost.evil.com",
                "null",
                "http://user@localhost:1",
                "ftp://127.0.0.1:1",
            ):
                assert await post(origin=origin) == 403, origin
            # What a real local client sends still works.
            assert await post(host=f"127.0.0.1:{port}") == 200
            assert await post(host=f"localhost:{port}", origin=f"http://localhost:{port}") == 200
            assert await post(host=f"[::1]:{port}", origin="http://127.0.0.1") == 200


# -- 4. credentials inside a URL are redacted everywhere --------------------------------------

URL_PASSWORD = "pw-urlcanary-K3r8Vd"


async def test_credentials_in_a_base_url_never_reach_doctor_logs_errors_or_state(
    isolated_env: Path,
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there: the OpenAI call fails and says where
    with FakeUpstream() as upstream:
        queue(upstream, MINIMAX_ROUTE, PROVIDERS["minimax"].ok())
        host = upstream.url.removeprefix("http://")
        env = child_env(
            {
                "OPENAI_API_KEY": CANARY,
                "MINIMAX_API_KEY": CANARY,
                "ATELIER_PROVIDERS__OPENAI__BASE_URL": f"http://atelier:{URL_PASSWORD}@127.0.0.1:{closed}/v1",
                "ATELIER_PROVIDERS__OPENAI__MAX_RETRIES": "0",
                "ATELIER_PROVIDERS__MINIMAX__BASE_URL": f"http://atelier:{URL_PASSWORD}@{host}",
                "ATELIER_PROVIDERS__MINIMAX__MAX_RETRIES": "0",
                "ATELIER_LOGGING__LEVEL": "DEBUG",
            }
        )
        errlog = tmp_path / "stderr.log"
        results: list[str] = []
        async with _stdio(env, errlog) as client:
            failed = await client.call_tool("generate_image", {"prompt": "a fox", "model": MODEL})
            job = await client.call_tool("generate_image", {"prompt": "a fox", "model": MODEL, "as_job": True})
            job_id = (job.structured_content or {})["job"]["job_id"]
            waited = await client.call_tool("get_jobs", {"job_ids": [job_id], "wait_s": 20})
            saved = await client.call_tool("generate_image", {"prompt": "a fox", "model": "minimax/image-01"})
            results += [r.model_dump_json() for r in (failed, job, waited, saved)]
        with anyio.fail_after(120):
            doctor = await anyio.run_process([*atelier_command(), "doctor"], env=env, check=False)
    assert failed.is_error and "failed" in _text(waited), _text(waited)
    assert not saved.is_error, _text(saved)
    assert upstream.requests, "the MiniMax call went out through the credentialed base URL"
    assert doctor.returncode == 0, doctor.stderr.decode()
    assert b"[REDACTED]@127.0.0.1" in doctor.stdout  # the URL is shown, its credentials not
    outputs = {
        "tool results": "\n".join(results).encode(),
        "doctor stdout": doctor.stdout,
        "doctor stderr": doctor.stderr,
        "server stderr (DEBUG)": errlog.read_bytes(),
        "the state database": database_bytes(isolated_env / "data"),
    }
    outputs.update({str(p): p.read_bytes() for p in files_under(isolated_env)})
    for where, blob in outputs.items():
        assert URL_PASSWORD.encode() not in blob, f"the URL password leaked into {where}"


# -- 3. a per-call cap on total input bytes and pixels ---------------------------------------


def _peak_rss_kib(pid: int) -> int:
    """The high-water mark of a live process's resident set (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def _noise_png(path: Path, edge: int) -> int:
    """An RGBA PNG of random pixels (incompressible: about 4 bytes a pixel); its size."""
    import os

    from PIL import Image

    Image.frombytes("RGBA", (edge, edge), os.urandom(edge * edge * 4)).save(path, compress_level=1)
    return path.stat().st_size


async def test_sixteen_large_inputs_are_refused_before_any_upstream_call(
    isolated_env: Path,
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    big = inputs / "big.png"
    size = _noise_png(big, 3000)  # ~36 MB, under the per-image cap of 50 MiB
    assert 30_000_000 < size < 50 * 1024 * 1024
    solid = inputs / "wide.png"  # 40 MP of one colour: a few KB, the per-image pixel cap
    from PIL import Image

    Image.new("RGB", (8000, 5000), (10, 20, 30)).save(solid)
    pidfile = tmp_path / "pid"
    with FakeUpstream() as upstream:
        env = _openai_env(
            upstream.url, ATELIER_STORAGE__INPUT_DIRS=json.dumps([str(inputs)]), ATELIER_TEST_PIDFILE=str(pidfile)
        )
        async with _stdio(env, tmp_path / "stderr.log") as client:
            pid = int(pidfile.read_text())
            await client.call_tool("list_available_models", {"provider": "placeholder"})
            before = _peak_rss_kib(pid)
            by_bytes = await client.call_tool(
                "edit_image", {"prompt": "merge them", "model": MODEL, "images": [str(big)] * 16}
            )
            growth_mib = (_peak_rss_kib(pid) - before) / 1024
            by_pixels = await client.call_tool(
                "edit_image", {"prompt": "merge them", "model": MODEL, "images": [str(solid)] * 4}
            )
        assert upstream.requests == []  # refused before any upstream call
    assert by_bytes.is_error and by_pixels.is_error
    bytes_text, pixels_text = _text(by_bytes), _text(by_pixels)
    assert "images[1]" in bytes_text and "67,108,864 bytes" in bytes_text, bytes_text
    assert "max_call_input_bytes" in bytes_text
    assert "images[2]" in pixels_text and "100,000,000 pixels" in pixels_text, pixels_text
    assert "max_call_input_pixels" in pixels_text
    # The attack run saw 767 MB for 16 x 36 MB: now one image is read (and decoded once
    # to check it), the second never is.
    assert growth_mib < 200, f"peak RSS grew by {growth_mib:.0f} MiB"


# -- 1. resources/read: refused above a configured size, read off the event loop -------------


async def test_resources_read_refuses_huge_files_and_never_stalls_other_requests(
    isolated_env: Path,
    tmp_path: Path,
) -> None:
    import hashlib
    import queue as queues
    import time

    out = isolated_env / "data" / "images" / "2026-01-01"
    out.mkdir(parents=True)
    for name, size in (("three-hundred-mb.png", 300_000_000), ("two-gb.png", 2_000_000_000)):
        with (out / name).open("wb") as file:
            file.truncate(size)  # sparse: costs no disk, reads as zeros
    allowed = out / "sixty-mb.png"
    allowed.write_bytes(os.urandom(60 * 1024 * 1024))
    pidfile = tmp_path / "pid"
    raw = RawStdio(child_env({"ATELIER_TEST_PIDFILE": str(pidfile)}), tmp_path / "stderr.log")
    try:
        raw.initialize()
        pid = int(pidfile.read_text())
        before = _peak_rss_kib(pid)
        for name in ("three-hundred-mb.png", "two-gb.png"):
            started = time.monotonic()
            answer = raw.request("resources/read", {"uri": f"atelier://images/2026-01-01/{name}"}, timeout_s=30)
            assert time.monotonic() - started < 5
            assert answer["error"]["code"] == -32602, answer
            message = answer["error"]["message"]
            assert "storage.max_resource_bytes" in message and "100,663,296" in message, message
        assert (_peak_rss_kib(pid) - before) / 1024 < 20  # refused from fstat: nothing read

        # A 60 MB read in flight does not hold up a ping sent right after it.
        raw.send(
            {
                "jsonrpc": "2.0",
                "id": "big",
                "method": "resources/read",
                "params": {"uri": "atelier://images/2026-01-01/sixty-mb.png"},
            }
        )
        raw.send({"jsonrpc": "2.0", "id": "ping", "method": "ping"})
        order: list[str] = []
        blob = ""
        deadline = time.monotonic() + 60
        while len(order) < 2:
            try:
                line = raw._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queues.Empty:
                raise AssertionError(f"answers so far: {order}") from None
            assert line is not None, "the server closed stdout"
            message = json.loads(line)
            if message.get("id") in ("big", "ping"):
                order.append(message["id"])
                if message["id"] == "big":
                    blob = message["result"]["contents"][0]["blob"]
        assert order == ["ping", "big"]
        assert hashlib.sha256(base64.b64decode(blob)).digest() == hashlib.sha256(allowed.read_bytes()).digest()
        growth_mib = (_peak_rss_kib(pid) - before) / 1024
        # Atelier holds one base64 copy (80 MiB) and writes the answer line as bytes,
        # serialised once (measured: +253 MiB in all, where the SDK's own path took +324).
        # The bound that matters is the cap: nothing above 64 MiB is read at all.
        assert growth_mib < 5 * 60, f"peak RSS grew by {growth_mib:.0f} MiB for a 60 MiB file"
    finally:
        assert raw.close() == 0


# -- 6. a request that cannot be decoded still gets an answer --------------------------------


def test_a_lone_surrogate_in_the_arguments_gets_a_json_rpc_error_answer(tmp_path: Path) -> None:
    import time

    server = RawStdio(child_env(), tmp_path / "stderr.log")
    try:
        server.initialize()
        assert server.process.stdin is not None
        for ident, arguments in (
            (41, b'{"prompt": "\\ud800 fox", "model": "placeholder"}'),
            ("s-42", b'{"prompt": "fox", "options": {"\\udfff": 1}}'),
        ):
            line = (
                b'{"jsonrpc": "2.0", "id": ' + json.dumps(ident).encode() + b', "method": "tools/call",'
                b' "params": {"name": "generate_image", "arguments": ' + arguments + b"}}\n"
            )
            started = time.monotonic()
            server.process.stdin.write(line)
            server.process.stdin.flush()
            while True:  # the answer, not the client's timeout
                assert time.monotonic() - started < 10, f"no answer to id {ident!r}"
                got = server._queue.get(timeout=10)
                assert got is not None
                message = json.loads(got)
                if message.get("id") == ident:
                    break
            assert message["error"]["code"] == -32602, message
            assert "params.arguments." in message["error"]["message"], message
            assert "not valid Unicode" in message["error"]["message"]
        # Nothing was run, and the server keeps serving.
        answer = server.request(
            "tools/call",
            {
                "name": "generate_image",
                "arguments": {"prompt": "still here", "model": "placeholder", "size": "256x256"},
            },
        )
        assert answer["result"].get("isError") is not True, answer
    finally:
        assert server.close() == 0
    for line in server.stdout_lines:
        assert json.loads(line).get("jsonrpc") == "2.0", line[:200]


async def test_a_lone_surrogate_over_http_is_answered_not_dropped(tmp_path: Path) -> None:
    with running(tmp_path) as port:
        url = f"http://127.0.0.1:{port}/mcp"
        body = (
            b'{"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {"protocolVersion": '
            b'"2025-11-25", "capabilities": {}, "clientInfo": {"name": "\\ud800", "version": "0"}}}'
        )
        async with httpx2.AsyncClient(timeout=10) as http:
            answer = await http.post(url, content=body, headers=MCP_HEADERS)
            assert answer.status_code == 400
            error = answer.json()
            assert error["id"] == 5 and error["error"]["code"] == -32602, error  # the id, recovered
            assert "params.clientInfo.name" in error["error"]["message"]
            garbage = await http.post(url, content=b'{"id": 6, "method": "x", "p": "\\ud800', headers=MCP_HEADERS)
            assert garbage.status_code == 400 and garbage.json()["id"] is None  # not JSON: the SDK's answer
            ok = await http.post(url, json=INIT, headers=MCP_HEADERS)
            assert ok.status_code == 200


# -- 2. vendor answers: bounded before decoding, saved exactly -------------------------------


async def test_a_valid_image_with_junk_appended_is_never_saved(isolated_env: Path, tmp_path: Path) -> None:
    import hashlib

    png = base64.b64decode(openai_ok()["data"][0]["b64_json"])
    huge = base64.b64encode(png + os.urandom(40 * 1024 * 1024)).decode()  # the attack: 40 MB of junk
    tail = base64.b64encode(png + b"\0" * 3 + b"junk").decode()  # a few bytes after IEND
    good = base64.b64encode(png).decode()
    pidfile = tmp_path / "pid"
    with FakeUpstream() as upstream:
        for b64 in (huge, tail, good):
            upstream.reply("POST", OPENAI_ROUTE, json={"created": 1, "data": [{"b64_json": b64}]})
        # Without the provenance Atelier embeds by default (library.embed_metadata), the
        # saved file must be the received image byte for byte.
        env = _openai_env(
            upstream.url,
            ATELIER_PROVIDERS__OPENAI__MAX_RETRIES="2",
            ATELIER_TEST_PIDFILE=str(pidfile),
            ATELIER_LIBRARY__EMBED_METADATA="false",
        )
        async with _stdio(env, tmp_path / "stderr.log") as client:
            call = {"prompt": "a fox", "model": MODEL, "size": "1024x1024"}
            pid = int(pidfile.read_text())
            await client.call_tool("list_available_models", {"provider": "placeholder"})
            before = _peak_rss_kib(pid)
            too_big = await client.call_tool("generate_image", call)
            growth_mib = (_peak_rss_kib(pid) - before) / 1024
            junk_tail = await client.call_tool("generate_image", call)
            saved = await client.call_tool("generate_image", call)
        assert len(upstream.requests) == 3  # each answer was billed once, never retried
    assert too_big.is_error
    # Refused from the answer's size (the HTTP transport stops reading at the limit the
    # requested 1024x1024 PNG implies), never parsed or decoded: the 56 MB body is not held.
    assert "more than the" in _text(too_big) and "not read further" in _text(too_big), _text(too_big)
    assert growth_mib < 40, f"peak RSS grew by {growth_mib:.0f} MiB for a refused 56 MB answer"
    assert junk_tail.is_error and "not part of the image" in _text(junk_tail), _text(junk_tail)
    assert not saved.is_error, _text(saved)
    (record,) = (saved.structured_content or {})["images"]
    files = image_files(isolated_env / "data" / "images")
    assert [str(p) for p in files] == [record["path"]]  # only the clean answer was saved
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == hashlib.sha256(png).hexdigest()


# -- 8. after a crash, start-up reconciles the output folder with the jobs -------------------


@pytest.mark.parametrize("failpoint", ["mid_write", "after_link"])
async def test_start_up_reconciles_crash_leftovers_with_the_jobs(
    failpoint: str,
    isolated_env: Path,
    tmp_path: Path,
) -> None:
    import contextlib
    import time

    from reliability_kit import temp_leftovers, verify_image_file

    images = isolated_env / "data" / "images"
    pidfile = tmp_path / "pid"
    crashing = child_env(
        {
            "ATELIER_TEST_PIDFILE": str(pidfile),
            "ATELIER_TEST_FAILPOINT": failpoint,
            "ATELIER_TEST_FAILPOINT_SKIP": "1",
            "ATELIER_DEFAULT_MODEL": "placeholder",
        }
    )
    call = {"prompt": "crash test", "as_job": True, "size": "256x256"}
    with (tmp_path / "stderr.log").open("w") as errors, contextlib.suppress(Exception):
        async with Client(stdio_client(server_params(crashing), errlog=errors)) as client:
            with anyio.fail_after(60):
                done = await client.call_tool("generate_image", call)
                done_id = (done.structured_content or {})["job"]["job_id"]
                await client.call_tool("get_jobs", {"job_ids": [done_id], "wait_s": 20})
                crashed = await client.call_tool("generate_image", call)
                crashed_id = (crashed.structured_content or {})["job"]["job_id"]
                while Path(f"/proc/{int(pidfile.read_text())}").exists():
                    await anyio.sleep(0.05)
    leftovers = temp_leftovers(images)
    assert leftovers, "the crash should have left a temp file"  # young: minutes, not an hour old
    # The finished job's sidecar is lost too (e.g. a failed sidecar write).
    (done_image,) = [
        p
        for p in image_files(images)
        if done_id in (p.with_name(p.name + ".json").read_text() if p.with_name(p.name + ".json").exists() else "")
    ]
    done_image.with_name(done_image.name + ".json").unlink()

    async with _stdio(child_env({"ATELIER_DEFAULT_MODEL": "placeholder"}), tmp_path / "restart.log") as client:
        deadline = time.monotonic() + 20
        while True:
            listed = await client.call_tool("get_jobs", {"job_ids": [crashed_id]})
            (job,) = (listed.structured_content or {})["jobs"]
            rebuilt = done_image.with_name(done_image.name + ".json")
            attached = failpoint == "mid_write" or job.get("error", {}).get("saved")
            if attached and rebuilt.exists() and not temp_leftovers(images):
                break
            assert time.monotonic() < deadline, (job, temp_leftovers(images), rebuilt.exists())
            await anyio.sleep(0.2)
    assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
    assert temp_leftovers(images) == []  # swept at once: their writer is dead
    record = json.loads(rebuilt.read_text())  # rebuilt from the job record
    assert record["job"] == done_id and record["prompt"] == "crash test" and "rebuilt" in record
    if failpoint == "after_link":
        (saved,) = job["error"]["saved"]  # the published image is the job's, not an orphan
        verify_image_file(Path(saved))
        sidecar = json.loads(Path(saved + ".json").read_text())
        assert sidecar["job"] == crashed_id and sidecar["width"] == 256
        assert "Found on disk after the crash" in job["error"]["message"]
    else:
        assert "saved" not in job["error"] and len(image_files(images)) == 1
