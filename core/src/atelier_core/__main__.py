"""``python -m atelier_core`` is ``atelier-mcp``."""

from .cli import main

raise SystemExit(main())
