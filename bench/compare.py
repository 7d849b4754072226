"""Two runs of ``bench/run.py`` side by side, as the Markdown table of docs/performance.md.

    .venv/bin/python bench/compare.py bench/results/run-…-before.json bench/results/run-…-after.json

For every figure both runs have: the target, and per run Atelier's value, the floor's,
the ratio (median over rounds of the per-round ratio; per-round range in brackets) and
the median 1-minute load average while it was measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _value(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        return "-"
    unit = item["unit"]
    if unit == "B":
        return f"{value / 1000:.1f} KB"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.3f} s"


def _cell(item: dict[str, Any] | None) -> str:
    if item is None:
        return "-"
    load = item.get("load")
    at = f" (load {load[1]:.1f})" if load else ""
    if item.get("ratio") is None:
        return f"{_value(item, 'atelier')}{at}"
    rounds = item.get("ratio_per_round") or []
    spread = f" [{min(rounds):.2f}-{max(rounds):.2f}]" if len(rounds) > 1 else ""
    return f"**{item['ratio']:.2f}**{spread}: {_value(item, 'atelier')} / {_value(item, 'floor')}{at}"


def table(before: dict[str, Any], after: dict[str, Any]) -> str:
    rows = ["| figure | target | before | after | met |", "|---|---|---|---|---|"]
    keys = list(dict.fromkeys([*after["metrics"], *before["metrics"]]))
    for key in keys:
        b, a = before["metrics"].get(key), after["metrics"].get(key)
        item = a or b
        assert item is not None
        met = "" if a is None or a.get("met") is None else ("yes" if a["met"] else "**no**")
        rows.append(f"| {item['label']} | {item['target']} | {_cell(b)} | {_cell(a)} | {met} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text()) for p in argv)
    print(table(before, after))
    for name, run in (("before", before), ("after", after)):
        machine = run["machine"]
        print(
            f"\n{name}: {run['when']}, commit {run['git']['commit']}, {run['config']['rounds']} rounds, "
            f"{run['duration_s']} s, load {machine['loadavg_before']} -> {machine['loadavg_after']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
