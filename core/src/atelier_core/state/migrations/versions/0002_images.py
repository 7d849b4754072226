"""The image library: one row per saved image; on SQLite an FTS5 index over prompts.

PostgreSQL searches prompts with ``to_tsvector('simple', …) @@ to_tsquery(…)`` at query
time (no extra schema object).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FTS = [
    "CREATE VIRTUAL TABLE images_fts USING fts5(prompt, content='images', content_rowid='id')",
    "CREATE TRIGGER images_fts_ai AFTER INSERT ON images BEGIN "
    "INSERT INTO images_fts(rowid, prompt) VALUES (new.id, coalesce(new.prompt, '')); END",
    "CREATE TRIGGER images_fts_ad AFTER DELETE ON images BEGIN "
    "INSERT INTO images_fts(images_fts, rowid, prompt) VALUES ('delete', old.id, coalesce(old.prompt, '')); END",
    "CREATE TRIGGER images_fts_au AFTER UPDATE OF prompt ON images BEGIN "
    "INSERT INTO images_fts(images_fts, rowid, prompt) VALUES ('delete', old.id, coalesce(old.prompt, '')); "
    "INSERT INTO images_fts(rowid, prompt) VALUES (new.id, coalesce(new.prompt, '')); END",
]


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal", sa.Text(), nullable=False, server_default=sa.text("'local'")),
        sa.Column("relative", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("prompt", sa.Text()),
        sa.Column("model", sa.Text()),
        sa.Column("provider", sa.Text()),
        sa.Column("operation", sa.Text()),
        sa.Column("applied", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text()),
        sa.Column("turn", sa.Integer()),
        sa.Column("job_id", sa.Text()),
        sa.Column("edited_from", sa.Text()),
        sa.Column("embedded", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("relative", name="uq_images_relative"),
    )
    op.create_index("ix_images_principal_created_at_id", "images", ["principal", "created_at", "id"])
    op.create_index("ix_images_created_at_id", "images", ["created_at", "id"])
    op.create_index("ix_images_sha256", "images", ["sha256"])
    op.create_index("ix_images_session_id_turn", "images", ["session_id", "turn"])
    op.create_index("ix_images_job_id", "images", ["job_id"])
    op.create_index("ix_images_edited_from", "images", ["edited_from"])
    op.create_table(
        "library_meta",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_library_meta"),
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in _FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS images_fts")
    op.drop_table("library_meta")
    op.drop_table("images")
