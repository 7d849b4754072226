"""Issue 15's four defects, each driven through the MCP tools of a real server (the SDK's
client, the real OpenAI provider and SDK) against the fake vendor on 127.0.0.1.

1. Billed, then refused: every output name is checked before the send stage.
2. Spent, not recorded: every answer that may have been billed is in the ledger.
3. The sidecar tells the result's story: same applied values (what came back) and cost.
4. Work done once: inputs read once, each returned image decoded once, per call.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from reliability_kit import OPENAI_ROUTE, build_stack, image_files, openai_ok, queue

from atelier_core.engine.pipeline import Pipeline
from atelier_core.plugin.errors import StorageError
from atelier_core.testing import FakeUpstream, Reply, connect, make_image

MODEL = "openai/gpt-image-1-mini"


def _answer(*images: bytes) -> Reply:
    return Reply(json={"data": [{"b64_json": base64.b64encode(i).decode()} for i in images]})


async def _call(client: Client, tool: str = "generate_image", **args: Any) -> Any:
    return await client.call_tool(tool, {"prompt": "a lighthouse", "model": MODEL, **args})


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def _ledger(stack: Pipeline) -> list[dict[str, Any]]:
    return await stack.ledger.entries(since_day="2000-01-01")


# -- 1. everything that can refuse a call refuses it before the send stage --------------


@pytest.mark.parametrize(
    "case", ["symlink_out", "second_name_taken", "suffix_too_long", "sidecar_too_long", "file_in_the_way"]
)
async def test_a_name_the_save_would_refuse_is_refused_before_anything_is_sent(
    case: str, stack: Pipeline, upstream: FakeUpstream, tmp_path: Path
) -> None:
    root = stack.store.root
    outside = tmp_path / "outside"
    outside.mkdir()
    args: dict[str, Any] = {
        "symlink_out": {"filename": "link/cat.png"},
        "second_name_taken": {"filename": "taken.png", "n": 2},
        "suffix_too_long": {"filename": "a" * 250 + ".png", "n": 2},  # 254 bytes; image 2 is 256
        "sidecar_too_long": {"filename": "b" * 248 + ".png"},  # 252 bytes; its .json is 257
        "file_in_the_way": {"filename": "ok.png/x.png"},
    }[case]
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "taken-2.png").write_bytes(make_image(8, 8, "png"))
    (root / "ok.png").write_bytes(make_image(8, 8, "png"))
    queue(upstream, OPENAI_ROUTE, Reply(json=openai_ok(2)))
    before = sorted(p.name for p in root.rglob("*"))
    async with connect(stack) as client:
        result = await _call(client, **args)
    assert result.is_error, _text(result)
    assert "filename" in _text(result) and "Fix:" in _text(result)
    assert upstream.requests == []  # nothing sent, nothing billed
    assert await _ledger(stack) == []
    assert sorted(p.name for p in root.rglob("*")) == before and list(outside.iterdir()) == []


async def test_an_answer_in_another_format_is_kept_under_its_own_extension(
    stack: Pipeline, upstream: FakeUpstream
) -> None:
    queue(upstream, OPENAI_ROUTE, _answer(make_image(64, 64, "jpeg")))
    async with connect(stack) as client:
        result = await _call(client, filename="wf.png")
    assert not result.is_error, _text(result)
    (image,) = result.structured_content["images"]
    assert Path(image["path"]) == stack.store.root / "wf.jpg" and image["format"] == "jpeg"
    assert (stack.store.root / "wf.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert not (stack.store.root / "wf.png").exists()
    assert any("JPEG" in note and "wf.jpg" in note for note in result.structured_content["notes"])
    assert result.structured_content["applied"]["output_format"] == "jpeg"
    (line,) = await _ledger(stack)
    assert line["status"] == "billed" and line["images"] == 1


# -- 2. every answer that may have been billed is recorded and counted -------------------


async def test_an_unusable_answer_is_recorded_counted_and_said(tmp_path: Path, upstream: FakeUpstream) -> None:
    (tmp_path / "probe").mkdir()
    probe = build_stack(tmp_path / "probe", upstream)
    async with connect(probe) as client:
        estimate = (await _call(client, dry_run=True)).structured_content["cost"]["estimate_usd"]
    assert estimate and estimate > 0
    stack = build_stack(tmp_path, upstream, cost={"max_per_day_usd": estimate * 1.5})
    queue(upstream, OPENAI_ROUTE, Reply(json=openai_ok(truncate=0)))  # HTTP 200, image cut short
    async with connect(stack) as client:
        failed = await _call(client)
        assert failed.is_error
        assert "may have billed" in _text(failed) and f"${estimate:.4f}" in _text(failed)
        usage = (await client.call_tool("get_usage", {})).structured_content
        assert usage["calls"] == 1 and usage["total_usd"] == pytest.approx(estimate, abs=1e-6)
        # The limit counts it: a second call at the same price would pass the day's limit.
        queue(upstream, OPENAI_ROUTE, Reply(json=openai_ok()))
        refused = await _call(client)
    assert refused.is_error and "spend limit" in _text(refused)
    assert len(upstream.requests) == 1
    (line,) = await _ledger(stack)
    assert line["status"] == "maybe_billed" and line["images"] == 0


async def test_a_storage_failure_after_the_answer_is_recorded_as_billed(
    stack: Pipeline, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("could not write the image into the output root: ENOSPC", code="write_failed")

    monkeypatch.setattr(stack.store, "save", disk_full)
    queue(upstream, OPENAI_ROUTE, Reply(json=openai_ok()))
    async with connect(stack) as client:
        result = await _call(client)
    assert result.is_error and "billed for 1 image(s) that could not be saved" in _text(result)
    (line,) = await _ledger(stack)
    assert line["status"] == "partial" and line["images"] == 1 and line["cost_usd"] is not None


async def test_a_timeout_after_sending_is_recorded_as_maybe_billed(tmp_path: Path, upstream: FakeUpstream) -> None:
    stack = build_stack(tmp_path, upstream, per_provider={"openai": {"timeout_s": 0.3}})
    queue(upstream, OPENAI_ROUTE, Reply(json=openai_ok(), delay=2.0))
    async with connect(stack) as client:
        result = await _call(client)
    assert result.is_error and "may have billed" in _text(result)
    (line,) = await _ledger(stack)
    assert line["status"] == "maybe_billed" and line["cost_usd"] is not None


# -- 3. the sidecar tells the result's story ----------------------------------------------


async def test_the_sidecar_holds_the_results_applied_values_and_cost(stack: Pipeline, upstream: FakeUpstream) -> None:
    queue(upstream, OPENAI_ROUTE, Reply(json=openai_ok(size=64)))
    async with connect(stack) as client:
        result = await _call(client, size="auto", quality="low", background="opaque")
    assert not result.is_error, _text(result)
    outcome = result.structured_content
    sidecar = json.loads(Path(outcome["images"][0]["sidecar"]).read_text())
    assert sidecar["applied"] == outcome["applied"]
    assert sidecar["cost"] == outcome["cost"] and sidecar["cost"]["cost_usd"] is not None
    assert outcome["applied"]["size"] == "64x64"  # what came back, not "auto"
    assert sidecar["applied"]["quality"] == "low" and sidecar["applied"]["background"] == "opaque"


async def test_a_size_other_than_asked_is_reported_as_received_with_a_note(
    stack: Pipeline, upstream: FakeUpstream
) -> None:
    queue(upstream, OPENAI_ROUTE, _answer(make_image(64, 48, "png")))
    async with connect(stack) as client:
        result = await _call(client, size="1024x1024")
    outcome = result.structured_content
    assert outcome["applied"]["size"] == "64x48"
    assert any("1024x1024" in note and "64x48" in note for note in outcome["notes"])
    (image,) = outcome["images"]
    assert (image["width"], image["height"]) == (64, 48)
    assert json.loads(Path(image["sidecar"]).read_text())["applied"]["size"] == "64x48"


async def test_a_users_own_json_beside_the_name_is_never_replaced(stack: Pipeline, upstream: FakeUpstream) -> None:
    mine = stack.store.root / "keep.png.json"
    mine.write_text('{"my": "notes"}')
    queue(upstream, OPENAI_ROUTE, Reply(json=openai_ok()))
    async with connect(stack) as client:
        result = await _call(client, filename="keep.png")
    assert not result.is_error, _text(result)
    assert mine.read_text() == '{"my": "notes"}'
    assert result.structured_content["images"][0]["sidecar"] is None
    assert any("keep.png.json" in note for note in result.structured_content["notes"])


# -- 4. work done once ---------------------------------------------------------------------


async def test_inputs_are_read_once_and_each_image_decoded_once_per_call(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path that used to plan a call three times: ask first (spend confirmation),
    then a background job. The input is read once, each returned image decoded once."""
    from mcp_types import ElicitResult
    from PIL import Image

    from atelier_core.media import inputs

    stack = build_stack(tmp_path, upstream, cost={"ask_above_usd": 0.0})
    source = stack.store.root / "source.png"
    source.write_bytes(make_image(64, 64, "png"))
    loads: list[str] = []
    real_load = inputs.InputIntake.load

    async def counting_load(self: Any, reference: str, **kwargs: Any) -> Any:
        loads.append(reference)
        return await real_load(self, reference, **kwargs)

    monkeypatch.setattr(inputs.InputIntake, "load", counting_load)
    opened: list[int] = []
    real_open = Image.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(os.getpid())
        return real_open(*args, **kwargs)

    asked: list[str] = []

    async def confirm(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"confirm": True})

    upstream.reply("POST", "/v1/images/edits", json=openai_ok(2))
    async with connect(stack, mode="legacy", elicitation_callback=confirm) as client:
        monkeypatch.setattr(Image, "open", counting_open)
        ticket = await _call(client, "edit_image", images=[str(source)], n=2, filename="edited.png", as_job=True)
        assert not ticket.is_error, _text(ticket)
        job_id = ticket.structured_content["job"]["job_id"]
        done = await client.call_tool("get_jobs", {"job_ids": [job_id], "wait_s": 30})
        monkeypatch.setattr(Image, "open", real_open)
    assert done.structured_content["all_finished"], _text(done)
    assert len(asked) == 1
    assert loads == [str(source)]  # planned once: not again for the confirmation or the job
    # One decode for the input, one per returned image; the previews come from those decodes.
    assert len(opened) == 1 + 2
    assert len(image_files(stack.store.root)) == 3 and len(upstream.requests) == 1
