"""Where Atelier's time goes: run a workload against ``atelier-mcp`` under py-spy.

py-spy is not a project dependency; install it in a separate virtualenv and point
``--py-spy`` at it (the shared .venv stays untouched)::

    python -m uv venv /tmp/benchvenv && python -m uv pip install --python /tmp/benchvenv/bin/python py-spy
    .venv/bin/python bench/profile.py --py-spy /tmp/benchvenv/bin/py-spy --calls 20 --size 1024x1024

It samples every thread (GIL holders and idle threads included, ``--idle`` off by
default), writes collapsed stacks to ``bench/results/profile-<size>.txt`` and prints the
functions with the most samples, by self time and by total time (frames under our
packages and the libraries they call).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

import logging

from run import RESULTS, Config, call, fake_upstream, server_specs


def summarize(collapsed: Path, top: int) -> str:
    """Self and total sample counts per function from py-spy's collapsed stacks."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f else f
            for f in stack.split(";")
        ]
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    lines = [f"{samples} samples"]
    lines.append("\nself:")
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in self_counts.most_common(top)]
    lines.append("\ntotal (inclusive):")
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in total_counts.most_common(top * 2)]
    return "\n".join(lines)


async def workload(
    cfg: Config, params: StdioServerParameters, spec_args: object, calls: int, size: str, concurrency: int
) -> float:
    spec = spec_args
    with open(Path(tempfile.gettempdir()) / "atelier-profile-server.log", "w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:
            await client.list_tools()
            if calls == 0:  # --calls 0: profile start-up only
                return 0.0
            await call(client, spec, "warm-up", size, cfg.timeout_s)  # type: ignore[arg-type]
            start = time.perf_counter()
            for i in range(0, calls, concurrency):
                await asyncio.gather(
                    *(
                        call(client, spec, f"profile {i + k}", size, cfg.timeout_s)  # type: ignore[arg-type]
                        for k in range(min(concurrency, calls - i))
                    )
                )
            return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--py-spy", required=True, help="path to the py-spy executable")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--idle", action="store_true", help="include idle (waiting) threads")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    # py-spy prints a banner on the server's stdout; the client would log it as a bad message.
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    cfg = Config(size=args.size, sizes=(args.size,))  # the servers run on this interpreter
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / (f"profile-{args.size}.txt" if args.calls else "profile-startup.txt")
    with tempfile.TemporaryDirectory(prefix="atelier-profile-") as tmp, fake_upstream(cfg) as port:
        spec = server_specs(cfg, port, Path(tmp))["atelier"]
        inner = spec.params
        spy = [
            args.py_spy,
            "record",
            "--format",
            "raw",
            "--rate",
            str(args.rate),
            "--threads",
            "--nonblocking",
            "-o",
            str(out),
        ]
        if args.idle:
            spy.append("--idle")
        params = inner.model_copy(update={"command": args.py_spy, "args": [*spy[1:], "--", inner.command, *inner.args]})
        with contextlib.suppress(KeyboardInterrupt):
            elapsed = asyncio.run(workload(cfg, params, spec, args.calls, args.size, args.concurrency))
    time.sleep(1.0)  # py-spy writes its file as the server exits
    print(f"{args.calls} calls of {args.size} in {elapsed:.2f} s; collapsed stacks: {out}")
    if out.is_file():
        print(summarize(out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
