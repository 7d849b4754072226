"""The MCP Apps viewer in real headless Chromium, inside a host harness page that speaks
the extension's postMessage protocol and forwards the view's requests to a real MCP
session: images full size and side by side, zoom, parameters and cost, and "edit this",
"branch from here" and "variation" as tool calls through the host, under the view's CSP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import atelier_placeholder
from atelier_core.mcp.library import VIEWER_URI
from atelier_core.testing.harness import build_test_atelier, connect

HARNESS = Path(__file__).with_name("host_harness.html").read_text()


async def _only_new(cards: Any, old: set[str | None]) -> bool:
    """The grid shows one loaded card, and not one of ``old``."""
    if await cards.count() != 1:
        return False
    return (
        await cards.first.get_attribute("data-uri") not in old and await cards.first.get_attribute("data-loaded") == "1"
    )


def _dump(result: Any) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


async def _until(check: Any, timeout_s: float = 15.0) -> None:
    """Poll ``check`` (an async predicate) until true; the view's CSP forbids evaluating
    JavaScript inside it, so waits are made from locators."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _calls(page: Any, method: str) -> list[dict[str, Any]]:
    log = await page.evaluate("() => window.hostLog")
    return [entry["message"] for entry in log if entry["dir"] == "in" and entry["message"].get("method") == method]


async def test_the_viewer_shows_results_and_acts_through_the_host(
    browser: Any, tmp_path: Path, artifacts: Path
) -> None:
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        args = {"prompt": "a red fox", "model": "placeholder", "size": "256x192", "n": 2}
        generated = await client.call_tool("generate_image", args)
        assert not generated.is_error
        html = (await client.read_resource(VIEWER_URI)).contents[0].text

        async def forward(method: str, params: dict[str, Any]) -> dict[str, Any]:
            if method == "tools/call":
                return _dump(await client.call_tool(params["name"], params.get("arguments") or {}))
            return _dump(await client.read_resource(params["uri"]))

        page = await browser.new_page(viewport={"width": 1100, "height": 1500})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        await page.expose_function("mcpRequest", forward)
        await page.set_content(HARNESS)
        await page.evaluate("html => window.loadView(html)", html)
        await page.wait_for_function("() => window.viewReady === true")
        await page.evaluate("([a, r]) => window.sendToolResult(a, r)", [args, _dump(generated)])

        view = page.frame_locator("#view")
        cards = view.locator(".card")
        await view.locator(".card[data-loaded='1']").nth(1).wait_for()
        assert await cards.count() == 2
        first, second = [await cards.nth(i).bounding_box() for i in range(2)]
        assert first and second and abs(first["y"] - second["y"]) < 2 and second["x"] > first["x"]  # side by side
        image = cards.first.locator("img")
        assert (await image.get_attribute("src") or "").startswith("data:image/png;base64,")
        meta = await cards.first.locator("table.meta").inner_text()
        assert "256×192" in meta and "cost" in meta and "a red fox" in meta and "placeholder/placeholder" in meta

        before = (await image.bounding_box() or {})["width"]
        await cards.first.locator(".zoom-in").click()
        assert await cards.first.locator(".zoom-level").inner_text() == "150%"
        assert (await image.bounding_box() or {})["width"] > before * 1.4  # 1.5 x the fitted width
        await cards.first.locator(".zoom-fit").click()
        assert await cards.first.locator(".zoom-level").inner_text() == "fit"

        uri = await cards.first.get_attribute("data-uri")
        second_uri = await cards.nth(1).get_attribute("data-uri")
        await cards.first.locator("input.change").fill("add a hat")
        await cards.first.locator(".edit-this").click()
        await _until(lambda: _only_new(cards, {uri, second_uri}))
        (edit,) = await _calls(page, "tools/call")
        assert edit["params"] == {
            "name": "edit_image",
            "arguments": {"images": [uri], "prompt": "add a hat", "model": "placeholder/placeholder"},
        }
        assert await cards.count() == 1

        edited = await cards.first.get_attribute("data-uri")
        await cards.first.locator(".variation").click()
        await page.wait_for_function(
            "() => window.hostLog.filter(e => e.dir === 'in' && e.message.method === 'tools/call').length === 2"
        )
        variation = (await _calls(page, "tools/call"))[1]
        assert variation["params"] == {
            "name": "edit_image",
            "arguments": {"images": [edited], "model": "placeholder/placeholder"},
        }

        started = await client.call_tool(
            "edit_session", {"action": "start", "prompt": "a harbour", "model": "placeholder", "size": "256x256"}
        )
        session_id = started.structured_content["session"]["session_id"]
        await page.evaluate(
            "([a, r]) => window.sendToolResult(a, r)", [{"action": "start", "prompt": "a harbour"}, _dump(started)]
        )
        await view.locator(".card[data-loaded='1']").first.wait_for()
        turn0 = await cards.first.get_attribute("data-uri")
        assert "session" in await cards.first.locator("table.meta").inner_text()
        await cards.first.locator("input.change").fill("add boats")
        await cards.first.locator(".branch").click()
        await _until(lambda: _only_new(cards, {turn0}))
        branch = (await _calls(page, "tools/call"))[-1]
        assert branch["params"] == {
            "name": "edit_session",
            "arguments": {"action": "continue", "session_id": session_id, "from_turn": 0, "prompt": "add boats"},
        }
        history = await client.call_tool("edit_session", {"action": "history", "session_id": session_id})
        assert [t["parent"] for t in history.structured_content["turns"]] == [None, 0]

        await page.screenshot(path=str(artifacts / "viewer.png"), full_page=True)
        reads = await _calls(page, "resources/read")
        assert reads and all(r["params"]["uri"].startswith("atelier://images/") for r in reads)
        assert problems == [], problems
        await page.close()


async def test_the_view_cannot_reach_the_network(browser: Any, tmp_path: Path) -> None:
    """Its CSP allows no fetch, no outside image, no other script: an injected attempt fails."""
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        html = (await client.read_resource(VIEWER_URI)).contents[0].text
    probe = html.replace("</body>", '<img id="probe" src="http://127.0.0.1:9/x.png"></body>')
    page = await browser.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    await page.set_content(HARNESS)
    await page.evaluate("html => window.loadView(html)", probe)
    await page.wait_for_function("() => window.viewReady === true")
    await page.wait_for_timeout(300)
    assert any("img-src" in v for v in violations), violations
    assert json.dumps(violations).count("script-src") == 0  # the view's own script is allowed by hash
    await page.close()
