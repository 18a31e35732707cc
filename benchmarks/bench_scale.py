"""9. Scale: a replica added to a running service, ready, against its own start by hand; and the time a
scale-down takes per replica, at 100 replicas against 400 (it must stay flat: retiring is linear)."""

from __future__ import annotations

import statistics
import sys
import time

import anyio
from harness import LAUNCH_LIMIT_SECONDS, Result, Settings, Stats, hand_start_ms, info, report, rounds

import supervisor as sv

# 9. scale: group.scale(svc, n + 1) -> the new replica ready, beyond its own start

WORKER = [sys.executable, "-S", "-c", "print('ready', flush=True)\nimport time\ntime.sleep(3600)"]
#: hundreds of these at once: a shell that becomes ``sleep`` (a few hundred KB each, not an interpreter)
SLEEPER = ["/bin/sh", "-c", "echo ready; exec sleep 3600"]
DOWN_SIZES = (100, 400)  #: replicas retired per measurement: the per-replica time must not grow with the count


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


async def scale_down_ms_per_replica(settings: Settings, replicas: int) -> float:
    """A 2-replica service scaled up to ``2 + replicas``, then back to 2: ms of the scale-down per
    replica retired (each stopped with SIGTERM, then removed)."""
    service = sv.Service(name="s", command=SLEEPER, replicas=2, ready=sv.LogCheck("^ready$"))
    async with sv.launch(sv.Topology(name="scaledown", services=[service]), runs_dir=settings.runs_dir) as group:
        with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
            await group.scale("s", 2 + replicas)
            began = time.monotonic()
            await group.scale("s", 2)
            return (time.monotonic() - began) * 1000 / replicas


async def own_start() -> float:
    """The replica's own start: spawn the same program by hand and read its pipe until the ready line (ms)."""
    return await hand_start_ms(WORKER)


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

    small, large = DOWN_SIZES
    per_small: list[float] = []
    per_large: list[float] = []
    for _ in rounds(settings.count(2, 1), settings.budget(120, 60)):  # in turns: the same host load for both
        per_small.append(await scale_down_ms_per_replica(settings, small))
        per_large.append(await scale_down_ms_per_replica(settings, large))
    report(
        Result(
            key="scale_down_per_replica",
            title=f"9. scale-down of {large} replicas: ms per replica, against {small} replicas",
            unit="ms",
            value=Stats(per_large),
            baseline=Stats(per_small),
            baseline_label=f"ms per replica retiring {small}",
            goal_kind="ratio",
            goal=1.5,  # linear: flat per replica (quadratic would be ~4x at 4x the count)
        ),
        results,
    )
