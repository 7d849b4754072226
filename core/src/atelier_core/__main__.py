"""``python -m atelier_core`` is ``atelier-mcp``."""

from atelier_core.cli import main

raise SystemExit(main())
