"""storage: confinement, naming, atomic no-clobber publish, fault injection, sidecars."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from atelier_core.media.storage import TEMP_PREFIX, OutputStore
from atelier_core.plugin.errors import InvalidParameterError, NotFoundError, OutputPathError, StorageError


def encode(fmt: str = "PNG", size: tuple[int, int] = (8, 6), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


PNG = encode()
JPEG = encode("JPEG")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def store(root: Path) -> OutputStore:
    return OutputStore(root)


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def temp_leftovers(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.name.startswith(TEMP_PREFIX)]


# -- auto names -------------------------------------------------------------------------


def test_auto_name_layout_and_record(store: OutputStore) -> None:
    saved = store.save(PNG, "png", metadata={"prompt": "A cat / on a 'mat'\n\u202e!", "model": "x/y"})
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/\d{6}-a-cat-on-a-mat-[0-9a-f]{8}\.png", saved.relative)
    assert saved.path == store.root / saved.relative
    assert saved.path.read_bytes() == PNG
    assert saved.uri == saved.path.as_uri() and saved.uri.startswith("file://")
    assert saved.resource_uri == "atelier://images/" + saved.relative
    assert (saved.width, saved.height, saved.format, saved.bytes) == (8, 6, "png", len(PNG))
    assert saved.sidecar == saved.path.with_name(saved.path.name + ".json")
    record = json.loads(saved.sidecar.read_text())
    assert record["sha256"] == saved.sha256 and record["model"] == "x/y"
    assert record["width"] == 8 and record["bytes"] == len(PNG)
    assert temp_leftovers(store.root) == []


@given(prompt=st.text(max_size=300))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_auto_name_slug_is_always_safe(prompt: str, tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "slug")
    parts = store.auto_parts("jpeg", {"prompt": prompt})
    assert re.fullmatch(r"\d{6}-[a-z0-9-]{1,40}-[0-9a-f]{8}\.jpg", parts[1]), parts


def test_hundred_concurrent_auto_names_same_prompt(store: OutputStore) -> None:
    barrier = threading.Barrier(20)

    def one(_: int) -> str:
        try:
            barrier.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        return store.save(PNG, "png", metadata={"prompt": "same"}, sidecar=False).relative

    with ThreadPoolExecutor(20) as pool:
        names = list(pool.map(one, range(100)))
    assert len(set(names)) == 100
    files = [p for p in store.root.rglob("*.png")]
    assert len(files) == 100


def test_auto_name_collision_retries(store: OutputStore, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"] + [f"{i:016x}" for i in range(10)])
    import secrets

    real = secrets.token_hex

    def fake(n: int) -> str:
        return next(tokens)[: n * 2] if n == 4 else real(n)

    monkeypatch.setattr("atelier_core.media.storage.secrets.token_hex", fake)
    first = store.save(PNG, "png", sidecar=False)
    second = store.save(PNG, "png", sidecar=False)
    assert first.relative.endswith("-aaaaaaaa.png") and second.relative.endswith("-bbbbbbbb.png")


# -- explicit names -------------------------------------------------------------------


def test_relative_name_with_subfolders_resolved_against_root(
    store: OutputStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    saved = store.save(PNG, "png", filename="cats/tabby/one", metadata={})
    assert saved.path == store.root / "cats/tabby/one.png"
    assert saved.path.read_bytes() == PNG
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("filename", "fmt", "expected"),
    [
        ("a.png", "png", "a.png"),
        ("a.PNG", "png", "a.PNG"),
        ("a.jpg", "jpeg", "a.jpg"),
        ("a.jpeg", "jpeg", "a.jpeg"),
        ("a", "jpeg", "a.jpg"),
        ("v1.2-final", "webp", "v1.2-final.webp"),
        ("./x/./y.gif", "gif", "x/y.gif"),
        ("caf\u0065\u0301.png", "png", "caf\u00e9.png"),
        ("emoji-🐱.png", "png", "emoji-🐱.png"),
    ],
)
def test_plan_path_accepts(store: OutputStore, filename: str, fmt: str, expected: str) -> None:
    assert "/".join(store.plan_path(filename, fmt)) == expected


@pytest.mark.parametrize(
    ("filename", "code"),
    [
        ("../x.png", "output_path_outside_root"),
        ("a/../../x.png", "output_path_outside_root"),
        ("a/../x.png", "output_path_outside_root"),
        ("..\\x.png", "invalid_output_path"),
        ("C:\\x.png", "invalid_output_path"),
        ("C:x.png", "invalid_output_path"),
        ("\\\\srv\\share\\x.png", "invalid_output_path"),
        ("\\x.png", "invalid_output_path"),
        ("x.png:ads", "invalid_output_path"),
        ("CON.png", "invalid_output_path"),
        ("nul", "invalid_output_path"),
        ("sub/com1.txt.png", "invalid_output_path"),
        ("a.png.", "invalid_output_path"),
        ("a.png ", "invalid_output_path"),
        (" a.png", "invalid_output_path"),
        ("a\x00.png", "invalid_output_path"),
        ("a\nb.png", "invalid_output_path"),
        ("evil\u202egnp.exe", "invalid_output_path"),
        ("zero\u200bwidth.png", "invalid_output_path"),
        ("", "invalid_output_path"),
        ("   ", "invalid_output_path"),
        ("/", "invalid_output_path"),
        ("x" * 256 + ".png", "name_too_long"),
        ("/".join(["d" * 200] * 21) + "/x.png", "name_too_long"),
        (f"{TEMP_PREFIX}abc.png", "invalid_output_path"),
        ("x.jpg", "extension_mismatch"),
        ("x.exe", "extension_mismatch"),
    ],
)
def test_plan_path_refuses(store: OutputStore, filename: str, code: str) -> None:
    with pytest.raises(OutputPathError) as info:
        store.plan_path(filename, "png")
    assert info.value.code == code
    assert info.value.parameter == "filename"
    assert info.value.fix


def test_extension_mismatch_message_names_both_and_fix(store: OutputStore) -> None:
    with pytest.raises(OutputPathError) as info:
        store.plan_path("shots/x.jpg", "png")
    text = str(info.value)
    assert ".jpg" in text and "PNG" in text and "x.png" in text and "output_format=jpg" in text


def test_bytes_format_wins_over_requested_format(store: OutputStore) -> None:
    saved = store.save(JPEG, "png", filename="photo", metadata={})
    assert saved.relative == "photo.jpg" and saved.format == "jpeg"
    with pytest.raises(OutputPathError):
        store.save(JPEG, "png", filename="photo2.png", metadata={})


def test_absolute_inside_root_ok_outside_refused(store: OutputStore, tmp_path: Path) -> None:
    inside = store.save(PNG, "png", filename=str(store.root / "abs" / "in.png"), metadata={})
    assert inside.relative == "abs/in.png"
    outside = tmp_path / "outside"
    outside.mkdir()
    for target in (outside / "x.png", Path("/etc/x.png"), tmp_path / "root-evil" / "x.png"):
        with pytest.raises(OutputPathError) as info:
            store.save(PNG, "png", filename=str(target), metadata={})
        assert info.value.code == "output_path_outside_root"
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "root-evil").exists()


def test_prefix_sibling_relative_escape(store: OutputStore, tmp_path: Path) -> None:
    (tmp_path / "root-evil").mkdir()
    with pytest.raises(OutputPathError):
        store.save(PNG, "png", filename="../root-evil/x.png", metadata={})
    assert list((tmp_path / "root-evil").iterdir()) == []


def test_root_reached_through_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    store = OutputStore(link)
    assert store.root == real
    a = store.save(PNG, "png", filename=str(link / "a.png"), metadata={})
    b = store.save(PNG, "png", filename=str(real / "b.png"), metadata={})
    assert a.path == real / "a.png" and b.path == real / "b.png"


def test_symlinked_folder_leading_out_is_refused(store: OutputStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    for name in ("link/new.png", "link/deeper/new.png", str(store.root / "link" / "new.png")):
        with pytest.raises(OutputPathError) as info:
            store.save(PNG, "png", filename=name, metadata={})
        assert info.value.code == "output_path_outside_root"
    assert list(outside.iterdir()) == []


def test_symlinked_folder_inside_root_is_followed(store: OutputStore) -> None:
    (store.root / "real").mkdir()
    (store.root / "alias").symlink_to(store.root / "real")
    saved = store.save(PNG, "png", filename="alias/x.png", metadata={})
    assert (store.root / "real" / "x.png").read_bytes() == PNG
    assert saved.path.resolve() == (store.root / "real" / "x.png")


def test_symlink_at_target_is_never_written_through(store: OutputStore, tmp_path: Path) -> None:
    canary = tmp_path / "canary.png"
    canary.write_bytes(b"original")
    (store.root / "t.png").symlink_to(canary)
    with pytest.raises(OutputPathError) as info:
        store.save(PNG, "png", filename="t.png", metadata={})
    assert info.value.code == "file_exists"
    assert canary.read_bytes() == b"original"
    # overwrite replaces the link itself, never the file it points at
    saved = store.save(PNG, "png", filename="t.png", overwrite=True, metadata={})
    assert canary.read_bytes() == b"original"
    assert not saved.path.is_symlink() and saved.path.read_bytes() == PNG


def test_toctou_directory_swapped_for_symlink(
    store: OutputStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "sub").mkdir()
    real_plan = OutputStore.plan_path

    def plan_then_swap(self: OutputStore, *args: Any, **kwargs: Any) -> list[str]:
        parts = real_plan(self, *args, **kwargs)
        os.rename(store.root / "sub", store.root / "sub-moved")
        (store.root / "sub").symlink_to(outside)
        return parts

    monkeypatch.setattr(OutputStore, "plan_path", plan_then_swap)
    with pytest.raises(OutputPathError) as info:
        store.save(PNG, "png", filename="sub/x.png", metadata={})
    assert info.value.code == "output_path_outside_root"
    assert list(outside.iterdir()) == []


def test_existing_file_is_never_clobbered(store: OutputStore) -> None:
    store.save(PNG, "png", filename="keep.png", metadata={})
    other = encode(color="blue")
    with pytest.raises(OutputPathError) as info:
        store.save(other, "png", filename="keep.png", metadata={})
    assert info.value.code == "file_exists"
    assert "overwrite=true" in str(info.value)
    assert (store.root / "keep.png").read_bytes() == PNG
    replaced = store.save(other, "png", filename="keep.png", overwrite=True, metadata={})
    assert replaced.path.read_bytes() == other
    assert json.loads(replaced.sidecar.read_text())["sha256"] == replaced.sha256  # type: ignore[union-attr]
    assert temp_leftovers(store.root) == []


def test_concurrent_same_explicit_name_exactly_one_wins(store: OutputStore) -> None:
    barrier = threading.Barrier(8)
    colors = ["red", "blue", "green", "white", "black", "yellow", "gray", "pink"]

    def one(color: str) -> str:
        barrier.wait(timeout=5)
        try:
            store.save(encode(color=color), "png", filename="race.png", metadata={}, sidecar=False)
            return "ok"
        except OutputPathError as exc:
            return exc.code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, colors))
    assert results.count("ok") == 1 and results.count("file_exists") == 7
    Image.open(store.root / "race.png").verify()


def test_target_is_a_directory_or_parent_is_a_file(store: OutputStore) -> None:
    (store.root / "dir.png").mkdir()
    with pytest.raises(OutputPathError):
        store.save(PNG, "png", filename="dir.png", overwrite=True, metadata={})
    (store.root / "file").write_bytes(b"x")
    with pytest.raises(OutputPathError):
        store.save(PNG, "png", filename="file/x.png", metadata={})
    assert temp_leftovers(store.root) == []


def test_permissions(root: Path) -> None:
    old = os.umask(0o022)
    try:
        store = OutputStore(root, file_mode=0o600)
        saved = store.save(PNG, "png", metadata={})
    finally:
        os.umask(old)
    assert saved.path.stat().st_mode & 0o777 == 0o600
    assert OutputStore(root).save(PNG, "png", metadata={}).path.stat().st_mode & 0o777 == 0o644


def test_fsync_file_and_directory(store: OutputStore, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        kinds.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store.save(PNG, "png", filename="durable.png", metadata={}, sidecar=False)
    assert kinds == ["file", "dir"]


# -- fault injection --------------------------------------------------------------------


def fail_nth(monkeypatch: pytest.MonkeyPatch, name: str, nth: int, code: int) -> list[int]:
    real = getattr(os, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, wrapper)
    return calls


@pytest.mark.parametrize("name", ["write", "fsync", "link", "open", "replace"])
@pytest.mark.parametrize("nth", [1, 2, 3])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_fault_leaves_no_partial_file_and_no_temp(
    store: OutputStore, monkeypatch: pytest.MonkeyPatch, name: str, nth: int, code: int
) -> None:
    fail_nth(monkeypatch, name, nth, code)
    try:
        saved = store.save(PNG, "png", filename="sub/f.png", metadata={"prompt": "p"})
    except StorageError as exc:
        assert exc.code == "write_failed"
        assert errno.errorcode[code] in str(exc) and "sub" in str(exc)
        final = store.root / "sub" / "f.png"
        assert not final.exists() or final.read_bytes() == PNG
    else:
        assert saved.path.read_bytes() == PNG
    monkeypatch.undo()
    assert temp_leftovers(store.root) == []


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOTSUP, errno.EXDEV])
def test_fallback_without_hard_links_still_no_clobber(
    store: OutputStore, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_links)
    saved = store.save(PNG, "png", filename="nolink.png", metadata={})
    assert saved.path.read_bytes() == PNG
    with pytest.raises(OutputPathError) as info:
        store.save(encode(color="blue"), "png", filename="nolink.png", metadata={})
    assert info.value.code == "file_exists"
    assert saved.path.read_bytes() == PNG
    assert temp_leftovers(store.root) == []


def test_unwritable_directory_names_errno(store: OutputStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "mkdir", denied)
    with pytest.raises(StorageError) as info:
        store.save(PNG, "png", filename="locked/x.png", metadata={})
    assert "EACCES" in str(info.value) and "locked" in str(info.value)
    assert info.value.code == "write_failed" and "storage.output_dir" in str(info.value)


def test_sweep_temp_removes_only_old_orphans(store: OutputStore) -> None:
    (store.root / "d").mkdir()
    old = store.root / "d" / f"{TEMP_PREFIX}old"
    new = store.root / f"{TEMP_PREFIX}new"
    keep = store.root / "d" / "image.png"
    for p in (old, new, keep):
        p.write_bytes(b"x")
    os.utime(old, (1, 1))
    os.utime(keep, (1, 1))
    assert store.sweep_temp(older_than_s=60) == 1
    assert not old.exists() and new.exists() and keep.exists()


# -- sidecar -----------------------------------------------------------------------------


def test_sidecar_drops_secret_keys(store: OutputStore) -> None:
    from pydantic import SecretStr

    meta = {
        "prompt": "p",
        "seed": 7,
        "api_key": "sk-canary",
        "headers": {"Authorization": "Bearer sk-canary", "x": 1},
        "usage": {"input_tokens": 3},
        "key_obj": SecretStr("sk-canary"),
        "access_token": "sk-canary",
    }
    saved = store.save(PNG, "png", metadata=meta)
    text = saved.sidecar.read_text()  # type: ignore[union-attr]
    assert "sk-canary" not in text
    record = json.loads(text)
    assert record["seed"] == 7 and record["usage"] == {"input_tokens": 3} and record["headers"] == {"x": 1}


# -- resources ---------------------------------------------------------------------------


def test_resolve_resource_round_trip(store: OutputStore) -> None:
    saved = store.save(PNG, "png", filename="with space/é.png", metadata={})
    assert "%20" in saved.resource_uri
    assert store.resolve_resource(saved.resource_uri) == saved.path
    assert store.resolve_resource(saved.relative) == saved.path


def test_resolve_resource_refusals(store: OutputStore, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(PNG)
    (store.root / "out.png").symlink_to(outside)
    (store.root / "folder").mkdir()
    for uri in ("atelier://images/out.png", "atelier://images/missing.png", "atelier://images/folder"):
        with pytest.raises(NotFoundError) as info:
            store.resolve_resource(uri)
        assert str(tmp_path) not in str(info.value)
    for uri in (
        "atelier://images/../secret.png",
        "atelier://images/%2e%2e/secret.png",
        "atelier://images//etc/passwd",
        "https://x/y.png",
        "",
        "atelier://images/a\x00",
    ):
        with pytest.raises(InvalidParameterError) as info2:
            store.resolve_resource(uri)
        assert info2.value.code == "invalid_resource_uri"


# -- property: confinement ---------------------------------------------------------------

_piece = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "a",
            "b.png",
            "CON",
            "x:y",
            "C:",
            "\\",
            "~",
            "link",
            "é",
            "e\u0301",
            "\u202e",
            "\x00",
            "a ",
            "a.",
            "🐱",
            "x" * 260,
            "/",
        ]
    ),
    st.text(min_size=1, max_size=12),
)


@given(parts=st.lists(_piece, min_size=1, max_size=6), sep=st.sampled_from(["/", "\\", "//"]), absolute=st.booleans())
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_property_refused_or_inside_root(tmp_path: Path, parts: list[str], sep: str, absolute: bool) -> None:
    base = tmp_path / "prop"
    store = OutputStore(base / "root")
    outside = base / "outside"
    outside.mkdir(exist_ok=True)
    link = store.root / "link"
    if not link.is_symlink():
        link.symlink_to(outside)
    name = sep.join(parts)
    if absolute:
        name = str(store.root) + "/" + name
    try:
        saved = store.save(PNG, "png", filename=name, metadata={}, sidecar=False)
    except OutputPathError:
        return
    real = Path(os.path.realpath(saved.path))
    assert real.is_relative_to(store.root)
    assert real.read_bytes() == PNG
    assert list(outside.iterdir()) == []
    real.unlink()


def test_sidecar_failure_keeps_the_published_image(store: OutputStore, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_nth(monkeypatch, "link", 2, errno.ENOSPC)  # the image is linked first, then its sidecar
    saved = store.save(PNG, "png", filename="kept.png", metadata={"prompt": "p"})
    assert saved.sidecar is None
    assert saved.path.read_bytes() == PNG
    assert not (store.root / "kept.png.json").exists()
    monkeypatch.undo()
    assert temp_leftovers(store.root) == []


def test_root_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError) as info:
        OutputStore(tmp_path / "file" / "images")
    assert info.value.code == "write_failed" and "storage.output_dir" in str(info.value)


def test_a_sidecar_never_replaces_a_file_atelier_did_not_write(store: OutputStore) -> None:
    (store.root / "keep.png.json").write_text('{"mine": true}')
    saved = store.save(PNG, "png", filename="keep.png", metadata={"prompt": "p"})
    assert saved.path.read_bytes() == PNG and saved.sidecar is None
    assert (store.root / "keep.png.json").read_text() == '{"mine": true}'
    # Its own sidecar, on overwrite, is replaced.
    first = store.save(PNG, "png", filename="own.png", metadata={"prompt": "one"})
    assert first.sidecar is not None
    again = store.save(PNG, "png", filename="own.png", overwrite=True, metadata={"prompt": "two"})
    assert again.sidecar is not None and '"two"' in again.sidecar.read_text()


def test_image_and_sidecar_are_synced_with_one_directory_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat

    import atelier_core.media.storage as storage

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    store = OutputStore(tmp_path / "out")
    saved = store.save(PNG, "png", metadata={})
    assert saved.sidecar is not None and saved.sidecar.is_file() and saved.path.read_bytes() == PNG
    assert synced == ["file", "file", "dir"]  # image, sidecar, then one directory fsync for both
    synced.clear()
    store.save(PNG, "png", metadata={}, sidecar=False)
    assert synced == ["file", "dir"]
