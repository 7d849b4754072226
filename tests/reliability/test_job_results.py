"""J5: a finished job whose image file the user deleted still answers ``get_jobs`` —
no crash, the record is kept, and the missing file is said, not hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier_core.testing import FakeProvider, build_test_atelier, connect

pytestmark = pytest.mark.anyio


async def test_deleted_result_files_do_not_break_get_jobs(tmp_path: Path) -> None:
    atelier = build_test_atelier(tmp_path, [FakeProvider()], default_model="fake/fake-image")
    async with connect(atelier) as client:
        submitted = await client.call_tool("generate_image", {"prompt": "x", "size": "256x256", "as_job": True})
        job_id = (submitted.structured_content or {})["job"]["job_id"]
        done = await client.call_tool("get_jobs", {"job_ids": [job_id], "wait_s": 10})
        record = (done.structured_content or {})["jobs"][0]["result"]["images"][0]
        Path(record["path"]).unlink()
        again = await client.call_tool("get_jobs", {"job_ids": [job_id]})
        read = await client.call_tool("get_jobs", {})
    assert not again.is_error and not read.is_error
    job = (again.structured_content or {})["jobs"][0]
    assert job["state"] == "done" and job["result"]["images"][0]["path"] == record["path"]
    text = "\n".join(getattr(block, "text", "") for block in again.content)
    assert record["path"] in text or record["resource_uri"] in text
    assert not any(block.type == "image" for block in again.content)  # no stale preview invented
