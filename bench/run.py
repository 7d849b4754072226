"""Atelier vs a bare floor, in one run: cold start, per-call time, concurrency, memory, bytes.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/run.py                # full run, ~3-5 min on 2 busy cores
    .venv/bin/python bench/run.py --rounds 5     # more rounds, steadier medians
    .venv/bin/python bench/run.py --quick        # seconds: tiny images, one round (CI smoke)

Both servers run as real stdio subprocesses driven by the mcp SDK's client: Atelier is
the installed ``atelier-mcp`` (OpenAI provider, every installed plugin loaded), the floor
is ``bench/floor_server.py``. Both talk to ``bench/fake_upstream.py`` (a separate
process) through the openai SDK. Each round measures both servers interleaved (A, F, F,
A, ...), so machine noise lands on both; the ratio reported is the median over rounds
of the per-round ratio of medians. Absolute times on a shared machine are noise; the
ratios are the result.

Writes ``bench/results/latest.json`` (and a timestamped copy unless ``--no-history``)
and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, ImageContent

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
MB = 1024 * 1024


@dataclass
class Config:
    rounds: int = 3
    cold_starts: int = 3  # per server per round
    warmup: int = 2  # calls per server before timing (imports the SDK, fills caches)
    calls: int = 5  # timed sequential calls per server per round
    concurrency: int = 20
    concurrent_delay_ms: int = 2000
    large_calls: int = 2
    size: str = "1024x1024"
    large_size: str = "3840x2160"
    scale: float = 1.0  # fake serves images this much smaller (smoke test)
    model: str = "gpt-image-2"
    max_concurrency: int = 64  # Atelier's openai limiter for the run (default is 4)
    timeout_s: float = 180.0
    atelier_env: dict[str, str] = field(default_factory=dict)  # extra variables (experiments)


@dataclass
class ServerSpec:
    name: str
    params: StdioServerParameters
    marker: str  # a string in the process's command line
    args: Callable[[str, str], dict[str, Any]]  # (prompt, size) -> tools/call arguments


@dataclass
class Samples:
    """Per-round samples of every metric, per server."""

    cold_start_s: list[list[float]] = field(default_factory=list)
    initialize_s: list[list[float]] = field(default_factory=list)
    call_s: list[list[float]] = field(default_factory=list)
    concurrent_wall_s: list[float] = field(default_factory=list)
    concurrent_peak_rss_mb: list[float] = field(default_factory=list)
    large_call_s: list[list[float]] = field(default_factory=list)
    large_rss_rise_mb: list[float] = field(default_factory=list)
    idle_rss_mb: list[float] = field(default_factory=list)
    result_bytes: int = 0
    result_preview_bytes: int = 0
    tools_list_bytes: int = 0
    tools: int = 0


# -- processes -------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def child_pid(marker: str, exclude: set[int]) -> int:
    """The pid of our child process whose command line contains ``marker``."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and marker in cmdline:
            return int(entry.name)
    raise RuntimeError(f"no child process running {marker!r}")


@contextlib.contextmanager
def fake_upstream(cfg: Config) -> Iterator[int]:
    """Start the fake upstream; yield its port."""
    sizes = ",".join(dict.fromkeys([cfg.size, cfg.large_size]))
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "fake_upstream.py"), "--sizes", sizes, "--scale", str(cfg.scale)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the images are built
        if not line.startswith("ready "):
            raise RuntimeError(f"fake upstream failed to start: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_specs(cfg: Config, port: int, work: Path) -> dict[str, ServerSpec]:
    base_url = f"http://127.0.0.1:{port}/v1"
    common = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench-not-a-real-key",
              "PYTHONDONTWRITEBYTECODE": "1"}
    command = shutil.which("atelier-mcp", path=str(Path(sys.executable).parent)) or "atelier-mcp"
    atelier_env = {
        **common,
        "ATELIER_CONFIG": str(work / "no-config.toml"),
        "ATELIER_DATA_DIR": str(work / "atelier-data"),
        # The default (4) would queue 16 of the 20 concurrent calls: the benchmark measures
        # Atelier's overhead, not the limiter. See docs/performance.md.
        "ATELIER_PROVIDERS__OPENAI__MAX_CONCURRENCY": str(cfg.max_concurrency),
        **cfg.atelier_env,
    }
    floor_env = {**common, "FLOOR_OUTPUT_DIR": str(work / "floor-out")}
    (work / "floor-out").mkdir(parents=True, exist_ok=True)
    return {
        "atelier": ServerSpec(
            "atelier", StdioServerParameters(command=command, env=atelier_env, cwd=str(work)), "atelier-mcp",
            lambda prompt, size: {"prompt": prompt, "model": f"openai/{cfg.model}", "size": size},
        ),
        "floor": ServerSpec(
            "floor",
            StdioServerParameters(command=sys.executable, args=[str(BENCH / "floor_server.py")],
                                  env=floor_env, cwd=str(work)),
            "floor_server.py",
            lambda prompt, size: {"prompt": prompt, "size": size, "model": cfg.model},
        ),
    }


@contextlib.asynccontextmanager
async def session(spec: ServerSpec, errlog: TextIO, known: set[int]) -> AsyncIterator[tuple[Client, int]]:
    async with Client(stdio_client(spec.params, errlog=errlog), mode="legacy", cache=None) as client:
        pid = child_pid(spec.marker, known)
        known.add(pid)
        try:
            yield client, pid
        finally:
            known.discard(pid)


async def call(client: Client, spec: ServerSpec, prompt: str, size: str, timeout_s: float) -> CallToolResult:
    async with asyncio.timeout(timeout_s):
        result = await client.call_tool("generate_image", spec.args(prompt, size))
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise RuntimeError(f"{spec.name}: tools/call failed: {text[:500]}")
    return result


def wire_bytes(model: Any) -> int:
    """Bytes of a result as JSON on the wire (camelCase, no nulls)."""
    return len(model.model_dump_json(by_alias=True, exclude_none=True).encode())


def interleaved(i: int, names: list[str]) -> list[str]:
    return names if i % 2 == 0 else names[::-1]


VENDOR_SDKS = ("openai", "google.genai", "anthropic", "replicate", "fal_client")


async def import_check(spec: ServerSpec, work: Path, timeout_s: float) -> dict[str, Any]:
    """Start the server with ``-X importtime`` (PYTHONPROFILEIMPORTTIME), answer
    initialize, tools/list and list_available_models; report which vendor SDKs got
    imported (none should be) and the slowest top-level imports."""
    log_path = work / f"importtime-{spec.name}.log"
    params = spec.params.model_copy(update={"env": {**(spec.params.env or {}), "PYTHONPROFILEIMPORTTIME": "1"}})
    with open(log_path, "w") as errlog:
        async with asyncio.timeout(timeout_s):
            async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:
                tools = await client.list_tools()
                if any(tool.name == "list_available_models" for tool in tools.tools):
                    await client.call_tool("list_available_models", {})
    modules: dict[str, int] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        head, _cumulative, name = (part.strip() for part in line.split("|"))
        self_us = head.split(":", 1)[1].strip()
        if self_us.isdigit():
            modules[name] = int(self_us)
    vendor = sorted({m for m in modules for sdk in VENDOR_SDKS if m == sdk or m.startswith(sdk + ".")})
    by_package: dict[str, int] = {}
    for name, self_us in modules.items():
        top = name.split(".")[0]
        by_package[top] = by_package.get(top, 0) + self_us
    slowest = sorted(by_package.items(), key=lambda kv: -kv[1])[:12]
    return {
        "modules_imported": len(modules),
        "vendor_sdk_modules": vendor,
        "vendor_sdk_imported": bool(vendor),
        "import_self_ms_by_package": {k: round(v / 1000, 1) for k, v in slowest},
    }


# -- one round -------------------------------------------------------------------------


async def one_round(cfg: Config, specs: dict[str, ServerSpec], samples: dict[str, Samples],
                    errlog: TextIO, index: int, log: Callable[[str], None]) -> None:
    names = list(specs)
    known: set[int] = set()
    cold = {name: [] for name in names}  # type: dict[str, list[float]]
    init = {name: [] for name in names}  # type: dict[str, list[float]]
    for i in range(cfg.cold_starts):
        for name in interleaved(i + index, names):
            spec = specs[name]
            async with asyncio.timeout(cfg.timeout_s):
                start = time.perf_counter()
                async with Client(stdio_client(spec.params, errlog=errlog), mode="legacy", cache=None) as client:
                    initialized = time.perf_counter()
                    listed = await client.list_tools()
                    done = time.perf_counter()
            cold[name].append(done - start)
            init[name].append(initialized - start)
            if index == 0 and i == 0:
                samples[name].tools_list_bytes = wire_bytes(listed)
                samples[name].tools = len(listed.tools)
    for name in names:
        samples[name].cold_start_s.append(cold[name])
        samples[name].initialize_s.append(init[name])
    log(f"  cold start: " + ", ".join(f"{n} {statistics.median(cold[n]):.3f}s" for n in names))

    async with contextlib.AsyncExitStack() as stack:
        sessions: dict[str, tuple[Client, int]] = {}
        for name in names:
            sessions[name] = await stack.enter_async_context(session(specs[name], errlog, known))
        for name in names:
            samples[name].idle_rss_mb.append(rss_mb(sessions[name][1]))
        for w in range(cfg.warmup):
            for name in names:
                await call(sessions[name][0], specs[name], f"warm-up {w}", cfg.size, cfg.timeout_s)

        # Per-call time, upstream at 0 ms.
        times = {name: [] for name in names}  # type: dict[str, list[float]]
        for i in range(cfg.calls):
            for name in interleaved(i, names):
                client, _ = sessions[name]
                start = time.perf_counter()
                result = await call(client, specs[name], f"a lighthouse {index}-{i}", cfg.size, cfg.timeout_s)
                times[name].append(time.perf_counter() - start)
                if index == 0 and i == 0:
                    samples[name].result_bytes = wire_bytes(result)
                    samples[name].result_preview_bytes = sum(
                        len(block.data) for block in result.content if isinstance(block, ImageContent))
        for name in names:
            samples[name].call_s.append(times[name])
        log(f"  per call {cfg.size}: " + ", ".join(f"{n} {statistics.median(times[n]):.3f}s" for n in names))

        # Concurrency at a slow upstream, and the peak RSS it costs.
        for name in interleaved(index, names):
            client, pid = sessions[name]
            reset_peak(pid)
            prompt = f"a harbour delay_ms={cfg.concurrent_delay_ms}"
            start = time.perf_counter()
            await asyncio.gather(*(call(client, specs[name], f"{prompt} #{k}", cfg.size, cfg.timeout_s)
                                   for k in range(cfg.concurrency)))
            samples[name].concurrent_wall_s.append(time.perf_counter() - start)
            samples[name].concurrent_peak_rss_mb.append(peak_rss_mb(pid))
        log(f"  {cfg.concurrency} concurrent at {cfg.concurrent_delay_ms} ms: " + ", ".join(
            f"{n} {samples[n].concurrent_wall_s[-1]:.3f}s peak {samples[n].concurrent_peak_rss_mb[-1]:.0f} MB"
            for n in names))

        # The large image: per-call time and how far RSS rises above where it was.
        large = {name: [] for name in names}  # type: dict[str, list[float]]
        base: dict[str, float] = {}
        for name in names:
            pid = sessions[name][1]
            reset_peak(pid)
            base[name] = rss_mb(pid)
        for i in range(cfg.large_calls):
            for name in interleaved(i + index, names):
                client, _ = sessions[name]
                start = time.perf_counter()
                await call(client, specs[name], f"a city at night {index}-{i}", cfg.large_size, cfg.timeout_s)
                large[name].append(time.perf_counter() - start)
        for name in names:
            samples[name].large_call_s.append(large[name])
            samples[name].large_rss_rise_mb.append(peak_rss_mb(sessions[name][1]) - base[name])
        log(f"  per call {cfg.large_size}: " + ", ".join(
            f"{n} {statistics.median(large[n]):.3f}s rise {samples[n].large_rss_rise_mb[-1]:.0f} MB"
            for n in names))


# -- summary ---------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _flat(rounds: list[list[float]]) -> list[float]:
    return [v for r in rounds for v in r]


def summarize(cfg: Config, samples: dict[str, Samples]) -> dict[str, Any]:
    a, f = samples["atelier"], samples["floor"]

    def ratio_rows(atelier_rounds: list[Any], floor_rounds: list[Any]) -> tuple[float, list[float]]:
        per_round = []
        for x, y in zip(atelier_rounds, floor_rounds):
            mx = _median(x) if isinstance(x, list) else x
            my = _median(y) if isinstance(y, list) else y
            per_round.append(mx / my if my else float("nan"))
        return _median(per_round), per_round

    def timed(key: str, target: float, label: str, unit: str = "s") -> dict[str, Any]:
        xs, ys = getattr(a, key), getattr(f, key)
        ratio, per_round = ratio_rows(xs, ys)
        flat_x = _flat(xs) if xs and isinstance(xs[0], list) else xs
        flat_y = _flat(ys) if ys and isinstance(ys[0], list) else ys
        return {
            "label": label, "unit": unit,
            "atelier": round(_median(flat_x), 4), "floor": round(_median(flat_y), 4),
            "ratio": round(ratio, 3), "ratio_per_round": [round(r, 3) for r in per_round],
            "target": f"<= {target:.2f}x", "met": ratio <= target,
            "samples": {"atelier": xs, "floor": ys},
        }

    width, height = (int(v) for v in cfg.large_size.split("x"))
    served = (max(16, round(width * cfg.scale)), max(16, round(height * cfg.scale)))
    decoded_mb = served[0] * served[1] * 3 / MB  # one decoded RGB copy
    rise_a, rise_f = _median(a.large_rss_rise_mb), _median(f.large_rss_rise_mb)
    excess_copies = (rise_a - rise_f) / decoded_mb
    metrics = {
        "cold_start": timed("cold_start_s", 1.10, "cold start to tools/list (stdio)"),
        "initialize": {**timed("initialize_s", float("inf"), "spawn to initialize answered"), "target": "info",
                       "met": None},
        "call": timed("call_s", 1.30, f"per call, {cfg.size}, upstream 0 ms"),
        "concurrent": timed("concurrent_wall_s", 1.10,
                            f"{cfg.concurrency} concurrent calls, upstream {cfg.concurrent_delay_ms} ms (wall)"),
        "concurrent_rss": timed("concurrent_peak_rss_mb", 1.30, "peak RSS during the concurrent calls", "MB"),
        "idle_rss": {**timed("idle_rss_mb", float("inf"), "RSS after start-up", "MB"), "target": "info",
                     "met": None},
        "large_call": timed("large_call_s", 1.50, f"per call, {cfg.large_size}"),
        "large_rss_rise": {
            "label": f"peak RSS rise for {cfg.large_size}", "unit": "MB",
            "atelier": round(rise_a, 1), "floor": round(rise_f, 1),
            "ratio": round(rise_a / rise_f, 3) if rise_f else None,
            "decoded_copy_mb": round(decoded_mb, 1),
            "excess_over_floor_in_decoded_copies": round(excess_copies, 2),
            "target": "Atelier's extra rise over the floor <= ~4 decoded copies",
            "met": excess_copies <= 4.0,
            "samples": {"atelier": a.large_rss_rise_mb, "floor": f.large_rss_rise_mb},
        },
        "result_bytes": {
            "label": "one tools/call result (JSON)", "unit": "B",
            "atelier": a.result_bytes, "floor": f.result_bytes, "ratio": None,
            "atelier_inline_image_b64": a.result_preview_bytes,
            "target": "<= 150 KB incl. preview", "met": 0 < a.result_preview_bytes and a.result_bytes <= 150_000,
        },
        "tools_list_bytes": {
            "label": "tools/list (JSON)", "unit": "B",
            "atelier": a.tools_list_bytes, "floor": f.tools_list_bytes, "ratio": None,
            "atelier_tools": a.tools, "floor_tools": f.tools,
            "target": "<= 10 KB", "met": a.tools_list_bytes <= 10_000,
        },
    }
    return metrics


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def table(metrics: dict[str, Any]) -> str:
    def fmt(value: Any, unit: str) -> str:
        if value is None:
            return "-"
        if unit == "B":
            return f"{value / 1000:.1f} KB"
        if unit == "MB":
            return f"{value:.0f} MB"
        return f"{value:.3f} s"

    rows = [("metric", "atelier", "floor", "ratio", "target", "met")]
    for item in metrics.values():
        unit = item["unit"]
        ratio = item.get("ratio")
        met = item["met"]
        rows.append((
            item["label"], fmt(item["atelier"], unit), fmt(item["floor"], unit),
            "-" if ratio is None else f"{ratio:.2f}",
            item["target"] + (f" (excess {item['excess_over_floor_in_decoded_copies']:.1f} copies)"
                              if "excess_over_floor_in_decoded_copies" in item else ""),
            "" if met is None else ("yes" if met else "NO"),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def run(cfg: Config, log: Callable[[str], None]) -> dict[str, Any]:
    samples = {"atelier": Samples(), "floor": Samples()}
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp, fake_upstream(cfg) as port:
        work = Path(tmp)
        specs = server_specs(cfg, port, work)
        imports = {name: await import_check(spec, work, cfg.timeout_s) for name, spec in specs.items()}
        log("  vendor SDK imported at start-up or by list_available_models: "
            + ", ".join(f"{n} {'YES ' + str(i['vendor_sdk_modules'][:3]) if i['vendor_sdk_imported'] else 'no'}"
                        for n, i in imports.items()))
        with open(work / "servers.log", "w") as errlog:
            for index in range(cfg.rounds):
                log(f"round {index + 1}/{cfg.rounds}")
                await one_round(cfg, specs, samples, errlog, index, log)
    return {
        "schema": 1,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "git": {"commit": _git("rev-parse", "--short", "HEAD"),
                "dirty": bool(_git("status", "--porcelain", "--", "core", "providers", "bench"))},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},
        "config": asdict(cfg),
        "metrics": summarize(cfg, samples),
        "imports": imports,
    }


def parse_args(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description="Atelier vs a bare MCP floor server")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny images, one short round")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--cold-starts", type=int)
    parser.add_argument("--calls", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--no-history", action="store_true", help="do not keep a timestamped copy")
    parser.add_argument("--label", default="", help="stored in the JSON (e.g. 'before', 'after')")
    parser.add_argument("--atelier-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment variable for the Atelier server (repeatable)")
    parser.add_argument("--concurrency", type=int)
    args = parser.parse_args(argv)
    cfg = Config()
    if args.quick:
        cfg = Config(rounds=1, cold_starts=1, warmup=1, calls=1, concurrency=3, concurrent_delay_ms=50,
                     large_calls=1, scale=0.125, timeout_s=60.0)
    cfg.atelier_env = dict(item.split("=", 1) for item in args.atelier_env)
    for key in ("rounds", "cold_starts", "calls", "concurrency"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = asyncio.run(run(cfg, log))
    report["label"] = args.label
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    args.out.write_text(text + "\n")
    if not args.no_history and not args.quick:
        stamp = report["when"].replace(":", "").replace("-", "")
        (args.out.parent / f"run-{stamp}{'-' + args.label if args.label else ''}.json").write_text(text + "\n")
    print(table(report["metrics"]))
    print(f"\n{report['duration_s']} s; load average {report['machine']['loadavg_before']} -> "
          f"{report['machine']['loadavg_after']}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
