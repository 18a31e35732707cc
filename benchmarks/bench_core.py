"""Core benchmarks of topovisor (package ``supervisor``), each against a baseline measured in the same run.

    python benchmarks/bench_core.py [--quick] [--json PATH] [--only NAME ...] [--repeats N]

Every figure is the median of several runs (min and max shown too). Supervisor runs and their hand-driven
baselines alternate, so both see the same machine state. Everything talks to 127.0.0.1 only, lives in a
temporary directory, and every process started here is stopped before the script exits. See README.md.

The harness is ``harness.py``; each section is one ``bench_<section>.py`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
from bench_control import bench_control
from bench_dag import bench_dag, dag_argv
from bench_logs import bench_logs
from bench_mixed import bench_mixed
from bench_readiness import bench_readiness, server_argv
from bench_replicas import bench_replicas
from bench_restart import bench_restart
from bench_scale import bench_scale
from bench_startup import bench_startup
from bench_teardown import bench_teardown
from harness import LAUNCH_LIMIT_SECONDS, Result, Settings, info, library_version, stop_leftovers, summary

import supervisor as sv

# driver

SECTIONS: dict[str, Callable[[Settings, list[Result]], Awaitable[None]]] = {
    "dag": bench_dag,
    "ready": bench_readiness,
    "teardown": bench_teardown,
    "logs": bench_logs,
    "replicas": bench_replicas,
    "mixed": bench_mixed,
    "restart": bench_restart,
    "startup": bench_startup,
    "scale": bench_scale,
    "control": bench_control,
}


async def warm_up(settings: Settings) -> None:
    """One unmeasured launch with a log and an http probe: lazy imports (httpx included) happen here."""
    stamp = settings.work / "warm-up-stamp"
    services = [
        sv.Service(name="log", command=dag_argv(0.0), ready=sv.LogCheck("^ready$")),
        sv.Service(
            name="http",
            command=server_argv("503", 0.05, stamp, "{port}", announce=False),
            ports=["port"],
            ready=sv.HttpCheck("http://127.0.0.1:{port}/health"),
        ),
    ]
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with sv.launch(sv.Topology(name="bench-warm-up", services=services), runs_dir=settings.runs_dir):
            pass


async def main_async(settings: Settings, only: Sequence[str]) -> list[Result]:
    results: list[Result] = []
    await warm_up(settings)
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        began = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            await section(settings, results)
        finally:
            stop_leftovers(settings, name)
        info(f"({time.monotonic() - began:.1f} s)")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about a minute in all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), default=[], help="run only these sections")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a goal is missed")
    parser.add_argument("--repeats", type=int, help="rounds per section (overrides --quick's and the default)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    cpus = os.cpu_count()
    system = f"{platform.system()} {platform.release()}"
    mode = "quick" if args.quick else "full"
    print(f"topovisor bench_core: python {platform.python_version()}, {system}, {cpus} CPUs, {mode}", flush=True)
    print(f"library: {library_version()}", flush=True)
    load_before = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load_before:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="topovisor-bench-") as work:
        settings = Settings(quick=args.quick, repeats=args.repeats, work=Path(work))
        try:
            results = anyio.run(main_async, settings, args.only, backend="asyncio")
        except KeyboardInterrupt:
            print("\ninterrupted", flush=True)
            return 130
        finally:
            stop_leftovers(settings)
    elapsed = time.monotonic() - began
    load_after = os.getloadavg()[0]
    loads = f"load average {load_before:.2f} -> {load_after:.2f}"
    print(f"\nsummary ({elapsed:.0f} s in all, {loads})\n" + summary(results), flush=True)
    if args.json:
        document = {
            "library": library_version(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": cpus,
            "quick": args.quick,
            "elapsed_seconds": elapsed,
            "load_average": [load_before, load_after],
            "results": [r.to_json() for r in results],
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    misses = [r.key for r in results if r.verdict == "MISS"]
    return 1 if misses and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
