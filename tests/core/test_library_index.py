"""The image index and library on both backends (``state_url``): search, pagination,
backfill from sidecars, retention, traversal refused."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from atelier_core.engine.library import ImageLibrary, origin
from atelier_core.media.storage import OutputStore
from atelier_core.plugin.errors import InvalidParameterError, NotFoundError
from atelier_core.state.image_records import ImageQuery, parse_when
from atelier_core.state.store import StateStore


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def state(state_url: str, tmp_path: Path) -> AsyncIterator[StateStore]:
    store = await StateStore.open_url(state_url, tmp_path / "data")
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def library(state: StateStore, tmp_path: Path) -> ImageLibrary:
    return ImageLibrary(OutputStore(tmp_path / "out"), state.images)


async def _save(
    library: ImageLibrary,
    prompt: str,
    color: tuple[int, int, int],
    *,
    model: str = "placeholder/draw",
    inputs: tuple[bytes, ...] = (),
    created: float | None = None,
    cost: float | None = 0.01,
):
    meta = {
        "prompt": prompt,
        "model": model,
        "provider": model.split("/")[0],
        "operation": "generate",
        "applied": {"size": "8x8"},
    }
    saved = library.store.save(_png(color), "png", metadata=meta)
    entry = await library.entry_for(saved, meta, cost_usd=cost, inputs=inputs)
    if created is not None:
        entry.created_at = created
    return await library.index.add(entry)


async def test_search_by_words_model_dates_session_and_lineage(library: ImageLibrary) -> None:
    fox = await _save(library, "a red fox in the snow", (200, 0, 0), created=1_700_000_000)
    with origin(session_id="s1", turn=1, job_id="j1"):
        owl = await _save(
            library,
            "an owl at night",
            (0, 0, 200),
            model="other/owl",
            inputs=(library.store.resolve_resource(fox.relative).read_bytes(),),
        )
    foxes = await _save(library, "two foxes playing", (0, 200, 0))

    async def find(**kw: object) -> list[str]:
        return [e.relative for e in (await library.search(ImageQuery(**kw)))[0]]  # type: ignore[arg-type]

    assert await find() == [foxes.relative, owl.relative, fox.relative]  # newest first
    assert await find(text="fox") == [foxes.relative, fox.relative]  # prefix: fox finds foxes
    assert await find(text='fox" OR owl*') == []  # operators are words, never FTS syntax
    assert await find(model="other/owl") == [owl.relative]
    assert await find(provider="placeholder") == [foxes.relative, fox.relative]
    assert await find(session_id="s1") == [owl.relative] and await find(job_id="j1") == [owl.relative]
    assert owl.turn == 1
    assert await find(edited_from=fox.relative) == [owl.relative]  # lineage found by content
    assert await find(until=parse_when("2023-11-15", "until", end=True)) == [fox.relative]
    assert await find(since=parse_when("2024-01-01", "since")) == [foxes.relative, owl.relative]


async def test_pages_never_repeat_or_skip_while_images_arrive(library: ImageLibrary) -> None:
    made = [(await _save(library, f"picture {i}", (i * 10, 0, 0))).relative for i in range(7)]
    page, cursor = await library.search(ImageQuery(limit=3))
    seen = [e.relative for e in page]
    await _save(library, "arrived later", (1, 2, 3))  # newer than everything: never on later pages
    while cursor:
        page, cursor = await library.search(ImageQuery(limit=3, cursor=cursor))
        seen += [e.relative for e in page]
    assert seen == list(reversed(made))


async def test_bad_filters_are_refused_clearly(library: ImageLibrary) -> None:
    with pytest.raises(InvalidParameterError, match=r"since.*ISO date"):
        parse_when("yesterday", "since")
    with pytest.raises(InvalidParameterError, match="cursor"):
        await library.search(ImageQuery(cursor="not-a-cursor!"))
    with pytest.raises(InvalidParameterError, match="limit"):
        await library.search(ImageQuery(limit=1000))
    with pytest.raises(InvalidParameterError, match="no words"):
        await library.search(ImageQuery(text="!!! ???"))


async def test_backfill_indexes_existing_sidecars_once(state: StateStore, tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "out")
    saved = store.save(
        _png((9, 9, 9)),
        "png",
        metadata={
            "prompt": "an old lighthouse",
            "model": "openai/gpt-image-2",
            "provider": "openai",
            "created_at": "2025-01-02T03:04:05+00:00",
            "cost": {"estimate_usd": 0.04, "cost_usd": 0.05},
        },
    )
    (store.root / "stray.json").write_text("{not json")
    library = ImageLibrary(store, state.images)
    assert await library.backfill() == 1
    assert await library.backfill() == 0  # once per database
    (entry,) = (await library.search(ImageQuery(text="lighthouse")))[0]
    assert entry.relative == saved.relative and entry.cost_usd == 0.05
    assert entry.created_iso == "2025-01-02T03:04:05+00:00"
    assert library.describe(entry)["uri"] == saved.resource_uri


async def test_entry_lookup_refuses_traversal(library: ImageLibrary) -> None:
    (library.store.root.parent / "secret.png").write_bytes(_png((1, 1, 1)))
    for uri in ("atelier://images/../secret.png", "atelier://images/%2e%2e/secret.png", "/etc/passwd"):
        with pytest.raises((InvalidParameterError, NotFoundError)):
            await library.entry(uri)


async def test_prune_removes_oldest_but_never_what_a_session_needs(library: ImageLibrary) -> None:
    now = time.time()
    old = await _save(library, "old", (1, 0, 0), created=now - 40 * 86400)
    kept = await _save(library, "old but in an open session", (2, 0, 0), created=now - 39 * 86400)
    mid = await _save(library, "middle", (3, 0, 0), created=now - 5 * 86400)
    new = await _save(library, "new", (4, 0, 0), created=now)
    plan = await library.plan_prune(max_total_bytes=None, max_age_days=30, protected={kept.relative}, now=now)
    assert [e.relative for e in plan.remove] == [old.relative] and plan.kept_protected == 1
    size = new.bytes + kept.bytes
    plan = await library.plan_prune(max_total_bytes=size, max_age_days=None, protected={kept.relative}, now=now)
    assert [e.relative for e in plan.remove] == [old.relative, mid.relative]
    assert await library.apply_prune(plan) == 2
    assert not (library.store.root / old.relative).exists()
    assert not (library.store.root / (old.relative + ".json")).exists()
    assert (library.store.root / kept.relative).exists()
    assert [e.relative for e in (await library.search(ImageQuery()))[0]] == [new.relative, kept.relative]
    assert json.loads((library.store.root / (new.relative + ".json")).read_text())["prompt"] == "new"
