"""Atelier vs a bare floor, in one run: every figure of the speed table as a ratio.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python bench/run.py                # full run, ~6-8 min on 2 busy cores
    .venv/bin/python bench/run.py --rounds 5     # more rounds, steadier medians
    .venv/bin/python bench/run.py --quick        # seconds: tiny images, one short round (CI smoke)

Both servers run as real stdio subprocesses driven by the mcp SDK's client: Atelier is
the installed ``atelier-mcp`` (default settings, every installed plugin loaded), the
floor is ``bench/floor_server.py`` (the mcp SDK and httpx2, no vendor SDK). Both talk to
``bench/fake_upstream.py`` (a separate process). Each round measures both servers
interleaved (A, F, F, A, ...), so machine noise lands on both; a ratio is the median over
rounds of the per-round ratio of medians. Every sample records the machine's 1-minute
load average. Atelier-only figures (state queries, the dalle-shape provider) are
repeated in every round too. Absolute times on a shared machine are noise; the ratios are
the result.

Writes ``bench/results/latest.json`` (and a timestamped copy unless ``--no-history``)
and prints the table.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, ImageContent

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
MB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Config:
    rounds: int = 3
    cold_starts: int = 3  # per server per round
    first_call_pause_s: float = 1.0  # idle time between tools/list and the first call (a client thinking)
    warmup: int = 2  # calls per server before timing
    calls: int = 5  # timed sequential calls per server per round (the main size)
    size: str = "1024x1024"
    # The scaling curve: gpt-image-2's smallest size (655,360 px minimum) to its largest
    # (8,294,400 px maximum; 4096² is above what the model can return, and Atelier refuses
    # an answer larger than the requested size can be).
    sizes: tuple[str, ...] = ("816x816", "1024x1024", "2048x2048", "2880x2880")
    size_calls: int = 2  # per size of the curve per server per round
    concurrency: tuple[int, ...] = (1, 20, 100)
    concurrent_delay_ms: int = 2000
    settle_s: float = 5.0  # RSS is read this long after the largest burst
    ledger_rows: tuple[int, ...] = (0, 1000, 10000)
    session_turns: tuple[int, ...] = (1, 10, 30)
    jobs: int = 20
    repeat: int = 5  # repetitions of each state query per round
    scale: float = 1.0  # fake serves images this much smaller (smoke test)
    model: str = "gpt-image-2"
    dalle_model: str = "dall-e-2"
    timeout_s: float = 300.0
    python: str = ""  # the servers' interpreter (set by runtime_python)
    atelier_env: dict[str, str] = field(default_factory=dict)  # extra variables (experiments)


@dataclass
class ServerSpec:
    name: str
    params: StdioServerParameters
    marker: str  # a string in the process's command line
    args: Callable[..., dict[str, Any]]  # (prompt, size, **extra) -> tools/call arguments


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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def load() -> float:
    return round(os.getloadavg()[0], 2)


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
    sizes = ",".join(dict.fromkeys([cfg.size, *cfg.sizes]))
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "fake_upstream.py"), "--sizes", sizes, "--scale", str(cfg.scale)],
        stdout=subprocess.PIPE,
        text=True,
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


RUNTIME_VENV = BENCH / ".cache" / "venv"


def runtime_python(dev: bool) -> Path:
    """The interpreter both servers run on: by default a runtime-only environment of this
    checkout (``uv sync --no-dev``, what a user installs), so development tools do not
    weigh on the start (e.g. ``rich``, pulled in by dev tools, makes ``import structlog``
    ~0.3 s slower); ``dev``: this interpreter."""
    if dev:
        return Path(sys.executable)
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(RUNTIME_VENV)}
    uv = (
        [os.environ["UV"]]
        if os.environ.get("UV")
        else ([found] if (found := shutil.which("uv")) else ["python3", "-m", "uv"])
    )
    subprocess.run(
        [*uv, "sync", "--frozen", "--no-dev", "--all-packages", "--compile-bytecode", "-q"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )
    return RUNTIME_VENV / "bin" / "python"


def server_specs(cfg: Config, port: int, work: Path, data_dir: str = "atelier-data") -> dict[str, ServerSpec]:
    base_url = f"http://127.0.0.1:{port}/v1"
    # Bytecode is cached as for any installed program (the runtime environment is synced
    # with --compile-bytecode; our own modules' caches go to their __pycache__ folders).
    common = {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench-not-a-real-key"}
    python = Path(cfg.python or sys.executable)
    command = str(python.parent / "atelier-mcp")
    atelier_env = {
        **common,
        "ATELIER_CONFIG": str(work / "no-config.toml"),
        "ATELIER_DATA_DIR": str(work / data_dir),
        **cfg.atelier_env,
    }
    floor_env = {**common, "FLOOR_OUTPUT_DIR": str(work / "floor-out")}
    (work / "floor-out").mkdir(parents=True, exist_ok=True)

    def atelier_args(prompt: str, size: str, **extra: Any) -> dict[str, Any]:
        return {"prompt": prompt, "model": f"openai/{cfg.model}", "size": size, **extra}

    def floor_args(prompt: str, size: str, **_: Any) -> dict[str, Any]:
        return {"prompt": prompt, "size": size, "model": cfg.model}

    return {
        "atelier": ServerSpec(
            "atelier",
            StdioServerParameters(command=command, env=atelier_env, cwd=str(work)),
            "atelier-mcp",
            atelier_args,
        ),
        "floor": ServerSpec(
            "floor",
            StdioServerParameters(
                command=str(python), args=[str(BENCH / "floor_server.py")], env=floor_env, cwd=str(work)
            ),
            "floor_server.py",
            floor_args,
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


async def tool(client: Client, name: str, args: dict[str, Any], timeout_s: float, who: str = "") -> CallToolResult:
    async with asyncio.timeout(timeout_s):
        result = await client.call_tool(name, args)
    if result.is_error:
        text = " ".join(getattr(block, "text", "") for block in result.content)
        raise RuntimeError(f"{who}: {name} failed: {text[:500]}")
    return result


async def call(
    client: Client, spec: ServerSpec, prompt: str, size: str, timeout_s: float, **extra: Any
) -> CallToolResult:
    return await tool(client, "generate_image", spec.args(prompt, size, **extra), timeout_s, spec.name)


def wire_bytes(model: Any) -> int:
    """Bytes of a result as JSON on the wire (camelCase, no nulls)."""
    return len(model.model_dump_json(by_alias=True, exclude_none=True).encode())


def interleaved(i: int, names: list[str]) -> list[str]:
    return names if i % 2 == 0 else names[::-1]


VENDOR_SDKS = ("openai", "google.genai", "anthropic", "replicate", "fal_client")


def _imports(text: str) -> dict[str, int]:
    modules: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        head, _cumulative, name = (part.strip() for part in line.split("|"))
        self_us = head.split(":", 1)[1].strip()
        if self_us.isdigit():
            modules[name] = int(self_us)
    return modules


def _vendor(modules: dict[str, int]) -> list[str]:
    return sorted({m for m in modules for sdk in VENDOR_SDKS if m == sdk or m.startswith(sdk + ".")})


async def import_check(spec: ServerSpec, work: Path, timeout_s: float) -> dict[str, Any]:
    """Start the server with ``-X importtime`` (PYTHONPROFILEIMPORTTIME), answer
    initialize and tools/list; report which vendor SDKs were imported by the time
    tools/list was answered (none should be: the log is read the moment the answer
    arrives), which ones a second later (the background warm-up may import them then),
    and the slowest top-level imports of the start."""
    log_path = work / f"importtime-{spec.name}.log"
    params = spec.params.model_copy(update={"env": {**(spec.params.env or {}), "PYTHONPROFILEIMPORTTIME": "1"}})
    with open(log_path, "w") as errlog:
        async with asyncio.timeout(timeout_s):
            async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:
                await client.list_tools()
                at_list = log_path.read_text(errors="replace")
                await asyncio.sleep(1.0)
    modules = _imports(at_list)
    later = _imports(log_path.read_text(errors="replace"))
    vendor = _vendor(modules)
    by_package: dict[str, int] = {}
    for name, self_us in modules.items():
        top = name.split(".")[0]
        by_package[top] = by_package.get(top, 0) + self_us
    slowest = sorted(by_package.items(), key=lambda kv: -kv[1])[:12]
    return {
        "modules_imported": len(modules),
        "vendor_sdk_modules": vendor[:20],
        "vendor_sdk_imported": bool(vendor),
        "vendor_sdk_imported_1s_later": sorted({m.split(".")[0] for m in _vendor(later)}),
        "import_self_ms_by_package": {k: round(v / 1000, 1) for k, v in slowest},
    }


# -- samples ---------------------------------------------------------------------------


class Samples:
    """``name -> server -> per-round lists of (value, load)``."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, list[list[tuple[float, float]]]]] = {}

    def add(self, name: str, server: str, round_index: int, value: float) -> None:
        rounds = self.data.setdefault(name, {}).setdefault(server, [])
        while len(rounds) <= round_index:
            rounds.append([])
        rounds[round_index].append((value, load()))

    def values(self, name: str, server: str) -> list[list[float]]:
        return [[v for v, _ in r] for r in self.data.get(name, {}).get(server, [])]

    def loads(self, name: str) -> list[float]:
        return [ld for rounds in self.data.get(name, {}).values() for r in rounds for _, ld in r]


# -- one round -------------------------------------------------------------------------


async def cold_starts(
    cfg: Config,
    specs: dict[str, ServerSpec],
    s: Samples,
    errlog: TextIO,
    index: int,
    known: set[int],
    extra: dict[str, Any],
) -> None:
    """Spawn → initialize → tools/list (wall and the server's CPU), then the first call
    after a short pause (a client thinking), in the same process."""
    names = list(specs)
    for i in range(cfg.cold_starts):
        for name in interleaved(i + index, names):
            spec = specs[name]
            async with asyncio.timeout(cfg.timeout_s):
                start = time.perf_counter()
                async with Client(stdio_client(spec.params, errlog=errlog), mode="legacy", cache=None) as client:
                    initialized = time.perf_counter()
                    listed = await client.list_tools()
                    done = time.perf_counter()
                    pid = child_pid(spec.marker, known)
                    cpu = cpu_s(pid)
                    s.add("cold_start", name, index, done - start)
                    s.add("cold_start_cpu", name, index, cpu)
                    s.add("initialize", name, index, initialized - start)
                    if index == 0 and i == 0:
                        extra.setdefault("tools_list_bytes", {})[name] = wire_bytes(listed)
                        extra.setdefault("tools", {})[name] = len(listed.tools)
                    await asyncio.sleep(cfg.first_call_pause_s)
                    start = time.perf_counter()
                    await call(client, spec, f"first {index}-{i}", cfg.size, cfg.timeout_s)
                    s.add("first_call", name, index, time.perf_counter() - start)


async def timed_calls(
    client: Client,
    spec: ServerSpec,
    pid: int,
    s: Samples,
    key: str,
    index: int,
    size: str,
    count: int,
    timeout_s: float,
    **extra: Any,
) -> CallToolResult | None:
    """``count`` sequential calls for a ``size`` image: wall per call, and the server's CPU
    per call."""
    result = None
    cpu0 = cpu_s(pid)
    for i in range(count):
        start = time.perf_counter()
        result = await call(client, spec, f"a lighthouse {key} {index}-{i}", size, timeout_s, **extra)
        s.add(key, spec.name, index, time.perf_counter() - start)
    s.add(key + "_cpu", spec.name, index, (cpu_s(pid) - cpu0) / max(1, count))
    return result


async def burst(client: Client, spec: ServerSpec, pid: int, n: int, cfg: Config) -> tuple[float, float]:
    """``n`` calls at once at a slow upstream: wall time and peak RSS."""
    reset_peak(pid)
    prompt = f"a harbour delay_ms={cfg.concurrent_delay_ms}"
    start = time.perf_counter()
    await asyncio.gather(*(call(client, spec, f"{prompt} #{k}", cfg.size, cfg.timeout_s) for k in range(n)))
    return time.perf_counter() - start, peak_rss_mb(pid)


async def one_round(
    cfg: Config,
    specs: dict[str, ServerSpec],
    s: Samples,
    errlog: TextIO,
    index: int,
    log: Callable[[str], None],
    extra: dict[str, Any],
) -> None:
    names = list(specs)
    known: set[int] = set()
    await cold_starts(cfg, specs, s, errlog, index, known, extra)
    log(
        "  cold start: "
        + ", ".join(f"{n} {statistics.median(s.values('cold_start', n)[index]):.3f}s" for n in names)
        + "; first call: "
        + ", ".join(f"{n} {statistics.median(s.values('first_call', n)[index]):.3f}s" for n in names)
    )

    async with contextlib.AsyncExitStack() as stack:
        sessions: dict[str, tuple[Client, int]] = {}
        for name in names:
            sessions[name] = await stack.enter_async_context(session(specs[name], errlog, known))
        for name in names:
            s.add("idle_rss", name, index, rss_mb(sessions[name][1]))
        for w in range(cfg.warmup):
            for name in names:
                await call(sessions[name][0], specs[name], f"warm-up {w}", cfg.size, cfg.timeout_s)
        a_client = sessions["atelier"][0]
        await tool(
            a_client,
            "generate_image",
            {"prompt": "warm-up dalle", "model": f"dalle/{cfg.dalle_model}", "size": cfg.size},
            cfg.timeout_s,
            "atelier",
        )

        # Per call at the main size: with the preview, and without any inline image.
        for i in range(2):
            for name in interleaved(i + index, names):
                client, pid = sessions[name]
                if i == 0:
                    result = await timed_calls(
                        client, specs[name], pid, s, "call", index, cfg.size, cfg.calls, cfg.timeout_s
                    )
                    if index == 0 and result is not None:
                        extra.setdefault("result_bytes", {})[name] = wire_bytes(result)
                        extra.setdefault("result_inline_b64", {})[name] = sum(
                            len(b.data) for b in result.content if isinstance(b, ImageContent)
                        )
                else:
                    more = {"return_image": "none"} if name == "atelier" else {}
                    await timed_calls(
                        client, specs[name], pid, s, "call_none", index, cfg.size, cfg.calls, cfg.timeout_s, **more
                    )
        log(
            f"  per call {cfg.size}: "
            + ", ".join(
                f"{n} {statistics.median(s.values('call', n)[index]):.3f}s"
                f" (none {statistics.median(s.values('call_none', n)[index]):.3f}s)"
                for n in names
            )
        )

        # The dalle-shape provider against the openai provider, same server, same answer.
        for i in range(cfg.calls):
            for model in ["openai", "dalle"] if i % 2 == 0 else ["dalle", "openai"]:
                args = {
                    "prompt": f"a fox {index}-{i}",
                    "size": cfg.size,
                    "model": f"openai/{cfg.model}" if model == "openai" else f"dalle/{cfg.dalle_model}",
                }
                start = time.perf_counter()
                await tool(a_client, "generate_image", args, cfg.timeout_s, "atelier")
                s.add("provider_call", model, index, time.perf_counter() - start)
        log(
            "  provider per call: "
            + ", ".join(
                f"{m} {statistics.median(s.values('provider_call', m)[index]):.3f}s" for m in ("openai", "dalle")
            )
        )

        # Image size curve.
        for size in cfg.sizes:
            for name in interleaved(index, names):
                client, pid = sessions[name]
                await timed_calls(
                    client, specs[name], pid, s, f"size_{size}", index, size, cfg.size_calls, cfg.timeout_s
                )
        log(
            "  sizes: "
            + "; ".join(
                f"{size} " + "/".join(f"{statistics.median(s.values(f'size_{size}', n)[index]):.3f}" for n in names)
                for size in cfg.sizes
            )
        )

        # Concurrency curve at a slow upstream; peak RSS; RSS a while after the largest burst.
        for n in cfg.concurrency:
            for name in interleaved(index, names):
                client, pid = sessions[name]
                wall, peak = await burst(client, specs[name], pid, n, cfg)
                s.add(f"concurrent_{n}", name, index, wall)
                s.add(f"concurrent_{n}_peak_rss", name, index, peak)
            if n == max(cfg.concurrency):
                await asyncio.sleep(cfg.settle_s)
                for name in names:
                    s.add(f"concurrent_{n}_rss_after", name, index, rss_mb(sessions[name][1]))
            log(
                f"  {n} at once: "
                + ", ".join(
                    f"{m} {s.values(f'concurrent_{n}', m)[index][-1]:.3f}s peak "
                    f"{s.values(f'concurrent_{n}_peak_rss', m)[index][-1]:.0f} MB"
                    for m in names
                )
            )
        top = max(cfg.concurrency)
        log(
            f"  RSS {cfg.settle_s:g} s after {top}: "
            + ", ".join(f"{m} {s.values(f'concurrent_{top}_rss_after', m)[index][-1]:.0f} MB" for m in names)
        )

        # Jobs: get_jobs for finished jobs.
        tickets = await asyncio.gather(
            *(
                tool(
                    a_client,
                    "generate_image",
                    {"prompt": f"job {index}-{k}", "model": f"openai/{cfg.model}", "size": cfg.size, "as_job": True},
                    cfg.timeout_s,
                    "atelier",
                )
                for k in range(cfg.jobs)
            )
        )
        job_ids = [t.structured_content["job"]["job_id"] for t in tickets if t.structured_content]  # type: ignore[index]
        await tool(a_client, "get_jobs", {"job_ids": job_ids, "wait_s": 45}, cfg.timeout_s, "atelier")
        for _ in range(cfg.repeat):
            start = time.perf_counter()
            listed = await tool(a_client, "get_jobs", {"job_ids": job_ids}, cfg.timeout_s, "atelier")
            s.add("get_jobs", "atelier", index, time.perf_counter() - start)
        extra["get_jobs_bytes"] = wire_bytes(listed)
        log(f"  get_jobs for {len(job_ids)}: {statistics.median(s.values('get_jobs', 'atelier')[index]) * 1000:.1f} ms")

        # Sessions: history at 1/10/30 turns.
        started = await tool(
            a_client,
            "edit_session",
            {
                "action": "start",
                "prompt": f"a garden {index}",
                "model": f"openai/{cfg.model}",
                "size": cfg.size,
                "return_image": "none",
            },
            cfg.timeout_s,
            "atelier",
        )
        session_id = started.structured_content["session"]["session_id"]  # type: ignore[index]
        turns = 1
        for target in cfg.session_turns:
            while turns < target:
                await tool(
                    a_client,
                    "edit_session",
                    {"action": "continue", "session_id": session_id, "prompt": f"turn {turns}", "return_image": "none"},
                    cfg.timeout_s,
                    "atelier",
                )
                turns += 1
            for _ in range(cfg.repeat):
                start = time.perf_counter()
                history = await tool(
                    a_client, "edit_session", {"action": "history", "session_id": session_id}, cfg.timeout_s, "atelier"
                )
                s.add(f"history_{target}", "atelier", index, time.perf_counter() - start)
            s.add(f"history_{target}_bytes", "atelier", index, wire_bytes(history))
        log(
            "  history: "
            + ", ".join(
                f"{t} turns {statistics.median(s.values(f'history_{t}', 'atelier')[index]) * 1000:.0f} ms "
                f"{s.values(f'history_{t}_bytes', 'atelier')[index][-1] / 1000:.0f} KB"
                for t in cfg.session_turns
            )
        )


# -- the ledger ------------------------------------------------------------------------


def seed_ledger(data_dir: Path, rows: int) -> None:
    """``rows`` ledger entries over the last 30 days, written through the ledger the
    server itself uses (``Pipeline.ledger``; its ``record`` may be sync or async)."""
    import importlib
    import inspect

    try:
        from atelier_core.engine.pipeline import Pipeline
    except ImportError:  # a checkout from before the rename (for before/after runs)
        from atelier_core.engine.pipeline import Atelier as Pipeline  # type: ignore[attr-defined,no-redef]
    from atelier_core.settings import ExplicitSettings

    pipeline = Pipeline.build(ExplicitSettings(data_dir=data_dir), entry_points=False)
    ledger = pipeline.ledger
    entry_class = importlib.import_module(type(ledger).__module__).LedgerEntry
    now = datetime.now(UTC)
    entries = []
    for i in range(rows):
        at = now - timedelta(minutes=(i * 4) % (29 * 24 * 60))
        entries.append(
            entry_class(
                at=at.timestamp(),
                day=at.strftime("%Y-%m-%d"),
                run_id=f"seed-{i % 7}",
                provider="openai",
                model=("openai/gpt-image-2", "openai/gpt-image-1", "gemini/imagen-4")[i % 3],
                operation="generate",
                images=1 + i % 2,
                estimate_usd=0.04,
                cost_usd=0.03 if i % 2 else None,
                status="billed",
            )
        )
    if inspect.iscoroutinefunction(ledger.record):

        async def write() -> None:
            for entry in entries:
                await ledger.record(entry)
            await pipeline.aclose()

        asyncio.run(write())
    else:
        for entry in entries:
            ledger.record(entry)


async def ledger_queries(
    cfg: Config, port: int, work: Path, s: Samples, errlog: TextIO, index: int, log: Callable[[str], None]
) -> None:
    known: set[int] = set()
    for rows in cfg.ledger_rows:
        spec = server_specs(cfg, port, work, data_dir=f"ledger-{rows}")["atelier"]
        async with session(spec, errlog, known) as (client, _):
            for _ in range(cfg.repeat):
                start = time.perf_counter()
                report = await tool(client, "get_usage", {"days": 30}, cfg.timeout_s, "atelier")
                s.add(f"get_usage_{rows}", "atelier", index, time.perf_counter() - start)
            calls = (report.structured_content or {}).get("calls")
            if calls != rows:
                raise RuntimeError(f"get_usage saw {calls} calls, seeded {rows}")
    log(
        "  get_usage: "
        + ", ".join(
            f"{r} rows {statistics.median(s.values(f'get_usage_{r}', 'atelier')[index]) * 1000:.1f} ms"
            for r in cfg.ledger_rows
        )
    )


# -- summary ---------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _flat(rounds: list[list[float]]) -> list[float]:
    return [v for r in rounds for v in r]


def summarize(cfg: Config, s: Samples, extra: dict[str, Any]) -> dict[str, Any]:
    def ratio(
        key: str, label: str, target: float | None, unit: str = "s", a: str = "atelier", f: str = "floor"
    ) -> dict[str, Any]:
        xs, ys = s.values(key, a), s.values(key, f)
        per_round = [
            _median(x) / _median(y) if y and _median(y) else float("nan") for x, y in zip(xs, ys, strict=False)
        ]
        r = _median(per_round)
        loads = s.loads(key)
        return {
            "label": label,
            "unit": unit,
            "atelier": round(_median(_flat(xs)), 4),
            "floor": round(_median(_flat(ys)), 4),
            "ratio": round(r, 3),
            "ratio_per_round": [round(v, 3) for v in per_round],
            "target": "info" if target is None else f"<= {target:.2f}x",
            "met": None if target is None else bool(r <= target),
            "load": [min(loads), _median(loads), max(loads)] if loads else None,
            "samples": {a: xs, f: ys},
        }

    def absolute(key: str, label: str, target: float | None, unit: str = "ms") -> dict[str, Any]:
        xs = s.values(key, "atelier")
        scale = 1000 if unit == "ms" else 1
        value = _median(_flat(xs)) * scale
        loads = s.loads(key)
        return {
            "label": label,
            "unit": unit,
            "atelier": round(value, 2),
            "floor": None,
            "ratio": None,
            "target": "info"
            if target is None
            else (f"<= {target / 1000:g} KB" if unit == "B" else f"<= {target:g} {unit}"),
            "met": None if target is None else bool(value <= target),
            "load": [min(loads), _median(loads), max(loads)] if loads else None,
            "samples": {"atelier": xs},
        }

    size = cfg.size
    top = max(cfg.concurrency)
    m: dict[str, Any] = {
        "cold_start": ratio("cold_start", "cold start -> tools/list (wall)", 1.10),
        "cold_start_cpu": ratio("cold_start_cpu", "cold start -> tools/list (server CPU)", 1.10),
        "first_call": ratio("first_call", f"first call after start ({cfg.first_call_pause_s:g} s pause)", 1.20),
        "call": ratio("call", f"per call, {size}, upstream 0 ms, with preview (wall)", 1.60),
        "call_cpu": ratio("call_cpu", f"per call, {size}, with preview (server CPU)", None),
        "call_none": ratio("call_none", f"per call, {size}, return_image=none (wall)", 1.25),
        "call_none_cpu": ratio("call_none_cpu", f"per call, {size}, return_image=none (server CPU)", None),
    }
    for n in cfg.concurrency:
        target = {20: 1.10, top: 1.30}.get(n) if n > 1 else None
        m[f"concurrent_{n}"] = ratio(
            f"concurrent_{n}", f"{n} calls at once, upstream {cfg.concurrent_delay_ms} ms", target
        )
    if 20 in cfg.concurrency:
        m["concurrent_20_peak_rss"] = ratio("concurrent_20_peak_rss", "peak RSS, 20 at once", 1.40, "MB")
    m[f"concurrent_{top}_peak_rss"] = ratio(f"concurrent_{top}_peak_rss", f"peak RSS, {top} at once", None, "MB")
    m[f"concurrent_{top}_rss_after"] = ratio(
        f"concurrent_{top}_rss_after", f"RSS {cfg.settle_s:g} s after a burst of {top}", 1.30, "MB"
    )
    m["idle_rss"] = ratio("idle_rss", "RSS after start-up", None, "MB")
    for sz in cfg.sizes:
        m[f"size_{sz}"] = ratio(f"size_{sz}", f"per call, {sz}", None)
        m[f"size_{sz}_cpu"] = ratio(f"size_{sz}_cpu", f"per call, {sz} (server CPU)", None)
    for rows in cfg.ledger_rows:
        m[f"get_usage_{rows}"] = absolute(
            f"get_usage_{rows}", f"get_usage at {rows} ledger rows", 5.0 if rows == max(cfg.ledger_rows) else None
        )
    for turns in cfg.session_turns:
        last = turns == max(cfg.session_turns)
        m[f"history_{turns}"] = absolute(
            f"history_{turns}", f"edit_session history at {turns} turns", 50.0 if last else None
        )
        m[f"history_{turns}_bytes"] = absolute(
            f"history_{turns}_bytes", f"history reply at {turns} turns", 150_000 if last else None, "B"
        )
    m["get_jobs"] = absolute("get_jobs", f"get_jobs for {cfg.jobs} finished jobs", 5.0)
    m["dalle_vs_openai"] = ratio(
        "provider_call", f"dalle-shape vs openai provider per call, {size}", 1.10, a="dalle", f="openai"
    )
    m["result_bytes"] = {
        "label": "one tools/call result (JSON)",
        "unit": "B",
        "atelier": extra.get("result_bytes", {}).get("atelier"),
        "floor": extra.get("result_bytes", {}).get("floor"),
        "ratio": None,
        "atelier_inline_image_b64": extra.get("result_inline_b64", {}).get("atelier", 0),
        "target": "info",
        "met": None,
    }
    m["tools_list_bytes"] = {
        "label": "tools/list (JSON)",
        "unit": "B",
        "atelier": extra.get("tools_list_bytes", {}).get("atelier"),
        "floor": extra.get("tools_list_bytes", {}).get("floor"),
        "ratio": None,
        "atelier_tools": extra.get("tools", {}).get("atelier"),
        "floor_tools": extra.get("tools", {}).get("floor"),
        "target": "<= 10 KB",
        "met": (extra.get("tools_list_bytes", {}).get("atelier") or 0) <= 10_000,
    }
    return m


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
        if unit == "ms":
            return f"{value:.1f} ms"
        return f"{value:.3f} s"

    rows = [("figure", "atelier", "floor", "ratio", "target", "met", "load min/med/max")]
    for item in metrics.values():
        unit = item["unit"]
        r = item.get("ratio")
        met = item["met"]
        ld = item.get("load")
        rows.append(
            (
                item["label"],
                fmt(item["atelier"], unit),
                fmt(item["floor"], unit),
                "-" if r is None else f"{r:.2f}",
                item["target"],
                "" if met is None else ("yes" if met else "NO"),
                "-" if not ld else "/".join(f"{v:.1f}" for v in ld),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def run(cfg: Config, log: Callable[[str], None], partial: Path | None = None) -> dict[str, Any]:
    s = Samples()
    extra: dict[str, Any] = {}
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp, fake_upstream(cfg) as port:
        work = Path(tmp)
        specs = server_specs(cfg, port, work)
        for rows in cfg.ledger_rows:
            # It runs its own event loop for the async ledger: in a worker thread, off this one.
            await asyncio.to_thread(seed_ledger, work / f"ledger-{rows}", rows)
        imports = {name: await import_check(spec, work, cfg.timeout_s) for name, spec in specs.items()}
        log(
            "  vendor SDK imported before tools/list: "
            + ", ".join(
                f"{n} {'YES ' + str(i['vendor_sdk_modules'][:3]) if i['vendor_sdk_imported'] else 'no'}"
                for n, i in imports.items()
            )
        )
        with open(work / "servers.log", "w") as errlog:
            for index in range(cfg.rounds):
                log(f"round {index + 1}/{cfg.rounds} (load {load()})")
                await one_round(cfg, specs, s, errlog, index, log, extra)
                await ledger_queries(cfg, port, work, s, errlog, index, log)
                if partial is not None:  # the rounds so far, should the run be cut short
                    partial.write_text(json.dumps(report(cfg, s, extra, imports, started, load_before), indent=2))
    return report(cfg, s, extra, imports, started, load_before)


def report(
    cfg: Config,
    s: Samples,
    extra: dict[str, Any],
    imports: dict[str, Any],
    started: float,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    return {
        "schema": 2,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "git": {
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--", "core", "providers", "bench")),
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        },
        "config": asdict(cfg),
        "metrics": summarize(cfg, s, extra),
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
    parser.add_argument(
        "--dev-venv", action="store_true", help="run the servers on this interpreter, not a runtime-only environment"
    )
    parser.add_argument(
        "--atelier-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment variable for the Atelier server (repeatable)",
    )
    args = parser.parse_args(argv)
    cfg = Config()
    if args.quick:
        cfg = Config(
            rounds=1,
            cold_starts=1,
            first_call_pause_s=0.2,
            warmup=1,
            calls=1,
            size_calls=1,
            sizes=("816x816", "1024x1024"),
            concurrency=(1, 3),
            concurrent_delay_ms=50,
            settle_s=0.2,
            ledger_rows=(0, 50),
            session_turns=(1, 3),
            jobs=3,
            repeat=1,
            scale=0.125,
            timeout_s=60.0,
        )
    cfg.atelier_env = dict(item.split("=", 1) for item in args.atelier_env)
    for key in ("rounds", "cold_starts", "calls"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    cfg.python = str(runtime_python(args.dev_venv))
    report = asyncio.run(run(cfg, log, partial=args.out.with_suffix(".partial.json")))
    report["label"] = args.label
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    args.out.write_text(text + "\n")
    if not args.no_history and not args.quick:
        stamp = report["when"].replace(":", "").replace("-", "")
        (args.out.parent / f"run-{stamp}{'-' + args.label if args.label else ''}.json").write_text(text + "\n")
    print(table(report["metrics"]))
    print(
        f"\n{report['duration_s']} s; load average {report['machine']['loadavg_before']} -> "
        f"{report['machine']['loadavg_after']}; JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
