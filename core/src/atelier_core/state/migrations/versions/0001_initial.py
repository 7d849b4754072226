"""The first schema: jobs, idempotency keys, sessions and turns, ledger, spend reservations.

A SQLite file written by the hand-written store that came before (it has a
``schema_migrations`` table) is adopted: its rows are copied into the new tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEGACY = ("session_turns", "sessions", "jobs", "ledger")


def _principal() -> sa.Column[str]:
    return sa.Column("principal", sa.Text(), nullable=False, server_default=sa.text("'local'"))


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    legacy = inspector.has_table("schema_migrations")
    legacy_tables = [t for t in _LEGACY if legacy and inspector.has_table(t)]
    legacy_job_columns = {c["name"] for c in inspector.get_columns("jobs")} if "jobs" in legacy_tables else set()
    for name in legacy_tables:
        op.rename_table(name, f"legacy_{name}")

    op.create_table(
        "jobs",
        sa.Column("id", sa.Text(), nullable=False),
        _principal(),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("progress", sa.Float()),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.JSON()),
        sa.Column("error", sa.JSON()),
        sa.Column("files", sa.JSON()),
        sa.Column("may_be_billed", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("owner_host", sa.Text(), nullable=False),
        sa.Column("owner_pid", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
        sa.Column("partial", sa.LargeBinary()),
        sa.Column("partial_mime", sa.Text()),
        sa.Column("partial_index", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state_lease_until", "jobs", ["state", "lease_until"])
    op.create_index("ix_jobs_principal_created_at", "jobs", ["principal", "created_at"])
    op.create_index("ix_jobs_owner_state", "jobs", ["owner", "state"])

    op.create_table(
        "idempotency_keys",
        _principal(),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_job_id", "idempotency_keys", ["job_id"])

    op.create_table(
        "sessions",
        sa.Column("id", sa.Text(), nullable=False),
        _principal(),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used", sa.Float(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("ended_reason", sa.Text()),
        sa.Column("head", sa.Integer()),
        sa.Column("defaults", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_status_last_used", "sessions", ["status", "last_used"])
    op.create_index("ix_sessions_principal_last_used", "sessions", ["principal", "last_used"])

    op.create_table(
        "session_turns",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("parent", sa.Integer()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text()),
        sa.Column("model", sa.Text()),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("image_path", sa.Text(), nullable=False),
        sa.Column("resource_uri", sa.Text()),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("outcome", sa.JSON()),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], ondelete="CASCADE", name="fk_session_turns_session_id_sessions"
        ),
        sa.PrimaryKeyConstraint("session_id", "turn", name="pk_session_turns"),
    )

    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _principal(),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("estimate_usd", sa.Float()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("usage", sa.JSON()),
        sa.Column("request_id", sa.Text()),
        sa.Column("job_id", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
    )
    op.create_index(
        "ix_ledger_usage",
        "ledger",
        ["principal", "day", "provider", "model", "images", "cost_usd", "estimate_usd"],
    )
    op.create_index("ix_ledger_principal_run_id", "ledger", ["principal", "run_id"])

    op.create_table(
        "spend_reservations",
        sa.Column("id", sa.Text(), nullable=False),
        _principal(),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("amount_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_spend_reservations"),
    )
    op.create_index("ix_spend_reservations_principal_day", "spend_reservations", ["principal", "day"])
    op.create_index("ix_spend_reservations_expires_at", "spend_reservations", ["expires_at"])

    if legacy:
        _adopt(legacy_tables, legacy_job_columns)


def _adopt(tables: list[str], job_columns: set[str]) -> None:
    """Copy the rows of the hand-written store's tables, then drop them."""
    same = {
        "sessions": "id, created_at, last_used, status, ended_reason, head, defaults",
        "session_turns": "session_id, turn, parent, created_at, operation, prompt, model, "
        "parameters, image_path, resource_uri, sha256, outcome",
        "ledger": "id, at, day, run_id, provider, model, operation, images, estimate_usd, "
        "cost_usd, status, usage, request_id, job_id",
        "jobs": "id, operation, origin, state, message, progress, request, outcome, error, files, "
        "may_be_billed, cancel_requested, owner, owner_host, owner_pid, lease_until, created_at, "
        "updated_at, started_at, finished_at, partial, partial_mime, partial_index",
    }
    for name in ("sessions", "session_turns", "jobs", "ledger"):
        if name in tables:
            columns = same[name]
            op.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM legacy_{name}")
    if "jobs" in tables and "idempotency_key" in job_columns:
        op.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, job_id, created_at) "
            "SELECT idempotency_key, COALESCE(fingerprint, ''), id, created_at FROM legacy_jobs "
            "WHERE idempotency_key IS NOT NULL"
        )
    for name in tables:
        op.drop_table(f"legacy_{name}")
    op.drop_table("schema_migrations")


def downgrade() -> None:
    for name in ("spend_reservations", "ledger", "session_turns", "sessions", "idempotency_keys", "jobs"):
        op.drop_table(name)
