"""The engine: registry, validation, the call pipeline, rate limits, cost and spend limits, edit sessions."""
