"""A/B comparison the careful way: a baseline and a treatment topology, each trial on a fresh launch, in
both orders (A B B A), the same load on each, and the comparison of medians printed at the end.

    python examples/ab_compare.py                           # the demo (stand-ins), 200 vs 400 tokens/s
    python examples/ab_compare.py --requests 64 --concurrency 16 --order ABBAABBA --json

Both arms are ``examples/demo.yaml`` with one setting changed (the stand-in workers' ``--tokens-per-second``),
so it runs anywhere in well under a minute; for a real engine, build the two topologies from a preset
(``topologies.vllm(model=..., args={...})``) and keep the rest. Why each step:

- a fresh launch per trial: no warm caches or leftover state from the other arm;
- both orders: a drift over time (thermal, a neighbour's load) falls on both arms alike;
- warm-up requests before the window, which then runs a fixed number of requests under a time bound;
- ``group.mark`` around each window: the logs of every replica show where it began and ended;
- ``group.snapshot_metrics`` before and after it: the servers' own counters (``<run_dir>/metrics/``)
  cross-check what the client counted.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx

import supervisor

DEMO = Path(__file__).with_name("demo.yaml")
WORKERS = ("prefill", "decode")
TOKENS_METRIC = "standin_tokens_generated_total"


def arm_topology(tokens_per_second: float, load_seconds: float) -> supervisor.Topology:
    """The demo, its workers paced at ``tokens_per_second`` (the flag added last wins) and loading fast."""
    demo = supervisor.load(DEMO)
    flags = ["--tokens-per-second", f"{tokens_per_second:g}", "--load-seconds", f"{load_seconds:g}"]
    services = [attrs.evolve(s, command=[*s.command, *flags]) if s.name in WORKERS else s for s in demo.services]
    return attrs.evolve(demo, services=services)


@attrs.frozen
class Window:
    """What one measured window gave: per-request latencies and the tokens counted on both sides."""

    latencies: tuple[float, ...]
    failures: int
    client_tokens: int
    seconds: float
    server_tokens: float | None  #: sum of the decode workers' counter deltas (metrics snapshots)

    @property
    def throughput(self) -> float:
        return self.client_tokens / self.seconds if self.seconds > 0 else 0.0


async def load(url: str, *, requests: int, concurrency: int, max_tokens: int, time_limit: float) -> Window:
    """``requests`` chat completions, ``concurrency`` at a time, all within ``time_limit`` seconds (what is
    not done by then counts as failed)."""
    body = {"messages": [{"role": "user", "content": "compare two settings fairly"}], "max_tokens": max_tokens}
    latencies: list[float] = []
    tokens = [0]
    remaining = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in remaining:  # shared iterator: each request is taken by exactly one worker
            start = time.monotonic()
            try:
                response = await client.post(f"{url}/v1/chat/completions", json=body)
                response.raise_for_status()
                tokens[0] += int(response.json()["usage"]["completion_tokens"])
            except (httpx.HTTPError, KeyError, ValueError):
                continue  # counted below: a request without a latency failed
            latencies.append(time.monotonic() - start)

    start = time.monotonic()
    async with httpx.AsyncClient(trust_env=False, timeout=time_limit) as client:
        with anyio.move_on_after(time_limit):
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker, client)
    seconds = time.monotonic() - start
    failures = requests - len(latencies)  # errors, and requests cut off by the time limit
    return Window(tuple(latencies), failures, tokens[0], seconds, None)


def counter_total(snapshot: supervisor.MetricsSnapshot, service: str, metric: str) -> float | None:
    """Sum of ``metric`` over the saved endpoints of ``service``; None when one of them was not saved."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(metric)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    for endpoint in snapshot.endpoints:
        if endpoint.service != service:
            continue
        if endpoint.path is None:
            return None
        total += sum(float(value) for value in pattern.findall(endpoint.path.read_text()))
    return total


async def trial(arm: str, topology: supervisor.Topology, number: int, args: argparse.Namespace) -> dict[str, Any]:
    async with supervisor.launch(topology, runs_dir=args.runs_dir) as group:
        url = group["frontend"].url
        assert url is not None
        await load(url, requests=args.warmup, concurrency=args.concurrency, max_tokens=args.max_tokens, time_limit=10)
        group.mark(f"window {number} ({arm}) start")
        before = await group.snapshot_metrics("before")
        window = await load(
            url,
            requests=args.requests,
            concurrency=args.concurrency,
            max_tokens=args.max_tokens,
            time_limit=args.time_limit,
        )
        after = await group.snapshot_metrics("after")
        group.mark(f"window {number} ({arm}) end")
        start, end = counter_total(before, "decode", TOKENS_METRIC), counter_total(after, "decode", TOKENS_METRIC)
        server_tokens = None if start is None or end is None else end - start
        run_dir = group.run_dir
    return {
        "trial": number,
        "arm": arm,
        "run_dir": str(run_dir),
        "requests": len(window.latencies),
        "failures": window.failures,
        "median_latency_s": statistics.median(window.latencies) if window.latencies else None,
        "throughput_tok_s": window.throughput,
        "client_tokens": window.client_tokens,
        "server_tokens": server_tokens,
        "window_s": window.seconds,
    }


def compare(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per arm, the median over its trials; then treatment / baseline."""
    arms: dict[str, dict[str, float | None]] = {}
    for arm in ("A", "B"):
        mine = [t for t in trials if t["arm"] == arm]
        latencies = [t["median_latency_s"] for t in mine if t["median_latency_s"] is not None]
        arms[arm] = {
            "trials": len(mine),
            "median_latency_s": statistics.median(latencies) if latencies else None,
            "throughput_tok_s": statistics.median(t["throughput_tok_s"] for t in mine) if mine else None,
        }

    def ratio(key: str) -> float | None:
        a, b = arms["A"][key], arms["B"][key]
        return None if a is None or b is None or a == 0 else b / a

    return {
        "arms": arms,
        "ratio": {"median_latency": ratio("median_latency_s"), "throughput": ratio("throughput_tok_s")},
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-tps", type=float, default=200.0, help="A: worker tokens/s (%(default)s)")
    parser.add_argument("--treatment-tps", type=float, default=400.0, help="B: worker tokens/s (%(default)s)")
    parser.add_argument("--order", default="ABBA", help="trials in order, one fresh launch each (%(default)s)")
    parser.add_argument("--requests", type=int, default=32, help="requests per window (%(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (%(default)s)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per completion (%(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="requests before each window (%(default)s)")
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds per window, at most (%(default)s)")
    parser.add_argument("--load-seconds", type=float, default=0.3, help="stand-in start-up time (%(default)s)")
    parser.add_argument("--runs-dir", help="where the runs' directories go (default: the supervisor's)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line at the end")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.order or set(args.order) - {"A", "B"} or not {"A", "B"} <= set(args.order):
        print(f"--order: use A and B, both at least once (e.g. ABBA), got {args.order!r}", file=sys.stderr)
        return 2
    topologies = {
        "A": arm_topology(args.baseline_tps, args.load_seconds),
        "B": arm_topology(args.treatment_tps, args.load_seconds),
    }
    trials: list[dict[str, Any]] = []
    print(f"A: {args.baseline_tps:g} tokens/s per worker, B: {args.treatment_tps:g}; order {args.order}")
    print(f"{'trial':>5} {'arm':>3} {'ok':>4} {'failed':>6} {'median':>9} {'tok/s':>8} {'tokens':>7} {'server':>7}")
    for number, arm in enumerate(args.order, start=1):
        result = anyio.run(trial, arm, topologies[arm], number, args)
        trials.append(result)
        median = result["median_latency_s"]
        server = result["server_tokens"]
        print(
            f"{number:>5} {arm:>3} {result['requests']:>4} {result['failures']:>6} "
            f"{'-' if median is None else f'{median * 1000:.0f}ms':>9} {result['throughput_tok_s']:>8.0f} "
            f"{result['client_tokens']:>7} {'-' if server is None else f'{server:.0f}':>7}",
            flush=True,
        )
    comparison = compare(trials)
    for arm in ("A", "B"):
        summary = comparison["arms"][arm]
        latency = summary["median_latency_s"]
        print(
            f"{arm}: median latency {'-' if latency is None else f'{latency * 1000:.0f}ms'}, "
            f"median throughput {summary['throughput_tok_s']:.0f} tok/s over {summary['trials']} trials"
        )
    ratios = comparison["ratio"]
    print(
        "B/A: latency "
        + ("-" if ratios["median_latency"] is None else f"{ratios['median_latency']:.2f}x")
        + ", throughput "
        + ("-" if ratios["throughput"] is None else f"{ratios['throughput']:.2f}x")
    )
    if args.json:
        print(json.dumps({"order": args.order, "trials": trials, **comparison}))
    return 0 if all(t["failures"] == 0 for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
