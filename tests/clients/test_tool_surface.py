"""What a model sees through an MCP client: tool texts within budget, a compact catalogue,
machine-readable error codes, edit_session turns as capable as edit_image, the get_jobs
barrier, the image-task prompts and the health view."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mcp_types import ResourceLink

import atelier_placeholder
from atelier_core.testing import FakeProvider, Outcome, build_test_atelier, connect, fake_spec

#: Every client sends the whole tools/list to its model on every turn.
TOOLS_LIST_BUDGET = 10 * 1024
#: The unfiltered catalogue answer (text + structured content) lands in a model's context.
CATALOGUE_BUDGET = 16 * 1024


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def _wire(items: Any) -> int:
    return len(
        json.dumps([i.model_dump(mode="json", by_alias=True, exclude_none=True) for i in items], separators=(",", ":"))
    )


async def test_every_argument_is_described_and_tools_list_fits_the_budget(tmp_path: Path) -> None:
    async with connect(build_test_atelier(tmp_path, [atelier_placeholder])) as client:
        tools = (await client.list_tools()).tools
    size = _wire(tools)
    print(f"tools/list: {len(tools)} tools, {size} bytes")
    assert size <= TOOLS_LIST_BUDGET, size
    for tool in tools:
        text = (tool.description or "").lower()
        assert len(text) >= 60, tool.name
        assert "bill" in text, f"{tool.name} must say what it bills (or that it bills nothing)"
        for name, prop in tool.input_schema.get("properties", {}).items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
    by_name = {t.name: t for t in tools}
    assert {"generate_image", "edit_image", "edit_session", "get_jobs", "list_available_models", "health"} <= set(
        by_name
    )
    assert "list_available_models" in (by_name["generate_image"].description or "")  # pick a model first
    assert "45 s" in (by_name["generate_image"].description or "")  # long calls become jobs
    assert "edit_session" in (by_name["edit_image"].description or "")  # when to prefer the session


async def test_catalogue_is_compact_unless_detail_is_asked(tmp_path: Path) -> None:
    # Every built-in provider, as the real server loads them.
    atelier = build_test_atelier(tmp_path, [], entry_points=True)
    async with connect(atelier) as client:
        summary = await client.call_tool("list_available_models", {})
        full = await client.call_tool("list_available_models", {"detail": True})
        one = await client.call_tool("list_available_models", {"model": "placeholder"})
        openai = await client.call_tool("list_available_models", {"provider": "openai"})
    size = len(summary.model_dump_json(by_alias=True, exclude_none=True))
    print(f"unfiltered catalogue: {size} bytes; detail=true: {len(full.model_dump_json())} bytes")
    assert size <= CATALOGUE_BUDGET, size
    models = summary.structured_content["models"]  # type: ignore[index]
    assert len(models) >= 20 and all({"id", "available", "ops", "formats"} <= set(m) for m in models)
    assert "{" not in _text(summary)  # a summary, not a copy of the structured content
    assert "detail=true" in _text(summary)
    detailed = one.structured_content["models"]  # type: ignore[index]
    assert [m["id"] for m in detailed] == ["placeholder/placeholder"] and "sizes" in detailed[0]
    assert all(m["provider"] == "openai" and "options" in m for m in openai.structured_content["models"])  # type: ignore[index]
    assert len(full.structured_content["models"]) == len(models)  # type: ignore[index]


async def test_every_error_result_has_a_code(tmp_path: Path) -> None:
    async with connect(build_test_atelier(tmp_path, [atelier_placeholder])) as client:
        cases = {
            "unknown_model": await client.call_tool("generate_image", {"prompt": "x", "model": "nope"}),
            "unknown_argument": await client.call_tool("edit_session", {"action": "list", "aspect": "1:1"}),
            "invalid_argument": await client.call_tool("generate_image", {"prompt": "x", "n": "many"}),
            "missing_argument": await client.call_tool("generate_image", {"model": "placeholder"}),
            "unknown_tool": await client.call_tool("draw_image", {}),
            "session_not_found": await client.call_tool("edit_session", {"action": "history", "session_id": "ses_x"}),
            "not_found": await client.call_tool("get_jobs", {"job_ids": ["../etc"]}),
        }
    for code, result in cases.items():
        assert result.is_error, code
        error = (result.structured_content or {}).get("error") or {}
        assert error.get("code") == code, (code, error, _text(result))
        assert "Extra inputs are not permitted" not in _text(result)
    assert "aspect_ratio" in _text(cases["unknown_argument"])  # did you mean


async def test_progress_is_rounded_monotonic_and_before_the_result(tmp_path: Path) -> None:
    seen: list[float] = []
    fake = FakeProvider("slowish", models=[fake_spec("m")], script=[Outcome(partials=2, delay_s=0.05)])
    async with connect(build_test_atelier(tmp_path, [fake])) as client:

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        result = await client.call_tool(
            "generate_image", {"prompt": "x", "model": "slowish/m"}, progress_callback=on_progress
        )
        count_at_result = len(seen)
    assert not result.is_error, _text(result)
    assert seen and count_at_result == len(seen)
    assert all(round(p, 3) == p for p in seen), seen
    assert seen == sorted(seen), seen


async def test_edit_session_turns_take_edit_image_arguments(tmp_path: Path) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with connect(build_test_atelier(tmp_path, [atelier_placeholder])) as client:
        started = await client.call_tool(
            "edit_session",
            {
                "action": "start",
                "prompt": "a harbour",
                "model": "placeholder",
                "aspect_ratio": "16:9",
                "seed": 3,
                "output_format": "jpeg",
                "output_compression": 70,
            },
            progress_callback=on_progress,
        )
        assert not started.is_error, _text(started)
        session = started.structured_content["session"]["session_id"]  # type: ignore[index]
        applied = started.structured_content["outcome"]["applied"]  # type: ignore[index]
        assert applied["seed"] == 3 and applied["output_compression"] == 70 and applied["output_format"] == "jpeg"
        assert seen, "a session turn reports progress"

        priced = await client.call_tool(
            "edit_session",
            {
                "action": "continue",
                "session_id": session,
                "prompt": "add boats",
                "dry_run": True,
                "background": "opaque",
            },
        )
        assert not priced.is_error and priced.structured_content["dry_run"] is True  # type: ignore[index]

        queued = await client.call_tool(
            "edit_session",
            {
                "action": "continue",
                "session_id": session,
                "prompt": "add boats",
                "as_job": True,
                "idempotency_key": "turn-1",
                "resolution": None,
            },
        )
        job = queued.structured_content["job"]  # type: ignore[index]
        collected = await client.call_tool("get_jobs", {"job_ids": [job["job_id"]], "wait_s": 20})
        assert collected.structured_content["all_finished"], _text(collected)  # type: ignore[index]
        again = await client.call_tool(
            "edit_session",
            {
                "action": "continue",
                "session_id": session,
                "prompt": "add boats",
                "as_job": True,
                "idempotency_key": "turn-1",
            },
        )
        assert again.structured_content["job"]["job_id"] == job["job_id"]  # type: ignore[index]

        history = await client.call_tool("edit_session", {"action": "history", "session_id": session})
        turns = history.structured_content["turns"]  # type: ignore[index]
        assert [t["parent"] for t in turns] == [None, 0]  # the dry run added no turn; the job one did
        assert sum(isinstance(b, ResourceLink) for b in history.content) == 2

        wrong = await client.call_tool("edit_session", {"action": "list", "seed": 4})
        assert wrong.is_error and wrong.structured_content["error"]["code"] == "invalid_parameter"  # type: ignore[index]
        assert "does not apply to action=list" in _text(wrong)


async def test_get_jobs_without_ids_waits_for_every_unfinished_job(tmp_path: Path) -> None:
    fake = FakeProvider("slow", models=[fake_spec("m")], latency_s=0.6)
    atelier = build_test_atelier(tmp_path, [fake])
    async with connect(atelier) as client:
        ids = []
        for index in range(3):
            ticket = await client.call_tool(
                "generate_image", {"prompt": f"p{index}", "model": "slow/m", "as_job": True}
            )
            ids.append(ticket.structured_content["job"]["job_id"])  # type: ignore[index]
        listed = await client.call_tool("get_jobs", {})
        assert not listed.is_error
        started = time.monotonic()
        barrier = await client.call_tool("get_jobs", {"wait_s": 20})
        waited = time.monotonic() - started
    data = barrier.structured_content or {}
    assert data["all_finished"] and sorted(j["job_id"] for j in data["jobs"]) == sorted(ids), _text(barrier)
    assert all(j["state"] == "done" for j in data["jobs"])
    assert waited < 15


async def test_get_jobs_wait_is_capped_before_client_timeouts(tmp_path: Path) -> None:
    fake = FakeProvider("stuck", models=[fake_spec("m")], script=[Outcome(hang=True)])
    atelier = build_test_atelier(tmp_path, [fake], jobs={"handoff_after_s": 1.0})
    async with connect(atelier) as client:
        ticket = await client.call_tool("generate_image", {"prompt": "p", "model": "stuck/m", "as_job": True})
        job_id = ticket.structured_content["job"]["job_id"]  # type: ignore[index]
        started = time.monotonic()
        barrier = await client.call_tool("get_jobs", {"wait_s": 600})
        waited = time.monotonic() - started
        await client.call_tool("cancel_job", {"job_id": job_id})
    data = barrier.structured_content or {}
    assert data["pending"] == [job_id] and not data["all_finished"]
    assert 0.9 <= waited < 5, waited
    assert any("call get_jobs again" in note for note in data["notes"])


async def test_prompts_for_common_image_tasks(tmp_path: Path) -> None:
    async with connect(build_test_atelier(tmp_path, [atelier_placeholder])) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert {"logo", "product_shot", "icon_set", "illustration_style", "photo_retouch"} <= set(prompts)
        assert all(p.description and p.arguments for p in prompts.values())
        logo = await client.get_prompt("logo", {"brand": "Harbour Coffee", "colors": "navy and gold"})
        icons = await client.get_prompt("icon_set", {"subjects": "home, search, cart"})
        retouch = await client.get_prompt("photo_retouch", {"image": "atelier://images/a.png"})
    logo_text = logo.messages[0].content.text  # type: ignore[union-attr]
    assert "Harbour Coffee" in logo_text and "navy and gold" in logo_text and "generate_image" in logo_text
    icon_text = icons.messages[0].content.text  # type: ignore[union-attr]
    assert all(f"- {name}" in icon_text for name in ("home", "search", "cart")) and "get_jobs" in icon_text
    assert "edit_image" in retouch.messages[0].content.text  # type: ignore[union-attr]


async def test_health_spends_nothing(tmp_path: Path) -> None:
    fake = FakeProvider("keyed", models=[fake_spec("m")], needs_key=True, key_env_vars=("KEYED_API_KEY",))
    atelier = build_test_atelier(tmp_path, [atelier_placeholder, fake])
    async with connect(atelier) as client:
        result = await client.call_tool("health", {})
        usage = await client.call_tool("get_usage", {})
    report = result.structured_content or {}
    assert report["status"] == "ok" and report["models"] == {"total": 2, "available": 1}
    assert "KEYED_API_KEY" in report["providers"]["keyed"]["reason"]
    assert report["folders"] == {"output": "writable", "data": "writable"}
    assert report["jobs"] == {"unfinished": 0}
    assert fake.calls == [] and usage.structured_content["calls"] == 0  # type: ignore[index]
    assert "keyed: 0/1 usable" in _text(result)


async def test_concurrent_session_turns_build_on_each_other(tmp_path: Path) -> None:
    import anyio

    slow = FakeProvider("slow", models=[fake_spec("m")], latency_s=0.3)
    async with connect(build_test_atelier(tmp_path, [slow])) as client:
        started = await client.call_tool("edit_session", {"action": "start", "prompt": "a", "model": "slow/m"})
        session = started.structured_content["session"]["session_id"]  # type: ignore[index]
        async with anyio.create_task_group() as group:
            for prompt in ("b", "c"):
                group.start_soon(
                    client.call_tool, "edit_session", {"action": "continue", "session_id": session, "prompt": prompt}
                )
        history = await client.call_tool("edit_session", {"action": "history", "session_id": session})
    assert [t["parent"] for t in history.structured_content["turns"]] == [None, 0, 1]  # type: ignore[index]


async def test_docs_name_every_tool_and_prompt_clients_see(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    # docs/tools.md, and the pages it sends a tool to (find_images: docs/library.md)
    tools_doc = (root / "docs" / "tools.md").read_text() + (root / "docs" / "library.md").read_text()
    readme = (root / "README.md").read_text()
    async with connect(build_test_atelier(tmp_path, [atelier_placeholder])) as client:
        tools = (await client.list_tools()).tools
        prompts = (await client.list_prompts()).prompts
    for tool in tools:
        assert f"`{tool.name}`" in tools_doc and f"`{tool.name}`" in readme, tool.name
        for name in tool.input_schema.get("properties", {}):
            assert f"`{name}`" in tools_doc, f"{tool.name}.{name} is not in docs/tools.md"
    for prompt in prompts:
        assert f"`{prompt.name}`" in tools_doc and f"`{prompt.name}`" in readme, prompt.name
        for argument in prompt.arguments or []:
            assert f"`{argument.name}`" in tools_doc, f"prompt {prompt.name}.{argument.name} is not documented"


async def test_the_barrier_leaves_other_servers_jobs_alone(tmp_path: Path) -> None:
    # Two servers on one data directory (two stdio clients each start their own).
    stuck = FakeProvider("stuck", models=[fake_spec("m")], script=[Outcome(hang=True)])
    other = FakeProvider("stuck", models=[fake_spec("m")])
    async with (
        connect(build_test_atelier(tmp_path, [stuck])) as first,
        connect(build_test_atelier(tmp_path, [other])) as second,
    ):
        ticket = await first.call_tool("generate_image", {"prompt": "p", "model": "stuck/m", "as_job": True})
        job_id = ticket.structured_content["job"]["job_id"]  # type: ignore[index]
        started = time.monotonic()
        theirs = await second.call_tool("get_jobs", {"wait_s": 5})
        assert time.monotonic() - started < 2 and theirs.structured_content["jobs"] == []  # type: ignore[index]
        mine = await first.call_tool("get_jobs", {"wait_s": 0.5})
        assert mine.structured_content["pending"] == [job_id]  # type: ignore[index]
        await first.call_tool("cancel_job", {"job_id": job_id})
