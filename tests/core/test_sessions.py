"""Multi-turn edit sessions on the placeholder provider (domain level)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import atelier_placeholder
from atelier_core.engine.sessions import SessionManager
from atelier_core.plugin.errors import InputImageError, InvalidParameterError, NotFoundError, RequestError
from atelier_core.plugin.spec import Operation
from atelier_core.plugin.types import ImageCall
from atelier_core.testing.fakes import FakeProvider, fake_spec
from atelier_core.testing.harness import build_test_atelier

SIZE = 256


def _mask(root: Path, name: str, box: tuple[int, int, int, int]) -> str:
    """A PNG mask whose transparent ``box`` marks the area to repaint."""
    mask = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle(box, fill=(0, 0, 0, 0))
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    mask.save(path)
    return str(path)


def _pixels(path: str, box: tuple[int, int, int, int]) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGBA").crop(box).tobytes()


LEFT = (0, 0, 63, SIZE - 1)
RIGHT = (192, 0, SIZE - 1, SIZE - 1)
MIDDLE_ROWS = (64, 0, 191, SIZE - 1)


def _atelier(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return build_test_atelier(tmp_path, [atelier_placeholder], **overrides)


async def test_three_turns_each_edit_the_previous_output(tmp_path: Path) -> None:
    atelier = _atelier(tmp_path)
    sessions = SessionManager(atelier)
    root = atelier.store.root
    view, first = await sessions.start(
        prompt="a red barn",
        image=None,
        call=ImageCall(model="placeholder", size=f"{SIZE}x{SIZE}", output_format="png"),
    )
    turn0 = first.images[0].path
    view, second = await sessions.continue_(
        view.id, call=ImageCall(prompt="paint the left side", mask=_mask(root, "m1.png", (0, 0, 63, SIZE - 1)))
    )
    turn1 = second.images[0].path
    view, third = await sessions.continue_(
        view.id, call=ImageCall(prompt="paint the right side", mask=_mask(root, "m2.png", (192, 0, SIZE - 1, SIZE - 1)))
    )
    turn2 = third.images[0].path
    # Turn 1 repainted the left strip and kept the rest of turn 0.
    assert _pixels(turn1, LEFT) != _pixels(turn0, LEFT)
    assert _pixels(turn1, MIDDLE_ROWS) == _pixels(turn0, MIDDLE_ROWS)
    # Turn 2 started from turn 1 (its left strip is turn 1's), repainted the right strip.
    assert _pixels(turn2, LEFT) == _pixels(turn1, LEFT)
    assert _pixels(turn2, RIGHT) != _pixels(turn1, RIGHT)
    assert _pixels(turn2, MIDDLE_ROWS) == _pixels(turn0, MIDDLE_ROWS)
    assert [t.parent for t in view.turns] == [None, 0, 1]
    assert view.head == 2
    # Defaults carried: the size and format of the session.
    assert third.applied["output_format"] == "png"
    with Image.open(turn2) as image:
        assert image.size == (SIZE, SIZE)
    await atelier.aclose()


async def test_switch_model_mid_session_and_branch_from_turn_one(tmp_path: Path) -> None:
    editor = FakeProvider("other", models=[fake_spec("editor")])
    atelier = build_test_atelier(tmp_path, [atelier_placeholder, editor])
    sessions = SessionManager(atelier)
    view, _ = await sessions.start(
        prompt="a lighthouse", image=None, call=ImageCall(model="placeholder", size="256x256", quality="high")
    )
    view, _ = await sessions.continue_(view.id, call=ImageCall(prompt="add fog"))
    view, switched = await sessions.continue_(view.id, call=ImageCall(prompt="night", model="other/editor"))
    assert switched.model == "other/editor"
    # The fake received the placeholder's turn-1 output as its input, with the carried quality.
    sent = editor.calls[-1].request
    assert sent.quality == "high" and len(sent.images) == 1
    assert sent.images[0].data == Path(view.turns[1].image_path).read_bytes()
    view, _ = await sessions.continue_(view.id, call=ImageCall(prompt="dawn"))
    assert view.turns[-1].model == "other/editor"  # the switched model sticks
    # Branch from turn 1 after turn 3: a new turn whose parent is 1; nothing is lost.
    view, _branched = await sessions.continue_(
        view.id, from_turn=1, call=ImageCall(prompt="sunny", model="placeholder")
    )
    assert len(view.turns) == 5
    assert view.turns[-1].parent == 1 and view.head == 4
    assert all(Path(t.image_path).is_file() for t in view.turns)
    await atelier.aclose()


async def test_start_from_an_existing_image_and_continue_after_a_restart(tmp_path: Path) -> None:
    atelier = _atelier(tmp_path)
    first = await atelier.execute(
        ImageCall(model="placeholder", prompt="seed image", size="256x256"), Operation.GENERATE
    )
    sessions = SessionManager(atelier)
    view, none = await sessions.start(
        prompt=None, image=first.images[0].resource_uri, call=ImageCall(model="placeholder")
    )
    assert none is None and view.turns[0].operation == "import"
    session_id = view.id
    await atelier.aclose()

    restarted = _atelier(tmp_path)  # same data dir: a new process would see the same
    again = SessionManager(restarted)
    view, outcome = await again.continue_(session_id, call=ImageCall(prompt="after restart"))
    assert len(view.turns) == 2 and outcome.images
    await restarted.aclose()


async def test_lru_cap_and_idle_ttl_end_sessions(tmp_path: Path) -> None:
    now = [1000.0]
    atelier = _atelier(tmp_path, sessions={"max_sessions": 2, "idle_ttl_s": 60})
    sessions = SessionManager(atelier, clock=lambda: now[0])
    ids = []
    for index in range(3):
        now[0] += 1
        view, _ = await sessions.start(
            prompt=f"p{index}", image=None, call=ImageCall(model="placeholder", size="256x256")
        )
        ids.append(view.id)
    views = {v.id: v for v in await sessions.list(include_ended=True)}
    assert views[ids[0]].status == "ended" and "max_sessions" in (views[ids[0]].ended_reason or "")
    assert views[ids[1]].status == views[ids[2]].status == "open"
    now[0] += 61
    assert {v.id for v in await sessions.list()} == set()
    ended = await sessions.get(ids[2])
    assert "idle_ttl_s" in (ended.ended_reason or "")
    assert Path(ended.turns[0].image_path).is_file()  # files of ended sessions stay
    await atelier.aclose()


async def test_clear_errors(tmp_path: Path) -> None:
    generator_only = FakeProvider(
        "gen", models=[fake_spec("draw", operations=frozenset({Operation.GENERATE}), input_images=None)]
    )
    atelier = build_test_atelier(tmp_path, [atelier_placeholder, generator_only])
    sessions = SessionManager(atelier)
    with pytest.raises(NotFoundError, match="unknown session") as unknown:
        await sessions.continue_("ses_nope", call=ImageCall(prompt="x"))
    assert "action=start" in str(unknown.value)
    view, _ = await sessions.start(prompt="p", image=None, call=ImageCall(model="placeholder", size="256x256"))
    with pytest.raises(InvalidParameterError, match="cannot edit"):
        await sessions.continue_(view.id, call=ImageCall(prompt="x", model="gen/draw"))
    with pytest.raises(InvalidParameterError, match="from_turn"):
        await sessions.continue_(view.id, from_turn=7, call=ImageCall(prompt="x"))
    Path(view.turns[0].image_path).write_bytes(b"changed")
    with pytest.raises(InputImageError, match="changed or was deleted"):
        await sessions.continue_(view.id, call=ImageCall(prompt="x"))
    await sessions.end(view.id)
    with pytest.raises(RequestError, match="has ended") as ended:
        await sessions.continue_(view.id, call=ImageCall(prompt="x"))
    assert ended.value.code == "session_ended"
    await atelier.aclose()


async def test_concurrent_turns_on_one_session_are_serialised(tmp_path: Path) -> None:
    import asyncio

    atelier = _atelier(tmp_path)
    sessions = SessionManager(atelier)
    view, _ = await sessions.start(prompt="p", image=None, call=ImageCall(model="placeholder", size="256x256"))
    await asyncio.gather(
        sessions.continue_(view.id, call=ImageCall(prompt="one")),
        sessions.continue_(view.id, call=ImageCall(prompt="two")),
    )
    turns = (await sessions.get(view.id)).turns
    assert [t.parent for t in turns] == [None, 0, 1]  # the second built on the first: no lost update
    await atelier.aclose()
