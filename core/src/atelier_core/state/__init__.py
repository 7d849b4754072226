"""State: the database access layer (jobs, sessions, ledger, idempotency)."""
