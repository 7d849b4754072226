"""Every table of the state database, in one place (SQLAlchemy Core).

This module is the schema as the code sees it; ``state/migrations/versions/`` is how a
database gets there (Alembic, one revision per change, for SQLite and PostgreSQL alike).
Change a table here **and** add a revision there; ``tests/core/test_state_schema.py``
fails when the two disagree.

Every row that belongs to somebody carries ``principal`` (default ``'local'``: stdio and
single-token HTTP are one local principal). Times are Unix seconds (float); JSON columns
hold what the Python side round-trips through ``json``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)

from atelier_core.identity import LOCAL_PRINCIPAL

__all__ = [
    "LOCAL_PRINCIPAL",
    "idempotency_keys",
    "images",
    "jobs",
    "ledger",
    "library_meta",
    "metadata",
    "session_turns",
    "sessions",
    "spend_reservations",
]


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _json() -> JSON:
    return JSON(none_as_null=True)  # Python None is SQL NULL, not the JSON text 'null'


def _principal() -> Column[str]:
    return Column("principal", Text, nullable=False, server_default=text("'local'"))


jobs = Table(
    "jobs",
    metadata,
    Column("id", Text, primary_key=True),
    _principal(),
    Column("operation", Text, nullable=False),
    Column("origin", Text, nullable=False),  # job | call | handoff | task
    Column("state", Text, nullable=False),  # queued | running | saving | done | failed | cancelled
    Column("message", Text),
    Column("progress", Float),
    Column("request", _json(), nullable=False),
    Column("outcome", _json()),
    Column("error", _json()),
    Column("files", _json()),
    Column("may_be_billed", Boolean, nullable=False, server_default=text("false")),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    # The lease: the owner renews lease_until by heartbeat; past it, any replica may end
    # the job `interrupted` (claimed with FOR UPDATE SKIP LOCKED on PostgreSQL).
    Column("owner", Text, nullable=False),
    Column("owner_host", Text, nullable=False),
    Column("owner_pid", Integer, nullable=False),
    Column("lease_until", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("partial", LargeBinary),
    Column("partial_mime", Text),
    Column("partial_index", Integer),
    Column("vendor_tasks", _json()),  # a queue-based vendor's task id per batch, to resume polling
    Index(None, "state", "lease_until"),
    Index(None, "principal", "created_at"),
    Index(None, "owner", "state"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    _principal(),
    Column("key", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),  # what makes two requests "the same"
    Column("job_id", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # The primary key decides races: of two replicas inserting the same key, one wins.
    PrimaryKeyConstraint("principal", "key"),
    Index(None, "job_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Text, primary_key=True),
    _principal(),
    Column("created_at", Float, nullable=False),
    Column("last_used", Float, nullable=False),
    Column("status", Text, nullable=False),  # open | ended
    Column("ended_reason", Text),
    Column("head", Integer),
    Column("defaults", _json(), nullable=False),
    Index(None, "status", "last_used"),
    Index(None, "principal", "last_used"),
)

session_turns = Table(
    "session_turns",
    metadata,
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("turn", Integer, primary_key=True),
    Column("parent", Integer),
    Column("created_at", Float, nullable=False),
    Column("operation", Text, nullable=False),
    Column("prompt", Text),
    Column("model", Text),
    Column("parameters", _json(), nullable=False),
    Column("image_path", Text, nullable=False),
    Column("resource_uri", Text),
    Column("sha256", Text, nullable=False),
    Column("outcome", _json()),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _principal(),
    Column("at", Float, nullable=False),
    Column("day", Text, nullable=False),  # UTC YYYY-MM-DD: daily limits and usage by day
    Column("run_id", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("images", Integer, nullable=False),
    Column("estimate_usd", Float),
    Column("cost_usd", Float),
    Column("status", Text, nullable=False),  # billed | partial | maybe_billed
    Column("usage", _json()),
    Column("request_id", Text),
    Column("job_id", Text),
    # Covers usage reports (range on day, grouped by provider/model) without the table.
    Index("ix_ledger_usage", "principal", "day", "provider", "model", "images", "cost_usd", "estimate_usd"),
    Index(None, "principal", "run_id"),
)

spend_reservations = Table(
    "spend_reservations",
    metadata,
    Column("id", Text, primary_key=True),
    _principal(),
    Column("day", Text, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("amount_usd", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    # A replica that dies holding a reservation does not block the budget for ever.
    Column("expires_at", Float, nullable=False),
    Index(None, "principal", "day"),
    Index(None, "expires_at"),
)

images = Table(
    "images",
    metadata,
    # Every saved image (a direct call, a job, a session turn); see state/image_records.py.
    # On SQLite the prompt is also indexed by the FTS5 table images_fts (kept in step by
    # triggers, created by migration 0002; not declared here because it is SQLite-only).
    Column("id", Integer, primary_key=True, autoincrement=True),
    _principal(),
    Column("relative", Text, nullable=False, unique=True),  # path inside the output root
    Column("created_at", Float, nullable=False),
    Column("prompt", Text),
    Column("model", Text),
    Column("provider", Text),
    Column("operation", Text),
    Column("applied", _json(), nullable=False),
    Column("seed", Integer),
    Column("cost_usd", Float),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("format", Text, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("session_id", Text),
    Column("turn", Integer),
    Column("job_id", Text),
    Column("edited_from", Text),  # the relative path of the image this one was edited from
    Column("embedded", Boolean, nullable=False, server_default=text("false")),
    Index(None, "principal", "created_at", "id"),
    Index(None, "created_at", "id"),
    Index(None, "sha256"),
    Index(None, "session_id", "turn"),
    Index(None, "job_id"),
    Index(None, "edited_from"),
)

library_meta = Table(
    "library_meta",
    metadata,
    # One-off facts about the image library (e.g. when the sidecars were backfilled).
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
