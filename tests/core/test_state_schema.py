"""The state schema: migrations and ``state/tables.py`` agree on both backends; the
default database is the SQLite file in the data directory; old SQLite files are adopted;
a corrupt file is moved aside."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from atelier_core.plugin.errors import ConfigurationError
from atelier_core.settings import ExplicitSettings
from atelier_core.state.db import DB_FILENAME, HEAD_REVISION, resolve_url
from atelier_core.state.store import StateStore
from atelier_core.state.tables import metadata


def test_head_revision_constant_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import atelier_core.state.db as db

    config = Config()
    config.set_main_option("script_location", str(Path(db.__file__).with_name("migrations")))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


async def test_migrations_build_exactly_the_tables_the_code_declares(state_url: str, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = await StateStore.open_url(state_url, tmp_path)
    try:
        async with store.db.read() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync,
                        opts={
                            "compare_type": True,
                            # SQLite's FTS5 index over image prompts (migration 0002) is not a Core table.
                            "include_name": lambda name, kind, _parent: (
                                not (kind == "table" and str(name).startswith("images_fts"))
                            ),
                        },
                    ),
                    metadata,
                )
            )
    finally:
        await store.aclose()
    assert diff == []


async def test_the_default_is_the_sqlite_file_in_the_data_dir_in_wal_mode(tmp_path: Path) -> None:
    settings = ExplicitSettings(data_dir=tmp_path / "data")
    store = await StateStore.open(settings)
    try:
        assert store.where == str(tmp_path / "data" / DB_FILENAME)
        async with store.db.read() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() >= 5000
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await store.aclose()


def test_urls_are_normalised_and_other_databases_refused_without_the_password(tmp_path: Path) -> None:
    assert resolve_url("postgresql://u:pw@h/db", tmp_path).drivername == "postgresql+psycopg"
    assert resolve_url("postgres://u:pw@h/db", tmp_path).drivername == "postgresql+psycopg"
    assert resolve_url("sqlite:///x.db", tmp_path).drivername == "sqlite+aiosqlite"
    with pytest.raises(ConfigurationError) as caught:
        resolve_url("mysql://u:hunter2@h/db", tmp_path)
    assert "hunter2" not in str(caught.value.to_dict()) and caught.value.parameter == "state.url"
    with pytest.raises(ConfigurationError):
        resolve_url("not a url", tmp_path)


async def test_a_file_of_the_hand_written_store_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE schema_migrations (component TEXT, version INTEGER, applied_at REAL);
        CREATE TABLE ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, day TEXT NOT NULL,
            run_id TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, operation TEXT NOT NULL,
            images INTEGER NOT NULL, estimate_usd REAL, cost_usd REAL, status TEXT NOT NULL,
            usage TEXT, request_id TEXT, job_id TEXT);
        INSERT INTO ledger (at, day, run_id, provider, model, operation, images, cost_usd, status, usage)
            VALUES (1.0, '2026-12-01', 'r', 'p', 'p/m', 'generate', 1, 0.04, 'billed', '{"t": 1}');
        CREATE TABLE sessions (id TEXT PRIMARY KEY, created_at REAL NOT NULL, last_used REAL NOT NULL,
            status TEXT NOT NULL, ended_reason TEXT, head INTEGER, defaults TEXT NOT NULL);
        INSERT INTO sessions VALUES ('ses_1', 1.0, 2.0, 'open', NULL, 0, '{"model": "p/m"}');
    """)
    conn.close()
    store = await StateStore.open_url(None, tmp_path)
    try:
        assert await store.ledger.spent(day="2026-12-01") == pytest.approx(0.04)
        assert (await store.ledger.entries(since_day="2026-12-01"))[0]["usage"] == {"t": 1}
        session = await store.sessions.get("ses_1")
        assert session is not None and session.defaults == {"model": "p/m"} and session.principal == "local"
        assert await store.db.revision() == HEAD_REVISION
    finally:
        await store.aclose()


async def test_a_corrupt_file_is_moved_aside_and_a_fresh_one_started(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database" * 100)
    store = await StateStore.open_url(None, tmp_path)
    try:
        assert await store.db.revision() == HEAD_REVISION
    finally:
        await store.aclose()
    moved = _moved_aside(tmp_path)
    assert len(moved) == 1 and moved[0].startswith(b"this is not a database")


def _moved_aside(folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in folder.glob(f"{DB_FILENAME}.corrupt-*")]
