"""3. Teardown overhead after the last exit, against hand-driven pidfd teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

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

# 3. teardown overhead

TEARDOWN = [("kv", 1, []), ("tokenizer", 1, []), ("prefill", 2, ["kv"]), ("decode", 2, ["kv", "tokenizer"]),
            ("router", 2, ["prefill", "decode"]), ("gateway", 2, ["decode"])]  # fmt: skip


def last_stamp(directory: Path, expected: int) -> float:
    stamps = [float(p.read_text()) for p in directory.iterdir() if p.read_text()]
    if len(stamps) != expected:
        raise RuntimeError(f"{len(stamps)} SIGTERM stamps in {directory}, expected {expected}")
    return max(stamps)


async def teardown_supervised(settings: Settings, stamp_dir: Path) -> tuple[float, float]:
    """(overhead after the last exit, whole teardown) in ms."""
    argv = [PYTHON, "-S", str(PROGRAMS / "term_stamp.py"), str(stamp_dir)]
    topology = sv.Topology(
        name="bench-teardown",
        services=[
            sv.Service(name=name, command=argv, replicas=n, depends_on=deps, ready=sv.LogCheck("^ready$"))
            for name, n, deps in TEARDOWN
        ],
    )
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with sv.launch(topology, runs_dir=settings.runs_dir):
            leaving = time.monotonic()
        left = time.monotonic()
    last = last_stamp(stamp_dir, sum(n for _, n, _ in TEARDOWN))
    return (left - last) * 1000, (left - leaving) * 1000


async def teardown_hand(stamp_dir: Path) -> tuple[float, float]:
    """The floor: SIGTERM level by level (dependents first), await each exit on a pidfd, reap."""
    argv = [PYTHON, "-S", str(PROGRAMS / "term_stamp.py"), str(stamp_dir)]
    levels: dict[str, int] = {}
    for name, _, deps in TEARDOWN:
        levels[name] = 1 + max((levels[d] for d in deps), default=0)
    with hand_processes() as hand, anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        by_level: dict[int, list[subprocess.Popen[bytes]]] = {}
        for name, n, _ in TEARDOWN:
            by_level.setdefault(levels[name], []).extend(hand.spawn(argv) for _ in range(n))
        for proc in hand.procs:
            assert proc.stdout is not None
            await read_until(proc.stdout.fileno(), b"ready\n", bytearray())
        leaving = time.monotonic()
        for level in sorted(by_level, reverse=True):
            procs = by_level[level]
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            async with anyio.create_task_group() as tg:
                for proc in procs:
                    tg.start_soon(reap, proc)
        left = time.monotonic()
        hand_pids = [p.pid for p in hand.procs]
    last = last_stamp(stamp_dir, len(hand_pids))
    return (left - last) * 1000, (left - leaving) * 1000


async def reap(proc: subprocess.Popen[bytes]) -> None:
    pidfd = os.pidfd_open(proc.pid)
    try:
        await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    proc.wait()


async def bench_teardown(settings: Settings, results: list[Result]) -> None:
    replicas = sum(n for _, n, _ in TEARDOWN)
    info(f"{len(TEARDOWN)} services / {replicas} replicas on 3 levels; children stamp SIGTERM then os._exit(0)")
    overhead: list[float] = []
    whole: list[float] = []
    hand_overhead: list[float] = []
    hand_whole: list[float] = []
    for index in rounds(settings.count(7, 3), settings.budget(30, 12)):
        for first in (index % 2 == 0, index % 2 != 0):
            stamp_dir = settings.work / f"term-{index}-{int(first)}"
            stamp_dir.mkdir()
            if first:
                o, w = await teardown_supervised(settings, stamp_dir)
                overhead.append(o)
                whole.append(w)
            else:
                o, w = await teardown_hand(stamp_dir)
                hand_overhead.append(o)
                hand_whole.append(w)
    report(
        Result(
            key="teardown_overhead",
            title="3. teardown overhead after last exit",
            unit="ms",
            value=Stats(overhead),
            baseline=Stats(hand_overhead),
            baseline_label="hand pidfd",
            goal_kind="max",
            goal=50.0,
            note="last child's SIGTERM stamp -> block exited",
        ),
        results,
    )
    report(
        Result(
            key="teardown_total",
            title="3. teardown total (body end -> block exited)",
            unit="ms",
            value=Stats(whole),
            baseline=Stats(hand_whole),
            baseline_label="hand",
            goal_kind="info",
            goal=None,
        ),
        results,
    )
