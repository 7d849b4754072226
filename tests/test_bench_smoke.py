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

TIMED = ("cold_start", "initialize", "call", "concurrent", "large_call")
MEMORY = ("concurrent_rss", "idle_rss")


def test_quick_benchmark_writes_a_table_and_well_formed_json(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == 1
    assert report["config"]["rounds"] == 1
    metrics = report["metrics"]
    for key in (*TIMED, *MEMORY):
        item = metrics[key]
        for server in ("atelier", "floor"):
            value = item[server]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, server, value)
            assert item["samples"][server], (key, server)
        assert math.isfinite(item["ratio"]) and item["ratio"] > 0, key
        assert isinstance(item["met"], bool) or item["met"] is None, key
    # Every call really produced an image: Atelier's result carries an inline preview and
    # its tools/list lists every tool; the floor answers with a path.
    assert metrics["result_bytes"]["atelier_inline_image_b64"] > 0
    assert metrics["result_bytes"]["floor"] > 0
    assert metrics["tools_list_bytes"]["atelier_tools"] >= 3
    assert metrics["tools_list_bytes"]["floor_tools"] == 1
    assert metrics["large_rss_rise"]["decoded_copy_mb"] > 0
    assert isinstance(metrics["large_rss_rise"]["met"], bool)
    # Start-up imports no vendor SDK, also not for list_available_models (checked with
    # python -X importtime on the real server).
    imports = report["imports"]["atelier"]
    assert imports["modules_imported"] > 100
    assert imports["vendor_sdk_imported"] is False, imports["vendor_sdk_modules"]
    # The table names every metric.
    for item in metrics.values():
        assert item["label"] in done.stdout
