"""Moving from the servers people use today, through an MCP client against the fake
OpenAI server: ``user`` → ``safety_identifier``, ``input_fidelity`` on models that fix it,
retired models that point to the mapping, and the Responses API edit route with the
vendor's own turn chaining (``previous_response_id``) inside edit sessions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from openai_support import EDIT, GEN, KEY, b64, images_json, png_bytes

import atelier_openai
from atelier_core.engine.pipeline import Pipeline
from atelier_core.mcp.app import build_server
from atelier_core.settings import Settings
from atelier_core.testing import FakeUpstream

pytestmark = pytest.mark.usefixtures("anyio_backend")
RESPONSES = "/v1/responses"
SOURCE = "data:image/png;base64," + b64(png_bytes(16, 16))


def make_atelier(tmp_path: Path, upstream: FakeUpstream, **openai: Any) -> Pipeline:
    values: dict[str, Any] = {
        "backoff_base_s": 0.01,
        "timeout_s": 5.0,
        "api_key": KEY,
        "base_url": upstream.url + "/v1",
        **openai,
    }
    settings = Settings(storage={"output_dir": str(tmp_path / "out")}, providers={"openai": values})
    return Pipeline.build(settings, plugins=[("openai", atelier_openai)], entry_points=False)


def response_json(response_id: str, *, colour: str = "red") -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1,
        "model": "gpt-4.1-mini",
        "status": "completed",
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "output": [
            {
                "id": "ig_1",
                "type": "image_generation_call",
                "status": "completed",
                "result": b64(png_bytes(16, 16, colour=colour)),
                "revised_prompt": "a fox, refined",
                "size": "1024x1024",
                "quality": "low",
                "output_format": "png",
                "background": "opaque",
            }
        ],
        "usage": {
            "input_tokens": 120,
            "output_tokens": 30,
            "total_tokens": 150,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def test_user_is_sent_as_safety_identifier_with_a_note(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", GEN, json=images_json(1))
    async with Client(build_server(make_atelier(tmp_path, upstream))) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a fox", "model": "openai/gpt-image-2", "options": {"user": "user-42"}}
        )
    assert not result.is_error, result.content
    assert upstream.requests[0].json()["safety_identifier"] == "user-42"
    assert "user" not in upstream.requests[0].json()
    assert any("sent as options.safety_identifier" in n for n in result.structured_content["notes"])  # type: ignore[index]


async def test_input_fidelity_on_a_model_that_fixes_it_is_accepted_and_reported(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.reply("POST", EDIT, json=images_json(1))
    async with Client(build_server(make_atelier(tmp_path, upstream))) as client:
        result = await client.call_tool(
            "edit_image",
            {
                "prompt": "make it blue",
                "model": "openai/gpt-image-2",
                "images": [SOURCE],
                "options": {"input_fidelity": "high"},
            },
        )
    assert not result.is_error, result.content
    outcome = result.structured_content or {}
    assert outcome["applied"]["not_applied"] == {"options.input_fidelity": "high"}
    assert any("not applied" in n for n in outcome["notes"])
    assert "input_fidelity" not in upstream.requests[0].form()


async def test_retired_model_points_to_the_mapping(tmp_path: Path, upstream: FakeUpstream) -> None:
    async with Client(build_server(make_atelier(tmp_path, upstream))) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "model": "gpt-image-1"})
    assert result.is_error
    assert "gpt-image-2.5-sunburst" in text(result) and "docs/migrating.md" in text(result)
    assert upstream.requests == []
    assert Path(__file__).parents[3].joinpath("docs", "migrating.md").is_file()


async def test_responses_route_per_call_sends_the_image_tool(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", RESPONSES, json=response_json("resp_1"), headers={"x-request-id": "req_r1"})
    async with Client(build_server(make_atelier(tmp_path, upstream))) as client:
        result = await client.call_tool(
            "edit_image",
            {
                "prompt": "make it blue",
                "model": "openai/gpt-image-2",
                "images": [SOURCE],
                "quality": "low",
                "options": {"route": "responses", "user": "u-1"},
            },
        )
    assert not result.is_error, result.content
    body = upstream.requests[0].json()
    assert body["model"] == "gpt-4.1-mini" and body["tool_choice"] == {"type": "image_generation"}
    tool = body["tools"][0]
    assert tool == {
        "type": "image_generation",
        "model": "gpt-image-2",
        "action": "edit",
        "size": "auto",
        "quality": "low",
        "output_format": "png",
    }
    content = body["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": "make it blue"}
    assert content[1]["type"] == "input_image" and content[1]["image_url"].startswith("data:image/png;base64,")
    assert body["safety_identifier"] == "u-1" and "previous_response_id" not in body
    outcome = result.structured_content or {}
    assert outcome["applied"]["route"] == "responses" and outcome["request_id"] == "req_r1"
    assert outcome["continuation"] == {"route": "responses", "previous_response_id": "resp_1"}
    assert any("gpt-4.1-mini" in n and "120 input and 30 output tokens" in n for n in outcome["notes"])


async def test_responses_route_per_model_chains_session_turns(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", RESPONSES, json=response_json("resp_a"))
    upstream.reply("POST", RESPONSES, json=response_json("resp_b", colour="blue"))
    upstream.reply("POST", EDIT, json=images_json(1))
    atelier = make_atelier(tmp_path, upstream, responses_edit_models=["gpt-image-2"])
    async with Client(build_server(atelier)) as client:
        started = await client.call_tool(
            "edit_session", {"action": "start", "image": SOURCE, "model": "openai/gpt-image-2"}
        )
        assert not started.is_error, started.content
        session = started.structured_content["session"]["session_id"]  # type: ignore[index]
        first = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": session, "prompt": "add a hat"}
        )
        second = await client.call_tool(
            "edit_session", {"action": "continue", "session_id": session, "prompt": "now make it blue"}
        )
        branch = await client.call_tool(
            "edit_session",
            {
                "action": "continue",
                "session_id": session,
                "prompt": "plain edit",
                "from_turn": 1,
                "options": {"route": "images"},
            },
        )
    for result in (first, second, branch):
        assert not result.is_error, result.content
    turn1, turn2 = upstream.requests[0].json(), upstream.requests[1].json()
    assert "previous_response_id" not in turn1 and len(turn1["input"][0]["content"]) == 2  # text + image
    assert turn2["previous_response_id"] == "resp_a"
    assert [c["type"] for c in turn2["input"][0]["content"]] == ["input_text"]  # the chain holds the image
    assert any("continued turn 1" in n for n in second.structured_content["outcome"]["notes"])  # type: ignore[index]
    assert upstream.requests[2].path == EDIT  # the caller chose the Images API: no chaining


async def test_previous_response_id_without_the_route_is_refused_before_sending(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    async with Client(build_server(make_atelier(tmp_path, upstream))) as client:
        result = await client.call_tool(
            "edit_image",
            {
                "prompt": "x",
                "model": "openai/gpt-image-2",
                "images": [SOURCE],
                "options": {"previous_response_id": "resp_1"},
            },
        )
        many = await client.call_tool(
            "generate_image", {"prompt": "x", "model": "openai/gpt-image-2", "n": 2, "options": {"route": "responses"}}
        )
    assert result.is_error and "options.route=responses" in text(result)
    assert many.is_error and "must be 1 on the Responses API route" in text(many)
    assert upstream.requests == []


HOST_TOKENS_USD = round((120 * 0.40 + 30 * 1.60) / 1_000_000, 6)  # gpt-4.1-mini, the usage in response_json
EDIT_CALL = {"prompt": "make it blue", "model": "openai/gpt-image-2", "images": [SOURCE], "quality": "low"}


async def test_responses_route_cost_includes_the_host_tokens(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply("POST", RESPONSES, json=response_json("resp_1"))
    async with Client(build_server(make_atelier(tmp_path, upstream))) as client:
        images_quote = await client.call_tool("edit_image", {**EDIT_CALL, "dry_run": True})
        image_usd = (images_quote.structured_content or {})["cost"]["estimate_usd"]
        quote = await client.call_tool("edit_image", {**EDIT_CALL, "options": {"route": "responses"}, "dry_run": True})
        quoted = (quote.structured_content or {})["cost"]
        result = await client.call_tool("edit_image", {**EDIT_CALL, "options": {"route": "responses"}})
        usage = await client.call_tool("get_usage", {"days": 1})
    assert image_usd > 0
    # the quote: the image + a conservative host allowance (1000 fixed + prompt + one input image, 1000 out)
    allowance = quoted["extra_estimate_usd"]
    assert allowance >= HOST_TOKENS_USD and quoted["estimate_usd"] == pytest.approx(image_usd + allowance)
    assert any("allowance" in n and "gpt-4.1-mini" in n for n in (quote.structured_content or {})["notes"])
    assert not result.is_error, result.content
    outcome = result.structured_content or {}
    assert outcome["cost"]["cost_usd"] == pytest.approx(image_usd + HOST_TOKENS_USD)
    assert any(f"${HOST_TOKENS_USD:.6f}" in n and "as of" in n for n in outcome["notes"])
    sidecar = json.loads(Path(outcome["images"][0]["path"] + ".json").read_text())
    assert sidecar["cost"]["cost_usd"] == pytest.approx(image_usd + HOST_TOKENS_USD)
    assert (usage.structured_content or {})["total_usd"] == pytest.approx(image_usd + HOST_TOKENS_USD)


async def test_responses_route_host_price_override_and_daily_limit(tmp_path: Path, upstream: FakeUpstream) -> None:
    # A host model priced by the setting; a daily limit that fits two quotes but not the first
    # call's host tokens on top: the second call is refused only because the ledger holds them.
    for n in (1, 2):
        upstream.reply("POST", RESPONSES, json=response_json(f"resp_{n}"))
    pricey = {"input_per_mtok": 100.0, "output_per_mtok": 100.0}
    atelier = make_atelier(tmp_path, upstream, responses_model="my-host", responses_model_prices={"my-host": pricey})
    async with Client(build_server(atelier)) as client:
        image_usd = (await client.call_tool("edit_image", {**EDIT_CALL, "dry_run": True})).structured_content
        image_usd = (image_usd or {})["cost"]["estimate_usd"]
        host_usd = round(150 * 100.0 / 1_000_000, 6)  # 120 + 30 tokens at $100 per 1M
        allowance = (
            await client.call_tool("edit_image", {**EDIT_CALL, "options": {"route": "responses"}, "dry_run": True})
        ).structured_content
        allowance = (allowance or {})["cost"]["extra_estimate_usd"]
        atelier.settings.cost.max_per_day_usd = image_usd * 2 + allowance + host_usd / 2
        first = await client.call_tool("edit_image", {**EDIT_CALL, "options": {"route": "responses"}})
        assert not first.is_error, first.content
        assert (first.structured_content or {})["cost"]["cost_usd"] == pytest.approx(image_usd + host_usd)
        second = await client.call_tool("edit_image", {**EDIT_CALL, "options": {"route": "responses"}})
        usage = await client.call_tool("get_usage", {"days": 1})
    assert second.is_error and "daily spend limit" in text(second)
    assert len(upstream.requests) == 1
    assert (usage.structured_content or {})["total_usd"] == pytest.approx(image_usd + host_usd)
