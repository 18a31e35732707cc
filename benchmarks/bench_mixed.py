"""6. A big service beside a short chain: does spawning many replicas hold up the rest?"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from bench_dag import dag_argv
from bench_replicas import REPLICAS, tiny_argv
from harness import LAUNCH_LIMIT_SECONDS, Result, Settings, Stats, hand_processes, info, read_until, report, rounds

import supervisor as sv

# 6. a big service beside a short chain: does spawning many replicas hold up the rest?

CHAIN = [("a", 0.1, []), ("b", 1.0, ["a"])]  # b starts when a is ready, then takes 1 s


async def mixed_supervised(settings: Settings) -> float:
    services = [
        sv.Service(name=name, command=dag_argv(delay), depends_on=deps, ready=sv.LogCheck("^ready$"))
        for name, delay, deps in CHAIN
    ]
    services.append(sv.Service(name="big", command=tiny_argv(), replicas=REPLICAS, ready=sv.LogCheck("^ready$")))
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        began = time.monotonic()
        async with sv.launch(sv.Topology(name="bench-mixed", services=services), runs_dir=settings.runs_dir):
            return time.monotonic() - began
    raise AssertionError("unreachable")


async def mixed_ideal() -> float:
    """The chain as in the DAG ideal; the big service spawned one by one, yielding to the loop in between."""
    ready = {name: anyio.Event() for name, _, _ in CHAIN}
    ready_at: list[float] = []
    with hand_processes() as hand, anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        began = time.monotonic()

        async def run(name: str, delay: float, deps: list[str]) -> None:
            for dep in deps:
                await ready[dep].wait()
            proc = hand.spawn(dag_argv(delay))
            assert proc.stdout is not None
            ready_at.append(await read_until(proc.stdout.fileno(), b"ready\n", bytearray()))
            ready[name].set()

        async def watch(proc: subprocess.Popen[bytes]) -> None:
            assert proc.stdout is not None
            ready_at.append(await read_until(proc.stdout.fileno(), b"ready\n", bytearray()))

        async with anyio.create_task_group() as tg:
            for name, delay, deps in CHAIN:
                tg.start_soon(run, name, delay, deps)
            for _ in range(REPLICAS):
                tg.start_soon(watch, hand.spawn(tiny_argv()))
                await anyio.lowlevel.checkpoint()
        return max(ready_at) - began


async def bench_mixed(settings: Settings, results: list[Result]) -> None:
    info(f"services a (ready after 0.1 s) -> b (1.0 s), beside `big` with {REPLICAS} tiny replicas; all-ready time")
    supervised: list[float] = []
    ideal: list[float] = []
    for index in rounds(settings.count(3, 1), settings.budget(30, 10)):
        pair: list[tuple[list[float], Callable[[], Awaitable[float]]]] = [
            (supervised, lambda: mixed_supervised(settings)),
            (ideal, mixed_ideal),
        ]
        for bucket, runner in pair if index % 2 == 0 else reversed(pair):
            bucket.append(await runner())
    report(
        Result(
            key="mixed_all_ready",
            title=f"6. chain beside {REPLICAS} replicas all-ready",
            unit="s",
            value=Stats(supervised),
            baseline=Stats(ideal),
            baseline_label="ideal",
            goal_kind="ratio",
            goal=None,
            note="diagnostic: a long synchronous spawn loop delays the chain",
        ),
        results,
    )
