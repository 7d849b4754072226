"""inputs: every reference form, confinement to the input roots, strict base64."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpcore2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from atelier_core.media.fetch import SafeFetcher
from atelier_core.media.inputs import InputIntake, decode_base64_image
from atelier_core.media.storage import OutputStore
from atelier_core.plugin.errors import InputImageError

pytestmark = pytest.mark.anyio  # keeps parametrize ids for async tests (see test_fetch)


def encode(fmt: str = "PNG", size: tuple[int, int] = (12, 8), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


PNG = encode()
JPEG = encode("JPEG")
B64 = base64.b64encode(PNG).decode()


class NoDial(httpcore2.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.dials: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.dials.append((host, port))
        raise httpcore2.ConnectError("no dialling in tests")


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("out", "extra", "outside", "cwd")}
    for path in paths.values():
        path.mkdir()
    return paths


@pytest.fixture
def store(layout: dict[str, Path]) -> OutputStore:
    return OutputStore(layout["out"])


def intake(store: OutputStore, layout: dict[str, Path], **kwargs: Any) -> InputIntake:
    kwargs.setdefault("fetcher", None)
    kwargs.setdefault("allow_remote", False)
    kwargs.setdefault("max_bytes", 1_000_000)
    kwargs.setdefault("max_pixels", 10_000_000)
    return InputIntake(roots=[store.root, layout["extra"]], store=store, **kwargs)


async def expect(code: str, intake_: InputIntake, reference: str, parameter: str = "images[0]") -> InputImageError:
    with pytest.raises(InputImageError) as info:
        await intake_.load(reference, parameter=parameter)
    assert info.value.code == code, str(info.value)
    assert info.value.parameter == parameter
    return info.value


# -- local paths ----------------------------------------------------------------------------


async def test_absolute_and_relative_paths_in_roots(
    store: OutputStore, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (layout["extra"] / "sub").mkdir()
    (layout["extra"] / "sub" / "a.png").write_bytes(PNG)
    (layout["out"] / "b.jpg").write_bytes(JPEG)
    (layout["cwd"] / "c.png").write_bytes(PNG)
    monkeypatch.chdir(layout["cwd"])
    loader = intake(store, layout)
    image = await loader.load(str(layout["extra"] / "sub" / "a.png"))
    assert image.data == PNG and image.format == "png" and (image.width, image.height) == (12, 8)
    assert image.source == "a.png"
    assert (await loader.load("sub/a.png")).data == PNG
    assert (await loader.load("b.jpg")).format == "jpeg"
    # never the process working directory
    await expect("image_file_not_found", loader, "c.png")
    await expect("image_file_not_found", loader, "./c.png")


async def test_relative_lookup_order_follows_roots(store: OutputStore, layout: dict[str, Path]) -> None:
    (layout["out"] / "same.png").write_bytes(encode(color="red"))
    (layout["extra"] / "same.png").write_bytes(encode(color="blue"))
    image = await intake(store, layout).load("same.png")
    assert image.data == (layout["out"] / "same.png").read_bytes()


async def test_tilde_expanded_but_confined(
    store: OutputStore, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(layout["extra"]))
    (layout["extra"] / "t.png").write_bytes(PNG)
    loader = intake(store, layout)
    assert (await loader.load("~/t.png")).data == PNG
    monkeypatch.setenv("HOME", str(layout["outside"]))
    (layout["outside"] / "t.png").write_bytes(PNG)
    await expect("input_path_outside_root", loader, "~/t.png")


async def test_outside_roots_refused_without_opening(
    store: OutputStore, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = layout["outside"] / "canary.png"
    canary.write_bytes(PNG)
    opened: list[str] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    loader = intake(store, layout)
    for ref in (
        str(canary),
        f"file://{canary}",
        "../outside/canary.png",
        str(layout["out"]) + "/../outside/canary.png",
    ):
        err = await expect("input_path_outside_root", loader, ref)
        assert "Fix:" in str(err)
    assert not any("canary" in p for p in opened)


async def test_prefix_sibling_root(store: OutputStore, layout: dict[str, Path], tmp_path: Path) -> None:
    evil = tmp_path / "out-evil"
    evil.mkdir()
    (evil / "x.png").write_bytes(PNG)
    await expect("input_path_outside_root", intake(store, layout), str(evil / "x.png"))


async def test_symlink_leaving_roots_refused_inside_followed(store: OutputStore, layout: dict[str, Path]) -> None:
    (layout["outside"] / "secret.png").write_bytes(PNG)
    (layout["extra"] / "leak.png").symlink_to(layout["outside"] / "secret.png")
    (layout["extra"] / "dirlink").symlink_to(layout["outside"])
    (layout["extra"] / "real.png").write_bytes(PNG)
    (layout["extra"] / "alias.png").symlink_to(layout["extra"] / "real.png")
    loader = intake(store, layout)
    await expect("input_path_outside_root", loader, str(layout["extra"] / "leak.png"))
    await expect("input_path_outside_root", loader, "dirlink/secret.png")
    assert (await loader.load("alias.png")).data == PNG


async def test_fifo_directory_and_missing_refused_quickly(store: OutputStore, layout: dict[str, Path]) -> None:
    os.mkfifo(layout["extra"] / "pipe.png")
    (layout["extra"] / "folder.png").mkdir()
    loader = intake(store, layout)
    started = time.monotonic()
    err = await expect("invalid_image_reference", loader, "pipe.png")
    assert "not a regular file" in str(err)
    assert time.monotonic() - started < 2
    err = await expect("invalid_image_reference", loader, "folder.png")
    assert "folder" in str(err)
    err = await expect("image_file_not_found", loader, "nope/missing.png")
    assert "nope/missing.png" in str(err)
    assert str(layout["outside"]) not in str(err)


async def test_sparse_huge_file_refused_by_size_before_reading(
    store: OutputStore, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = layout["extra"] / "huge.png"
    with open(huge, "wb") as handle:
        handle.write(PNG)
    os.truncate(huge, 10 * 1024**3)
    reads: list[int] = []
    real_read = os.read

    def spy(fd: int, n: int) -> bytes:
        reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", spy)
    err = await expect("image_file_too_large", intake(store, layout), "huge.png")
    assert "10,737,418,240" in str(err) and "1,000,000" in str(err)
    assert reads == []


async def test_text_file_named_png_and_empty_file(store: OutputStore, layout: dict[str, Path]) -> None:
    (layout["extra"] / ".env.png").write_text("OPENAI_API_KEY=sk-canary\n")
    (layout["extra"] / "empty.png").write_bytes(b"")
    loader = intake(store, layout)
    err = await expect("unsupported_image_media_type", loader, ".env.png")
    assert "canary" not in str(err)
    await expect("empty_image_file", loader, "empty.png")


async def test_bytes_are_read_once_and_returned_exactly(
    store: OutputStore, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """I8: the file changes after it was read; the validated bytes are what we return."""
    target = layout["extra"] / "swap.png"
    target.write_bytes(PNG)
    from atelier_core.media.images import inspect_image as real_inspect

    def inspect_then_swap(data: bytes, **kwargs: Any) -> Any:
        target.write_bytes(encode(color="blue", size=(30, 30)))
        return real_inspect(data, **kwargs)

    monkeypatch.setattr("atelier_core.media.inputs.inspect_image", inspect_then_swap)
    image = await intake(store, layout).load("swap.png")
    assert image.data == PNG and (image.width, image.height) == (12, 8)


@pytest.mark.parametrize("ref", ["a\x00b.png", "a\nb.png", "x" * 5000 + ".png"])
async def test_bad_path_strings(store: OutputStore, layout: dict[str, Path], ref: str) -> None:
    with pytest.raises(InputImageError) as info:
        await intake(store, layout).load(ref)
    assert info.value.code in ("invalid_image_reference", "invalid_base64_image")
    assert len(str(info.value)) < 2048


async def test_pixel_cap_applies(store: OutputStore, layout: dict[str, Path]) -> None:
    (layout["extra"] / "big.png").write_bytes(encode(size=(200, 200)))
    await expect("image_too_many_pixels", intake(store, layout, max_pixels=10_000), "big.png")


async def test_mask_format_allow_list(store: OutputStore, layout: dict[str, Path]) -> None:
    (layout["extra"] / "m.jpg").write_bytes(JPEG)
    with pytest.raises(InputImageError) as info:
        await intake(store, layout).load("m.jpg", parameter="mask", formats=("png",))
    assert info.value.code == "unsupported_image_media_type" and info.value.parameter == "mask"


# -- URIs ---------------------------------------------------------------------------------


async def test_file_urls_percent_decoded(store: OutputStore, layout: dict[str, Path]) -> None:
    (layout["extra"] / "with space é.png").write_bytes(PNG)
    loader = intake(store, layout)
    path = layout["extra"] / "with space é.png"
    assert (await loader.load(path.as_uri())).data == PNG
    assert (await loader.load("file://localhost" + path.as_uri()[7:])).data == PNG
    await expect("url_not_allowed", loader, "file://otherhost/etc/x.png")


async def test_atelier_resource_uris(store: OutputStore, layout: dict[str, Path]) -> None:
    saved = store.save(PNG, "png", filename="gen/one.png", metadata={})
    loader = intake(store, layout)
    image = await loader.load(saved.resource_uri)
    assert image.data == PNG and image.source == "one.png"
    await expect("image_file_not_found", loader, "atelier://images/gen/missing.png")
    await expect("invalid_image_reference", loader, "atelier://images/../outside/x.png")


@pytest.mark.parametrize(
    "ref",
    [
        "http://example.com/x.png",
        "ftp://example.com/x.png",
        "gopher://x/",
        "javascript:alert(1)",
        "s3://bucket/x.png",
        "HTTP://example.com/x.png",
    ],
)
async def test_other_schemes_refused(store: OutputStore, layout: dict[str, Path], ref: str) -> None:
    await expect("url_not_allowed", intake(store, layout), ref)


async def test_https_refused_when_remote_disabled_naming_the_setting(
    store: OutputStore, layout: dict[str, Path]
) -> None:
    spy = NoDial()
    fetcher = SafeFetcher(timeout_s=1, max_bytes=1000, network_backend=spy)
    err = await expect(
        "url_not_allowed", intake(store, layout, fetcher=fetcher), "https://example.com/x.png?token=CANARY"
    )
    text = str(err)
    assert "storage.allow_remote_inputs" in text and "ATELIER_STORAGE__ALLOW_REMOTE_INPUTS" in text
    assert "CANARY" not in text and "CANARY" not in str(err.to_dict())
    assert spy.dials == []


async def test_https_goes_through_the_safe_fetcher_when_enabled(store: OutputStore, layout: dict[str, Path]) -> None:
    spy = NoDial()

    async def resolver(host: str, port: int) -> list[str]:
        return ["10.0.0.1"]

    fetcher = SafeFetcher(timeout_s=1, max_bytes=1000, network_backend=spy, resolver=resolver)
    err = await expect(
        "url_not_allowed", intake(store, layout, fetcher=fetcher, allow_remote=True), "https://images.example/x.png"
    )
    assert "non-public" in str(err)
    assert spy.dials == []


# -- base64 and data URLs ----------------------------------------------------------------------


async def test_raw_base64_and_data_urls(store: OutputStore, layout: dict[str, Path]) -> None:
    loader = intake(store, layout)
    assert (await loader.load(B64)).data == PNG
    wrapped = "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76))
    assert (await loader.load(wrapped + "\n")).data == PNG
    assert (await loader.load("data:image/png;base64," + B64)).data == PNG
    jpeg_b64 = base64.b64encode(JPEG).decode()
    assert jpeg_b64.startswith("/9j/")
    assert (await loader.load(jpeg_b64)).format == "jpeg"
    # the declared type is not trusted: the bytes are sniffed
    assert (await loader.load("data:image/png;base64," + jpeg_b64)).format == "jpeg"


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("data:image/png;base64,", "empty_image_file"),
        ("data:image/png," + B64, "invalid_base64_image"),
        ("data:text/plain;base64," + B64, "unsupported_image_media_type"),
        ("data:image/png;base64," + B64 + "=", "invalid_base64_image"),
        ("data:image/png;base64," + B64[:-2] + "!!", "invalid_base64_image"),
        (B64[:20] + "é" + B64[21:], "invalid_base64_image"),
        (B64[:-1], "invalid_base64_image"),
        (B64 + "====", "invalid_base64_image"),
        (B64[:20] + "-_" + B64[22:], "invalid_base64_image"),
        (base64.b64encode(PNG[:-30]).decode(), "image_parse_error"),
        (base64.b64encode(b"GIF89a" + b"\x00" * 30).decode(), "image_parse_error"),
    ],
)
async def test_bad_base64(store: OutputStore, layout: dict[str, Path], ref: str, code: str) -> None:
    await expect(code, intake(store, layout), ref)


async def test_huge_base64_refused_from_length_alone(
    store: OutputStore, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("decoded")

    monkeypatch.setattr("atelier_core.media.inputs.base64.b64decode", never)
    huge = "iVBORw0KGgo" + "A" * 2_000_000
    await expect("image_file_too_large", intake(store, layout), huge)
    await expect("image_file_too_large", intake(store, layout), "data:image/png;base64," + huge)


@given(
    position=st.integers(min_value=0, max_value=len(B64)),
    insert=st.text(min_size=1, max_size=3),
)
@settings(max_examples=300, deadline=None)
def test_property_base64_mutations(position: int, insert: str) -> None:
    mutated = B64[:position] + insert + B64[position:]
    try:
        data = decode_base64_image(mutated, max_bytes=1_000_000, parameter="images[0]")
    except InputImageError as exc:
        assert exc.code in ("invalid_base64_image", "image_file_too_large")
        return
    # Only explicit whitespace (or an insertion that keeps valid base64) may decode.
    compact = mutated.translate(str.maketrans("", "", " \t\r\n"))
    assert base64.b64encode(data).decode() == compact


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_any_reference_gives_image_or_domain_error(tmp_path: Path, ref: str) -> None:
    import anyio

    root = tmp_path / "prop"
    store = OutputStore(root / "out")
    (root / "out" / "ok.png").write_bytes(PNG)
    loader = InputIntake(
        roots=[store.root], store=store, fetcher=None, allow_remote=False, max_bytes=100_000, max_pixels=1_000_000
    )

    async def run() -> None:
        try:
            image = await loader.load(ref)
        except InputImageError:
            return
        assert image.data == PNG

    anyio.run(run)


async def test_concurrent_loads_run_in_threads(
    store: OutputStore, layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from atelier_core.media.images import inspect_image as real

    (layout["extra"] / "c.png").write_bytes(encode(size=(64, 64)))
    loader = intake(store, layout)
    threads: set[int] = set()

    def record(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr("atelier_core.media.inputs.inspect_image", record)
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(loader.load, "c.png")
    assert threads and threading.get_ident() not in threads


async def test_data_url_case_and_missing_input_dirs(
    store: OutputStore, layout: dict[str, Path], tmp_path: Path
) -> None:
    loader = InputIntake(
        roots=[store.root, tmp_path / "does-not-exist"],
        store=store,
        fetcher=None,
        allow_remote=False,
        max_bytes=1_000_000,
        max_pixels=1_000_000,
    )
    assert loader.roots == (store.root,)
    assert (await loader.load("DATA:IMAGE/PNG;BASE64," + B64)).data == PNG
    await expect("url_not_allowed", loader, "file:///x.png?download=1")


async def test_a_call_budget_refuses_the_image_that_would_cross_it_before_reading(
    store: OutputStore,
    layout: dict[str, Path],
) -> None:
    from atelier_core.media.inputs import InputBudget

    loader = intake(store, layout)
    one = layout["extra"] / "one.png"
    one.write_bytes(encode(size=(64, 64)))
    size = one.stat().st_size
    budget = InputBudget(max_bytes=2 * size + 10, max_pixels=10_000)
    await loader.load(str(one), parameter="images[0]", budget=budget)
    await loader.load(str(one), parameter="images[1]", budget=budget)
    assert (budget.bytes_used, budget.pixels_used, budget.images) == (2 * size, 2 * 64 * 64, 2)
    with pytest.raises(InputImageError) as info:
        await loader.load(str(one), parameter="images[2]", budget=budget)
    assert info.value.code == "call_inputs_too_large" and info.value.parameter == "images[2]"
    assert "max_call_input_bytes" in (info.value.fix or "")
    pixels = InputBudget(max_bytes=10**9, max_pixels=64 * 64 + 1)
    await loader.load(str(one), parameter="images[0]", budget=pixels)
    with pytest.raises(InputImageError) as info:
        await loader.load(str(one), parameter="mask", budget=pixels)
    assert info.value.code == "call_inputs_too_large" and "pixels" in str(info.value)
    assert budget.images == 2  # a refused image is not charged
