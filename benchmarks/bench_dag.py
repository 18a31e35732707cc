"""1. DAG all-ready: ``launch()`` against an ideal hand-driven launch of the same six services."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
from harness import (
    LAUNCH_LIMIT_SECONDS,
    PROGRAMS,
    PYTHON,
    Result,
    Settings,
    Stats,
    hand_processes,
    info,
    read_until,
    report,
    rounds,
)

import supervisor as sv

# 1. DAG all-ready vs a hand-driven ideal launch

# name, delay before "ready", dependencies: three levels, six services
DAG: list[tuple[str, float, list[str]]] = [
    ("kv", 0.3, []),
    ("tokenizer", 0.2, []),
    ("prefill", 0.3, ["kv"]),
    ("decode", 0.2, ["kv", "tokenizer"]),
    ("router", 0.3, ["prefill", "decode"]),
    ("gateway", 0.4, ["decode"]),
]


def dag_argv(delay: float) -> list[str]:
    return [PYTHON, "-S", str(PROGRAMS / "sleep_ready.py"), str(delay)]


async def dag_supervised(settings: Settings) -> float:
    topology = sv.Topology(
        name="bench-dag",
        services=[
            sv.Service(name=name, command=dag_argv(delay), depends_on=deps, ready=sv.LogCheck("^ready$"))
            for name, delay, deps in DAG
        ],
    )
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        began = time.monotonic()
        async with sv.launch(topology, runs_dir=settings.runs_dir):
            return time.monotonic() - began
    raise AssertionError("unreachable")


async def dag_ideal() -> float:
    """Spawn each program the moment all its dependencies printed their ready line; until the last did."""
    ready = {name: anyio.Event() for name, _, _ in DAG}
    ready_at: dict[str, float] = {}
    with hand_processes() as hand, anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        began = time.monotonic()

        async def run(name: str, delay: float, deps: list[str]) -> None:
            for dep in deps:
                await ready[dep].wait()
            proc = hand.spawn(dag_argv(delay))
            assert proc.stdout is not None
            ready_at[name] = await read_until(proc.stdout.fileno(), b"ready\n", bytearray())
            ready[name].set()

        async with anyio.create_task_group() as tg:
            for name, delay, deps in DAG:
                tg.start_soon(run, name, delay, deps)
        return max(ready_at.values()) - began


async def bench_dag(settings: Settings, results: list[Result]) -> None:
    critical = max_path_delay()
    info(f"DAG of {len(DAG)} services on 3 levels, log probes; critical path sleeps {critical:.1f} s in all")
    supervised: list[float] = []
    ideal: list[float] = []
    for index in rounds(settings.count(7, 3), settings.budget(40, 15)):
        pair: list[tuple[list[float], Callable[[], Awaitable[float]]]] = [
            (supervised, lambda: dag_supervised(settings)),
            (ideal, dag_ideal),
        ]
        for bucket, runner in pair if index % 2 == 0 else reversed(pair):
            bucket.append(await runner())
    report(
        Result(
            key="dag_all_ready",
            title="1. DAG all-ready (6 services, 3 levels)",
            unit="s",
            value=Stats(supervised),
            baseline=Stats(ideal),
            baseline_label="ideal",
            goal_kind="ratio",
            goal=1.05,
            note="launch() entry to body vs hand-spawned on ready lines",
        ),
        results,
    )


def max_path_delay() -> float:
    delays = {name: delay for name, delay, _ in DAG}
    finish: dict[str, float] = {}
    for name, _, deps in DAG:  # listed in dependency order
        finish[name] = max((finish[d] for d in deps), default=0.0) + delays[name]
    return max(finish.values())
