"""Guarantees 1 and 2 as properties, through the whole call path (``Pipeline.execute``):
for any generated ``filename`` — ``..`` segments, absolute paths, symlinks inside the
root leading out, the ``root-evil`` prefix sibling, Windows forms and separators,
unicode (bidi, zero-width, NFD), very long names — the call is either refused before the
provider is called, or its file lands inside the real output root; nothing is ever
written outside. For any generated input reference, the bytes of a file outside the
input roots never reach the provider.

``tests/core/test_storage.py`` and ``tests/core/test_inputs.py`` hold the same kind of
properties on the storage and intake units; here the provider's call log shows "no spend".
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atelier_core import Operation
from atelier_core.plugin.errors import InputImageError, OutputPathError, RequestError
from atelier_core.plugin.types import ImageCall
from atelier_core.testing import FakeProvider, build_test_atelier, make_image

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_piece = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "link",
            "inside-link",
            "sub",
            "a.png",
            "CON",
            "nul.png",
            "x:ads",
            "C:",
            "\\\\srv",
            "~",
            "$HOME",
            "%2e%2e",
            "\u202e",
            "\u200b",
            "e\u0301",
            "🐱",
            "x" * 300,
            "a ",
            "a.",
            "\n",
            "\x00",
            "root-evil",
            "..\\..",
            ".atelier-tmp-x",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=10),
)


def _layout(base: Path) -> tuple[Path, Path, Path]:
    """root (reached through a symlink), a prefix sibling and an outside folder, with
    links inside the root: one leading out, one staying in."""
    real_root = base / "real-root"
    outside = base / "outside"
    evil = base / "root-evil"
    for folder in (real_root / "sub", outside, evil):
        folder.mkdir(parents=True, exist_ok=True)
    root = base / "root"
    if not root.is_symlink():
        root.symlink_to(real_root, target_is_directory=True)
        (real_root / "link").symlink_to(outside, target_is_directory=True)
        (real_root / "inside-link").symlink_to(real_root / "sub", target_is_directory=True)
    return root, outside, evil


def _snapshot(*folders: Path) -> dict[str, list[str]]:
    return {str(f): sorted(os.listdir(f)) for f in folders}


@PROPERTY
@given(
    parts=st.lists(_piece, min_size=1, max_size=5),
    sep=st.sampled_from(["/", "\\", "//"]),
    anchor=st.sampled_from(["", "root", "real", "evil", "outside"]),
)
def test_any_filename_is_refused_before_spend_or_lands_inside_the_root(
    tmp_path: Path, parts: list[str], sep: str, anchor: str
) -> None:
    base = tmp_path / "paths"
    root, outside, evil = _layout(base)
    prefix = {
        "": "",
        "root": f"{root}/",
        "real": f"{os.path.realpath(root)}/",
        "evil": f"{evil}/",
        "outside": f"{outside}/",
    }[anchor]
    filename = prefix + sep.join(parts)
    before = _snapshot(outside, evil, base)
    fake = FakeProvider()
    atelier = build_test_atelier(tmp_path / "state", [fake], storage={"output_dir": root})
    try:
        outcome = asyncio.run(
            atelier.execute(
                ImageCall(model="fake/fake-image", prompt="p", size="256x256"), Operation.GENERATE, filename=filename
            )
        )
    except RequestError as exc:
        assert isinstance(exc, OutputPathError) and exc.parameter == "filename", repr(exc)
        assert fake.calls == []  # refused before the provider was called
        assert _snapshot(outside, evil, base) == before
        return
    finally:
        asyncio.run(atelier.aclose())
    saved = Path(os.path.realpath(outcome.images[0].path))
    assert saved.is_relative_to(os.path.realpath(root)), (filename, saved)
    assert _snapshot(outside, evil, base) == before  # nothing written outside
    for path in (saved, Path(str(saved) + ".json")):
        path.unlink(missing_ok=True)


@PROPERTY
@given(
    reference=st.one_of(
        st.sampled_from(
            [
                "../outside/secret.png",
                "link/secret.png",
                "inputs/../outside/secret.png",
                "file://{outside}/secret.png",
                "{outside}/secret.png",
                "{inputs}/../outside/secret.png",
                "{inputs}/link/secret.png",
                "file://{inputs}/%2e%2e/outside/secret.png",
                "{inputs}/ok.png",
                "ok.png",
                "~/../outside/secret.png",
                "{inputs}-evil/secret.png",
                "C:\\outside\\secret.png",
                "\\\\server\\share\\secret.png",
            ]
        ),
        st.lists(_piece, min_size=1, max_size=4).map("/".join),
    )
)
def test_input_references_never_send_bytes_from_outside_the_roots(tmp_path: Path, reference: str) -> None:
    base = tmp_path / "inputs-prop"
    inputs = base / "inputs"
    outside = base / "outside"
    evil = base / "inputs-evil"
    for folder in (inputs, outside, evil):
        folder.mkdir(parents=True, exist_ok=True)
    secret = make_image(48, 48, color=(1, 2, 3))
    for folder in (outside, evil):
        (folder / "secret.png").write_bytes(secret)
    (inputs / "ok.png").write_bytes(make_image(32, 32))
    if not (inputs / "link").is_symlink():
        (inputs / "link").symlink_to(outside, target_is_directory=True)
    text = reference.format(outside=outside, inputs=inputs) if "{" in reference and "}" in reference else reference
    fake = FakeProvider()
    atelier = build_test_atelier(base / "state", [fake], storage={"output_dir": base / "out", "input_dirs": [inputs]})
    try:
        asyncio.run(atelier.execute(ImageCall(model="fake/fake-image", prompt="p", images=[text]), Operation.EDIT))
    except RequestError as exc:
        assert isinstance(exc, InputImageError) or exc.parameter, repr(exc)
        assert fake.calls == []
        return
    finally:
        asyncio.run(atelier.aclose())
    assert fake.calls, "accepted but never sent"
    for call in fake.calls:
        assert all(image.data != secret for image in call.request.images), text
