"""The benchmark's smoke test: ``bench/run.py --quick`` runs end to end and writes
well-formed results. No timing is asserted (times on shared CI machines are noise);
``docs/performance.md`` has the figures and how to reproduce them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Atelier vs the floor, as ratios (the quick run's concurrency curve is 1 and 3).
RATIOS = (
    "cold_start",
    "cold_start_cpu",
    "first_call",
    "call",
    "call_none",
    "concurrent_1",
    "concurrent_3",
    "concurrent_3_peak_rss",
    "concurrent_3_rss_after",
    "idle_rss",
    "size_816x816",
    "size_1024x1024",
    "dalle_vs_openai",
)
# Atelier alone (state queries), in ms or bytes.
ABSOLUTE = ("get_usage_0", "get_usage_50", "history_1", "history_3", "history_3_bytes", "get_jobs")


def test_quick_benchmark_writes_a_table_and_well_formed_json(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == 2
    assert report["config"]["rounds"] == 1
    metrics = report["metrics"]
    for key in RATIOS:
        item = metrics[key]
        for server, samples in item["samples"].items():
            assert samples and all(v >= 0 for r in samples for v in r), (key, server)
        assert math.isfinite(item["ratio"]) and item["ratio"] > 0, key
        assert isinstance(item["met"], bool) or item["met"] is None, key
        assert len(item["load"]) == 3 and all(v >= 0 for v in item["load"]), key
    for key in ABSOLUTE:
        item = metrics[key]
        assert math.isfinite(item["atelier"]) and item["atelier"] > 0, key
        assert isinstance(item["met"], bool) or item["met"] is None, key
    # Every call really produced an image: Atelier's result carries an inline preview and
    # its tools/list lists every tool; the floor answers with a path.
    assert metrics["result_bytes"]["atelier_inline_image_b64"] > 0
    assert metrics["result_bytes"]["floor"] > 0
    assert metrics["tools_list_bytes"]["atelier_tools"] >= 3
    assert metrics["tools_list_bytes"]["floor_tools"] == 1
    # Start-up (to tools/list) imports no vendor SDK, in either server (checked with
    # python -X importtime on the real servers).
    for server in ("atelier", "floor"):
        imports = report["imports"][server]
        assert imports["modules_imported"] > 100
        assert imports["vendor_sdk_imported"] is False, imports["vendor_sdk_modules"]
    # The table names every figure.
    for item in metrics.values():
        assert item["label"] in done.stdout
