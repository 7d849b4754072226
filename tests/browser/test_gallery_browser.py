"""The gallery in real headless Chromium against a real server on 127.0.0.1: the page
loads, images appear, search and filters narrow them, a session's lineage tree is drawn,
no console errors; the token, Host checks and path confinement hold."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import atelier_placeholder
from atelier_core.mcp.http import gallery_only_app
from atelier_core.testing.harness import build_test_atelier, connect

TOKEN = "gallery-test-token-0123456789"


async def _serve(app: Any) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def made(tmp_path: Path) -> AsyncIterator[tuple[Any, str]]:
    """A library with four direct images and a three-turn session, and its gallery served."""
    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        for prompt in ("a red fox in the snow", "a lighthouse at night", "a bowl of lemons"):
            result = await client.call_tool(
                "generate_image", {"prompt": prompt, "model": "placeholder", "size": "256x256", "return_image": "none"}
            )
            assert not result.is_error
        started = await client.call_tool(
            "edit_session",
            {"action": "start", "prompt": "a harbour at dawn", "model": "placeholder", "size": "256x256"},
        )
        session_id = started.structured_content["session"]["session_id"]
        for prompt, turn in (("add fishing boats", None), ("make it winter", 0)):
            args = {"action": "continue", "session_id": session_id, "prompt": prompt}
            if turn is not None:
                args["from_turn"] = turn
            assert not (await client.call_tool("edit_session", args)).is_error
        app = gallery_only_app(atelier, host="127.0.0.1", token=TOKEN)
        async for base in _serve(app):
            yield base, session_id


async def test_the_gallery_shows_searches_filters_and_draws_session_trees(
    browser: Any, made: tuple[str, str], artifacts: Path
) -> None:
    base, session_id = made
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    await page.goto(f"{base}/gallery/?token={TOKEN}")
    assert page.url == f"{base}/gallery/"  # the token left the address bar for a cookie
    await page.wait_for_selector("body[data-loaded='1']")
    cards = page.locator("#grid .card")
    assert await cards.count() == 6  # 3 direct + 3 session turns
    await page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#grid .card img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    assert "6 image(s)" in await page.locator("#totals").inner_text()
    assert await page.locator("#per-day tbody tr").count() == 1

    await page.fill("#q", "fox")
    await page.click("#search")
    await page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 1")
    assert "red fox" in await cards.first.inner_text()

    await page.click("#clear")
    await page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 6")
    await page.select_option("#session", session_id)
    await page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 3")
    await page.wait_for_selector("#tree-body .tree li")
    # Turn 0 has two children (turn 1, and turn 2 branched from turn 0): a tree, not a list.
    root = page.locator("#tree-body > ul.tree > li[data-turn='0']")
    assert await root.count() == 1
    assert await root.locator(":scope > ul > li").count() == 2

    await cards.first.click()
    await page.wait_for_selector("#detail:not([hidden])")
    await page.wait_for_function("() => document.getElementById('detail-img').naturalWidth > 0")
    detail = await page.locator("#detail-meta").inner_text()
    assert "model" in detail and "placeholder/placeholder" in detail and "cost" in detail

    await page.fill("#since", "2999-01-01")
    await page.click("#search")
    await page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 0")
    await page.fill("#since", "")
    await page.click("#search")
    await page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 3")
    await page.screenshot(path=str(artifacts / "gallery.png"), full_page=True)
    assert problems == []
    csp = (await page.request.get(f"{base}/gallery/")).headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    await page.close()


@pytest.mark.parametrize(
    "path",
    [
        "/gallery/file/..%2F..%2Fetc%2Fpasswd",
        "/gallery/file/%2Fetc%2Fpasswd",
        "/gallery/thumb/..%2Foutside.png",
        "/gallery/file/a/..%2F..%2F..%2Foutside.png",
        "/gallery/file/C:%5Cwindows%5Cwin.ini",
        "/gallery/api/sessions/..%2F..%2Fetc",
    ],
)
async def test_paths_outside_the_library_are_refused(browser: Any, made: tuple[str, str], path: str) -> None:
    base, _ = made
    context = await browser.new_context()
    await (await context.new_page()).goto(f"{base}/gallery/?token={TOKEN}")  # signed in by cookie
    response = await context.request.get(base + path)
    assert response.status in (400, 404)
    body = await response.text()
    assert "root:" not in body and "[fonts]" not in body
    await context.close()


async def test_the_gallery_needs_the_token_and_a_local_host(browser: Any, made: tuple[str, str]) -> None:
    base, _ = made
    context = await browser.new_context()
    assert (await context.request.get(f"{base}/gallery/api/images")).status == 401
    assert (await context.request.get(f"{base}/gallery/?token=wrong-token-0123456789")).status == 401
    spoofed = await context.request.get(
        f"{base}/gallery/api/images", headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"}
    )
    assert spoofed.status == 421
    foreign = await context.request.get(
        f"{base}/gallery/api/images", headers={"Origin": "http://evil.example", "Authorization": f"Bearer {TOKEN}"}
    )
    assert foreign.status == 403
    fine = await context.request.get(
        f"{base}/gallery/api/images?model=nope&query=", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert fine.status == 200 and (await fine.json())["images"] == []
    bad = await context.request.get(
        f"{base}/gallery/api/images?since=yesterday", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert bad.status == 400 and "since" in (await bad.json())["error"]
    await context.close()


async def test_serve_http_serves_the_gallery_behind_its_token(browser: Any, tmp_path: Path) -> None:
    """`serve --http`: /gallery behind the same Host/Origin checks and token as /mcp."""
    from atelier_core.mcp.http import http_app

    token = "http-gallery-token-0123456789"
    # The token's principal is the local one, whose images the in-memory client makes.
    atelier = build_test_atelier(tmp_path, [atelier_placeholder], http={"tokens": {"local": token}})
    async with connect(atelier) as client:
        made = await client.call_tool(
            "generate_image",
            {"prompt": "served over http", "model": "placeholder", "size": "256x256", "return_image": "none"},
        )
        assert not made.is_error
    app = http_app(atelier, host="127.0.0.1")
    async for base in _serve_with_lifespan(app):
        context = await browser.new_context()
        assert (await context.request.get(f"{base}/gallery/api/images")).status == 401
        assert (await context.request.get(f"{base}/mcp")).status == 401
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m, seen=problems: seen.append(m.text) if m.type == "error" else None)
        await page.goto(f"{base}/gallery/?token={token}")
        await page.wait_for_selector("body[data-loaded='1']")
        assert await page.locator("#grid .card").count() == 1
        assert "served over http" in await page.locator("#grid .card").first.inner_text()
        spoofed = await context.request.get(
            f"{base}/gallery/api/images", headers={"Host": "evil.example", "Authorization": f"Bearer {token}"}
        )
        assert spoofed.status == 421
        traversal = await context.request.get(f"{base}/gallery/file/..%2F..%2Fdata%2Fstate.sqlite3")
        assert traversal.status in (400, 404)
        assert problems == []
        await context.close()


async def _serve_with_lifespan(app: Any) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_atelier_mcp_gallery_serves_a_local_page(browser: Any, tmp_path: Path) -> None:
    """What `atelier-mcp gallery` runs: a free port on 127.0.0.1, a one-off token, the page."""
    from atelier_core.mcp.http import serve_gallery

    atelier = build_test_atelier(tmp_path, [atelier_placeholder])
    async with connect(atelier) as client:
        await client.call_tool(
            "generate_image",
            {"prompt": "from the command", "model": "placeholder", "size": "256x256", "return_image": "none"},
        )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    gallery = build_test_atelier(tmp_path, [atelier_placeholder])
    task = asyncio.create_task(serve_gallery(gallery, open_browser=False, ready=ready.set_result))
    try:
        url = await asyncio.wait_for(ready, 30)
        assert url.startswith("http://127.0.0.1:") and "/gallery/?token=" in url
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_selector("body[data-loaded='1']")
        assert "from the command" in await page.locator("#grid .card").first.inner_text()
        without = await browser.new_context()
        assert (await without.request.get(url.split("?")[0] + "api/images")).status == 401
        await without.close()
        await page.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
