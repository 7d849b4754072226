"""``atelier-mcp gallery`` and ``prune``: the image library."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from atelier_core.commands import build
from atelier_core.settings import Settings

__all__ = ["gallery", "prune"]


def gallery(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.mcp.http import serve_gallery

    asyncio.run(serve_gallery(build(settings), port=args.port, open_browser=not args.no_open))
    return 0


async def prune(settings: Settings, args: argparse.Namespace) -> int:
    from atelier_core.engine.jobs import build_jobs
    from atelier_core.engine.library import open_work_images
    from atelier_core.engine.sessions import SessionManager

    atelier = build(settings)
    try:
        library = atelier.library
        library.max_total_bytes = (
            args.max_total_bytes if args.max_total_bytes is not None else settings.library.max_total_bytes
        )
        library.max_age_days = args.max_age_days if args.max_age_days is not None else settings.library.max_age_days
        if library.max_total_bytes is None and library.max_age_days is None:
            print(
                "atelier-mcp prune: no limit given: pass --max-total-bytes or --max-age-days, or set "
                "library.max_total_bytes / library.max_age_days (ATELIER_LIBRARY__MAX_TOTAL_BYTES, "
                "ATELIER_LIBRARY__MAX_AGE_DAYS)",
                file=sys.stderr,
            )
            return 2
        await library.backfill()
        sessions = SessionManager(atelier)
        jobs = build_jobs(atelier)

        async def protected() -> set[str]:
            return await open_work_images(library, sessions, jobs)

        library.protected = protected
        plan = await library.enforce_retention(dry_run=args.dry_run)
    finally:
        await atelier.aclose()
    verb = "would delete" if args.dry_run else "deleted"
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": args.dry_run,
                    "total_bytes": plan.total_bytes,
                    "freed_bytes": plan.freed_bytes,
                    "kept_in_use": plan.kept_protected,
                    "images": [
                        {
                            "path": e.relative,
                            "bytes": e.bytes,
                            "created": e.created_iso,
                            "reason": plan.reasons[e.relative],
                        }
                        for e in plan.remove
                    ],
                },
                indent=2,
            )
        )
        return 0
    for entry in plan.remove:
        print(f"{verb}: {entry.relative} ({entry.bytes:,} bytes, {entry.created_iso}; {plan.reasons[entry.relative]})")
    print(
        f"{len(plan.remove)} image(s), {plan.freed_bytes:,} of {plan.total_bytes:,} bytes {verb}; "
        f"{plan.kept_protected} kept because an open session or unfinished job needs them"
    )
    return 0
