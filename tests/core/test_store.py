"""The state database: pragmas, per-component migrations, refusal of newer schemas,
quarantine of a corrupt file, and use by another module (the cost ledger)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from atelier_core.engine.cost import Ledger, LedgerEntry
from atelier_core.plugin.errors import ConfigurationError
from atelier_core.state.database import DB_FILENAME, StateStore


def test_open_creates_the_file_in_wal_mode_with_durable_pragmas(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "data")
    assert store.path == tmp_path / "data" / DB_FILENAME
    conn = store.connect()
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        conn.close()
    assert store.versions() == {}


def test_migrations_apply_once_each_and_new_steps_later(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    v1 = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
    assert store.migrate("notes", [v1]) == 1
    assert store.migrate("notes", [v1]) == 1  # idempotent: not re-applied (would fail)

    def v2(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE notes ADD COLUMN tag TEXT")
        conn.execute("INSERT INTO notes (body, tag) VALUES ('seeded', 'v2')")

    v3 = """
    CREATE TABLE notes_log (note_id INTEGER, at TEXT);
    CREATE TRIGGER notes_logged AFTER INSERT ON notes BEGIN
        INSERT INTO notes_log VALUES (new.id, 'x'); INSERT INTO notes_log VALUES (new.id, 'y');
    END;
    """
    assert store.migrate("notes", [v1, v2, v3]) == 3
    assert store.versions() == {"notes": 3}
    with store.transaction() as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('hello')")
    conn = store.connect()
    try:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM notes_log").fetchone()[0] == 2  # trigger kept whole
    finally:
        conn.close()


def test_a_failing_migration_rolls_back_completely(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    bad = "CREATE TABLE half (id INTEGER); INSERT INTO missing_table VALUES (1);"
    with pytest.raises(sqlite3.OperationalError):
        store.migrate("broken", [bad])
    assert store.versions() == {}
    conn = store.connect()
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert "half" not in tables


def test_a_schema_from_a_newer_release_is_refused_with_instructions(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    store.migrate("jobs", ["CREATE TABLE a (x)", "CREATE TABLE b (x)"])
    with pytest.raises(ConfigurationError) as caught:
        store.migrate("jobs", ["CREATE TABLE a (x)"])
    text = str(caught.value)
    assert "version 2" in text and "only knows version 1" in text
    assert "upgrade atelier-mcp" in text and "ATELIER_DATA_DIR" in text


def test_concurrent_openers_apply_each_step_exactly_once(tmp_path: Path) -> None:
    StateStore.open(tmp_path)
    errors: list[BaseException] = []
    steps = ["CREATE TABLE once (x)", "ALTER TABLE once ADD COLUMN y"]

    def opener() -> None:
        try:
            StateStore.open(tmp_path).migrate("race", steps)  # separate store objects
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert StateStore.open(tmp_path).versions() == {"race": 2}


def test_a_corrupt_file_is_moved_aside_and_a_fresh_database_started(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a sqlite database at all" * 200)
    store = StateStore.open(tmp_path)
    moved = list(tmp_path.glob(f"{DB_FILENAME}.corrupt-*"))
    assert len(moved) == 1
    assert moved[0].read_bytes().startswith(b"this is not a sqlite")
    assert store.migrate("jobs", ["CREATE TABLE t (x)"]) == 1


def test_other_modules_keep_their_tables_in_the_same_file(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    ledger = Ledger(store)
    entry = LedgerEntry(
        at=1.0, day="2026-11-21", run_id="r", provider="p", model="p/m", operation="generate",
        images=1, estimate_usd=0.04, cost_usd=0.05, status="billed",
    )
    ledger.record(entry)
    assert ledger.spent(day="2026-11-21") == pytest.approx(0.05)
    assert StateStore.open(tmp_path).path.stat().st_size > 0
