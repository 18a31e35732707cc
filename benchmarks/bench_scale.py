"""9. Scale: a replica added to a running service, ready, against its own start by hand."""

from __future__ import annotations

import os
import statistics
import sys
import time

import anyio
from harness import LAUNCH_LIMIT_SECONDS, Result, Settings, Stats, hand_processes, info, read_until, report, rounds

import supervisor as sv

# 9. scale: group.scale(svc, n + 1) -> the new replica ready, beyond its own start

WORKER = [sys.executable, "-S", "-c", "print('ready', flush=True)\nimport time\ntime.sleep(3600)"]


async def scale_rounds(settings: Settings, count: int, budget: float) -> tuple[list[float], list[float], list[str]]:
    """ms of ``scale("w", 2)`` (call to return) per round, ms of the scale down after it, and one note
    per round splitting the scale-up: planning and spawn, spawn to ready, ready to return."""
    topology = sv.Topology(name="scale", services=[sv.Service(name="w", command=WORKER, ready=sv.LogCheck("^ready$"))])
    ups: list[float] = []
    downs: list[float] = []
    splits: list[str] = []
    async with sv.launch(topology, runs_dir=settings.runs_dir) as group:
        for _ in rounds(count, budget):
            seen = len(group.event_history)
            with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
                began = time.monotonic()
                await group.scale("w", 2)
                returned = time.monotonic()
                await group.scale("w", 1)
                downs.append((time.monotonic() - returned) * 1000)
            ups.append((returned - began) * 1000)
            events = group.event_history[seen:]
            spawned = next(e for e in events if isinstance(e, sv.Spawned))
            ready = next(e for e in events if isinstance(e, sv.Ready))
            splits.append(
                f"plan+spawn {(spawned.monotonic - began) * 1000:.2f} ms, spawn->ready {ready.seconds * 1000:.1f} ms, "
                f"ready->return {(returned - ready.monotonic) * 1000:.2f} ms"
            )
    return ups, downs, splits


async def own_start() -> float:
    """The replica's own start: spawn the same program by hand and read its pipe until the ready line (ms)."""
    with hand_processes() as hand:
        began = time.monotonic()
        read_fd, write_fd = os.pipe()
        hand.spawn(WORKER, stdout=write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        try:
            seen = await read_until(read_fd, b"ready", bytearray())
        finally:
            os.close(read_fd)
        return (seen - began) * 1000


async def bench_scale(settings: Settings, results: list[Result]) -> None:
    info("a running 1-replica service scaled to 2 (log probe) and back to 1, in turns with a hand spawn")
    ups: list[float] = []
    downs: list[float] = []
    splits: list[str] = []
    starts: list[float] = []
    for _ in rounds(settings.count(5, 2), settings.budget(30, 10)):
        up, down, split = await scale_rounds(settings, settings.count(4, 2), settings.budget(10, 5))
        ups += up
        downs += down
        splits += split
        starts.append(await own_start())
    start = statistics.median(starts)
    report(
        Result(
            key="scale_up_overhead",
            title="9. scale-up: new replica ready, minus its own start",
            unit="ms",
            value=Stats([value - start for value in ups]),
            baseline=Stats(starts),
            baseline_label="its own start (hand spawn to ready line)",
            goal_kind="max",
            goal=20.0,
            note=f"raw scale() median {statistics.median(ups):.1f} ms; a round: {splits[len(splits) // 2]}",
        ),
        results,
    )
    report(
        Result(
            key="scale_down",
            title="9. scale-down: one replica stopped (SIGTERM) and removed",
            unit="ms",
            value=Stats(downs),
            baseline=None,
            baseline_label="",
            goal_kind="info",
            goal=None,
        ),
        results,
    )
