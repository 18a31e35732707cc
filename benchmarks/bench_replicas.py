"""5. 200 replicas: start, idle CPU and teardown against hand-spawned processes."""

from __future__ import annotations

import gc
import os
import selectors
import statistics
import time
from dataclasses import dataclass

import anyio
import anyio.to_thread
import psutil
from harness import (
    LAUNCH_LIMIT_SECONDS,
    PYTHON,
    Result,
    Settings,
    Stats,
    cpu_seconds,
    hand_processes,
    info,
    report,
    rounds,
)

import supervisor as sv

# 5. 200 replicas

TINY = "import sys, time\nsys.stdout.write('ready\\n')\nsys.stdout.flush()\nwhile True: time.sleep(3600)"
REPLICAS = 200


def tiny_argv() -> list[str]:
    return [PYTHON, "-S", "-c", TINY]


def replicas_hand(count: int) -> tuple[float, float]:
    """Popen all, then wait on one selector until every one printed its line: (elapsed s, CPU s)."""
    with hand_processes() as hand:
        cpu = time.process_time()
        began = time.monotonic()
        deadline = began + LAUNCH_LIMIT_SECONDS
        procs = [hand.spawn(tiny_argv()) for _ in range(count)]
        buffers: dict[int, bytearray] = {}
        with selectors.DefaultSelector() as selector:
            for proc in procs:
                assert proc.stdout is not None
                selector.register(proc.stdout.fileno(), selectors.EVENT_READ)
                buffers[proc.stdout.fileno()] = bytearray()
            waiting = len(procs)
            while waiting:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{waiting} of {count} replicas never printed their line")
                for key, _ in selector.select(timeout=1.0):
                    fd = int(key.fd)
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise RuntimeError("a replica ended before its line")
                    buffers[fd] += chunk
                    if b"ready\n" in buffers[fd]:
                        selector.unregister(fd)
                        waiting -= 1
        return time.monotonic() - began, time.process_time() - cpu


@dataclass
class Idle:
    """CPU use over a window, in % of one core: psutil's figure, and the ns-resolution process clock's."""

    psutil_pct: float
    clock_pct: float


async def idle_cpu(seconds: float) -> Idle:
    ticks, clock, wall = cpu_seconds(), time.process_time(), time.monotonic()
    await anyio.sleep(seconds)
    elapsed = time.monotonic() - wall
    return Idle(100 * (cpu_seconds() - ticks) / elapsed, 100 * (time.process_time() - clock) / elapsed)


@dataclass
class ReplicasRun:
    ready_seconds: float
    cpu_seconds: float  # this process, from launch() entry until the body runs
    teardown_seconds: float
    idle: Idle | None = None
    rss_before_mib: float = 0.0
    rss_mib: float = 0.0


async def replicas_supervised(settings: Settings, count: int, idle_seconds: float) -> ReplicasRun:
    topology = sv.Topology(
        name="bench-replicas",
        services=[sv.Service(name="tiny", command=tiny_argv(), replicas=count, ready=sv.LogCheck("^ready$"))],
    )
    me = psutil.Process()
    gc.collect()
    rss_before = me.memory_info().rss / 2**20
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS + idle_seconds):
        cpu = time.process_time()
        began = time.monotonic()
        async with sv.launch(topology, runs_dir=settings.runs_dir) as group:
            run = ReplicasRun(time.monotonic() - began, time.process_time() - cpu, 0.0)
            if len(group["tiny"].pids) != count:
                raise RuntimeError(f"{len(group['tiny'].pids)} pids, expected {count}")
            if idle_seconds:
                await anyio.sleep(0.2)  # let the last events settle
                run.idle = await idle_cpu(idle_seconds)
                gc.collect()
                run.rss_before_mib, run.rss_mib = rss_before, me.memory_info().rss / 2**20
            leaving = time.monotonic()
        run.teardown_seconds = time.monotonic() - leaving
    return run


async def bench_replicas(settings: Settings, results: list[Result]) -> None:
    info(f"{REPLICAS} replicas of `python -S -c` that print a line at once: log probe vs Popen-all + selector")
    idle_seconds = settings.budget(5.0, 2.0)
    floor = await idle_cpu(min(idle_seconds, 2.0))  # this process, nothing launched
    supervised: list[ReplicasRun] = []
    hand: list[float] = []
    hand_cpu: list[float] = []
    for index in rounds(settings.count(5, 2), settings.budget(75, 25)):
        for first in (index % 2 == 0, index % 2 != 0):
            if first:  # round 0 runs the supervisor first and measures idle CPU and memory
                supervised.append(await replicas_supervised(settings, REPLICAS, idle_seconds if index == 0 else 0))
            else:
                elapsed, cpu = await anyio.to_thread.run_sync(replicas_hand, REPLICAS)
                hand.append(elapsed)
                hand_cpu.append(cpu)
    measured = supervised[0]
    assert measured.idle is not None
    teardown = statistics.median(r.teardown_seconds for r in supervised)
    cpu_per_replica = 1000 * statistics.median(r.cpu_seconds for r in supervised) / REPLICAS
    hand_per_replica = 1000 * statistics.median(hand_cpu) / REPLICAS
    report(
        Result(
            key="replicas_all_ready",
            title=f"5. {REPLICAS} replicas all-ready",
            unit="s",
            value=Stats([r.ready_seconds for r in supervised]),
            baseline=Stats(hand),
            baseline_label="hand Popen+selector",
            goal_kind="ratio",
            goal=1.2,
            note=f"CPU in this process until ready: {cpu_per_replica:.2f} ms/replica, hand "
            f"{hand_per_replica:.2f}; supervisor teardown {teardown:.3f} s",
            extra={
                "cpu_ms_per_replica": cpu_per_replica,
                "hand_cpu_ms_per_replica": hand_per_replica,
                "teardown_seconds": Stats([r.teardown_seconds for r in supervised]).to_json(),
            },
        ),
        results,
    )
    report(
        Result(
            key="replicas_idle_cpu",
            title=f"5. supervisor idle CPU, {REPLICAS} ready",
            unit="%",
            value=Stats([measured.idle.psutil_pct]),
            baseline=Stats([floor.psutil_pct]),
            baseline_label="nothing launched",
            goal_kind="max",
            goal=1.0,
            note=f"% of one core over {idle_seconds:g} s, psutil; process clock: {measured.idle.clock_pct:.3f} %"
            f" vs {floor.clock_pct:.3f} %",
        ),
        results,
    )
    report(
        Result(
            key="replicas_rss",
            title=f"5. supervisor RSS, {REPLICAS} ready",
            unit="MiB",
            value=Stats([measured.rss_mib]),
            baseline=Stats([measured.rss_before_mib]),
            baseline_label="before launch",
            goal_kind="info",
            goal=None,
            note=f"+{measured.rss_mib - measured.rss_before_mib:.1f} MiB",
        ),
        results,
    )
