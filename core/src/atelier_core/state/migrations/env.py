"""Alembic environment: runs on the connection that ``Database.migrate`` passes in.

Atelier migrates its own database at start-up (``atelier_core.state.db``); there is no
``alembic.ini``. To write a new revision, see docs/architecture.md (state).
"""

from __future__ import annotations

from alembic import context

from atelier_core.state.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from the alembic command line
    raise SystemExit("run migrations through atelier_core.state.db.Database.open")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
