"""The ``atelier-mcp`` commands that report and maintain, below :mod:`atelier_core.cli`.

The cli parses the command line and dispatches; :mod:`.report` holds ``models``, ``usage`` and
``doctor``, :mod:`.library` holds ``gallery`` and ``prune``.
"""

from __future__ import annotations

from typing import Any

from atelier_core.settings import Settings

__all__ = ["build"]


def build(settings: Settings) -> Any:
    """The engine (a :class:`~atelier_core.engine.pipeline.Pipeline`) for ``settings``, imported on first use."""
    from atelier_core.engine.pipeline import Pipeline

    return Pipeline.build(settings)
