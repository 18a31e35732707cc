"""7. Restart: crash -> replacement ready, against a hand-driven respawn."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import anyio
from harness import Result, Settings, Stats, hand_start_ms, info, report, rounds

import supervisor as sv

# 7. restart: crash -> replacement ready

RESTART_BACKOFF_SECONDS = 0.05
CRASHER = (
    "import os, sys, time\n"
    "stamp = sys.argv[1]\n"
    "print('ready', flush=True)\n"
    "if stamp != '-' and not os.path.exists(stamp):\n"
    "    time.sleep(0.2)\n"
    "    with open(stamp, 'w') as f: f.write(repr(time.monotonic()))\n"
    "    os._exit(1)\n"
    "time.sleep(3600)\n"
)


async def restart_supervised(settings: Settings, stamp: Path) -> float:
    """ms from the crash (stamped by the child just before it exits) to the replacement's Ready event."""
    policy = sv.RestartPolicy(
        policy="on-failure", backoff=sv.Backoff(initial_seconds=RESTART_BACKOFF_SECONDS, jitter=0)
    )
    topo = sv.Topology(
        name="restart",
        services=[
            sv.Service(
                name="w",
                command=[sys.executable, "-c", CRASHER, str(stamp)],
                ready=sv.LogCheck("ready"),
                restart=policy,
            )
        ],
    )
    async with sv.launch(topo, runs_dir=settings.work / "runs") as group:
        with anyio.fail_after(30):
            async for event in group.events(history=True):
                if (
                    isinstance(event, sv.Ready)
                    and len([e for e in group.event_history if isinstance(e, sv.Ready)]) == 2
                ):
                    ready_again = event.monotonic
                    break
    crashed = float(stamp.read_text())
    return (ready_again - crashed) * 1000


async def restart_hand() -> float:
    """The service's own start time: spawn it and read its pipe until the ready line (ms)."""
    return await hand_start_ms([sys.executable, "-c", CRASHER, "-"])


async def bench_restart(settings: Settings, results: list[Result]) -> None:
    info(f"a replica crashes 0.2 s after ready; on-failure restart, backoff {RESTART_BACKOFF_SECONDS * 1000:.0f} ms")
    supervised: list[float] = []
    own_start: list[float] = []
    stamps = settings.work / "restart"
    stamps.mkdir(exist_ok=True)
    for index in rounds(settings.count(7, 3), settings.budget(30, 12)):
        supervised.append(await restart_supervised(settings, stamps / f"crash-{index}"))
        own_start.append(await restart_hand())
    start = statistics.median(own_start)
    overhead = [value - RESTART_BACKOFF_SECONDS * 1000 - start for value in supervised]
    report(
        Result(
            key="restart_overhead",
            title="7. crash -> replacement ready, minus backoff and own start",
            unit="ms",
            value=Stats(overhead),
            baseline=Stats(own_start),
            baseline_label="service's own start (hand spawn to ready line)",
            goal_kind="max",
            goal=20.0,
            note=f"raw crash->ready median {statistics.median(supervised):.1f} ms",
        ),
        results,
    )
