"""4. Log throughput: captured and rotated output against a direct file and a hand pipe pump."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread
from harness import (
    LAUNCH_LIMIT_SECONDS,
    PROGRAMS,
    PYTHON,
    Result,
    Settings,
    Stats,
    hand_processes,
    info,
    report,
    rounds,
)

import supervisor as sv
from supervisor._host.fileroom import reserve_room, room_helps
from supervisor._host.logs import _ROOM_BYTES, _ROOM_FROM_BYTES

# 4. log throughput

F_SETPIPE_SZ = 1031
CPU_GOAL_PERCENT = 25.0  # of one core, for the line writer (issue 26)
THROUGHPUT_GOAL = 0.95  # of stdout=file, for the line writer (issue 26)


@dataclass
class Writer:
    key: str
    title: str
    argv: list[str]
    lines: int
    line_bytes: int
    goal: float | None  # on the elapsed ratio vs stdout=file
    cpu_goal: float | None  # on the supervisor's CPU, % of one core

    @property
    def megabytes(self) -> float:
        return self.lines * self.line_bytes / 1e6


def writers(settings: Settings) -> list[Writer]:
    blocks = 200  # of 10,000 lines
    printed = 500_000
    written = 1_000_000
    return [
        Writer("logs_lines", "4. log 200 MB, 200-byte lines, 8 KiB writes", [PYTHON, "-S",
               str(PROGRAMS / "write_lines.py"), str(written)], written, 200, round(1 / THROUGHPUT_GOAL, 3),
               CPU_GOAL_PERCENT),
        Writer("logs_bulk", "4. log 200 MB, 1 MB writes", [PYTHON, "-S", str(PROGRAMS / "spew.py"), str(blocks)],
               blocks * 10_000, 100, 1.2, None),
        Writer("logs_print", "4. log 50 MB, print() per line", [PYTHON, "-S", str(PROGRAMS / "print_lines.py"),
               str(printed)], printed, 100, None, None),
    ]  # fmt: skip


def own_cpu_seconds() -> float:
    """This process's user+system CPU, all threads (getrusage: microseconds, not psutil's 10 ms ticks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def count_lines(paths: Sequence[Path]) -> int:
    lines = 0
    for path in paths:
        with path.open("rb") as file:
            while chunk := file.read(1 << 22):
                lines += chunk.count(b"\n")
    return lines


async def logs_supervised(settings: Settings, writer: Writer) -> tuple[float, float]:
    """(elapsed s, supervisor CPU s) from the child's spawn until its last byte is in the log files."""
    service = sv.Service(name="spew", command=writer.argv, log=sv.LogPolicy(max_bytes="50MB", backups=20))
    spawned: list[tuple[float, float]] = []

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Spawned):
            spawned.append((event.monotonic, own_cpu_seconds()))

    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        topology = sv.Topology(name="bench-logs", services=[service])
        async with sv.launch(topology, runs_dir=settings.runs_dir, on_event=on_event) as group:
            await group.wait()
            stream = group.replicas[0].stream
            assert stream is not None
            await stream.wait_closed(LAUNCH_LIMIT_SECONDS)
            ended, cpu = time.monotonic(), own_cpu_seconds()
            logs_dir = group.logs_dir
    began, cpu_at_spawn = spawned[0]
    files = sorted(logs_dir.glob("spew.log*"))
    got = count_lines(files)
    if got != writer.lines:
        raise RuntimeError(f"supervisor logs hold {got} lines, expected {writer.lines}: {files}")
    for path in files:
        path.unlink()
    return ended - began, cpu - cpu_at_spawn


def logs_direct(settings: Settings, writer: Writer) -> float:
    """The child's stdout is the file itself: from its spawn until it exited."""
    path = settings.work / "direct.log"
    with hand_processes() as hand, path.open("wb") as out:
        began = time.monotonic()
        proc = hand.spawn(writer.argv, stdout=out.fileno())
        proc.wait(timeout=LAUNCH_LIMIT_SECONDS)
        elapsed = time.monotonic() - began
    check_file(path, writer, proc)
    return elapsed


def logs_pipe(settings: Settings, writer: Writer) -> tuple[float, float]:
    """A bare pipe in between: read up to 1 MiB, write it to the file, nothing else (one thread, blocking).
    (elapsed s, the draining thread's CPU s from the spawn on): what a hand-written launcher's drain costs."""

    def drain(fd: int, out: BinaryIO) -> None:
        os.set_blocking(fd, True)
        while chunk := os.read(fd, 1 << 20):
            out.write(chunk)
        out.flush()

    return drained_by_hand(settings, writer, "pipe.log", drain)


def logs_floor(settings: Settings, writer: Writer) -> tuple[float, float]:
    """The least a pump that reads the pipe can spend: non-blocking reads into one reused 1 MiB buffer, each
    written to the file as it is into disk room reserved ahead as the supervisor does (``fileroom``), and a
    1 ms sleep after a read that left the pipe empty (the supervisor's shortest nap), so a busy writer is
    read in batches. No lines, no tail, no event loop: (elapsed s, the draining thread's CPU s from the
    spawn on), what the kernel alone charges for a pipe in between."""
    buffer = bytearray(1 << 20)

    def drain(fd: int, out: BinaryIO) -> None:
        os.set_blocking(fd, False)
        reserve = room_helps(out.fileno())
        written = room_to = 0
        deadline = time.monotonic() + LAUNCH_LIMIT_SECONDS
        while time.monotonic() < deadline:
            try:
                size = os.readv(fd, [buffer])
            except BlockingIOError:
                select.select([fd], [], [], 1.0)
                continue
            if not size:
                break
            if reserve and size >= _ROOM_FROM_BYTES and written + size > room_to:  # as the supervisor does
                room_to = written + size + _ROOM_BYTES
                reserve_room(out.fileno(), written, room_to - written)
            out.write(memoryview(buffer)[:size])
            written += size
            if size < len(buffer):
                time.sleep(0.001)
        out.flush()

    return drained_by_hand(settings, writer, "floor.log", drain, buffering=0)  # each read, written as it is


def drained_by_hand(
    settings: Settings, writer: Writer, name: str, drain: Callable[[int, BinaryIO], None], buffering: int = -1
) -> tuple[float, float]:
    """The writer spawned with a 1 MiB pipe (as the supervisor sets it), ``drain(fd, file)`` in this thread:
    (elapsed s from the spawn until the child has exited, the drain's CPU s)."""
    path = settings.work / name
    with hand_processes() as hand, path.open("wb", buffering=buffering) as out:
        began = time.monotonic()
        proc = hand.spawn(writer.argv)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)  # as the supervisor does
        cpu_began = time.thread_time()
        drain(fd, out)
        cpu = time.thread_time() - cpu_began
        proc.wait(timeout=LAUNCH_LIMIT_SECONDS)
        elapsed = time.monotonic() - began
    check_file(path, writer, proc)
    return elapsed, cpu


def check_file(path: Path, writer: Writer, proc: subprocess.Popen[bytes]) -> None:
    got = count_lines([path])
    path.unlink()
    if proc.returncode != 0 or got != writer.lines:
        raise RuntimeError(f"{writer.argv}: exit {proc.returncode}, {got} lines, expected {writer.lines}")


async def bench_logs(settings: Settings, results: list[Result]) -> None:
    info("numbered lines to stdout as fast as the child can, timed from its spawn until all is on disk;")
    info("supervisor log rotates at 50 MB; baselines: stdout=open(file) (the goal), and a bare pipe->file")
    info("drain by hand (what a pipe costs); supervisor CPU: its own getrusage over the same span")
    for writer in writers(settings):
        await bench_writer(settings, writer, results)


async def bench_writer(settings: Settings, writer: Writer, results: list[Result]) -> None:
    # one unmeasured round of each: the first run pays for page cache growth and lazy imports
    await logs_supervised(settings, writer)
    await anyio.to_thread.run_sync(logs_direct, settings, writer)
    supervised: list[float] = []
    cpu_percent: list[float] = []
    cpu_ms_per_100mb: list[float] = []
    direct: list[float] = []
    pipe: list[float] = []
    pipe_cpu_ms_per_100mb: list[float] = []
    floor_cpu_ms_per_100mb: list[float] = []

    async def run_supervised() -> None:
        elapsed, cpu_seconds = await logs_supervised(settings, writer)
        supervised.append(elapsed)
        cpu_percent.append(100 * cpu_seconds / elapsed)
        cpu_ms_per_100mb.append(1000 * cpu_seconds * 100 / writer.megabytes)  # comparable across loads

    async def run_direct() -> None:
        direct.append(await anyio.to_thread.run_sync(logs_direct, settings, writer))

    async def run_pipe() -> None:
        elapsed, cpu_seconds = await anyio.to_thread.run_sync(logs_pipe, settings, writer)
        pipe.append(elapsed)
        pipe_cpu_ms_per_100mb.append(1000 * cpu_seconds * 100 / writer.megabytes)

    async def run_floor() -> None:
        _, cpu_seconds = await anyio.to_thread.run_sync(logs_floor, settings, writer)
        floor_cpu_ms_per_100mb.append(1000 * cpu_seconds * 100 / writer.megabytes)

    runs = [run_supervised, run_direct, run_pipe, run_floor]
    for index in rounds(settings.count(5, 3), settings.budget(40, 20)):
        for run in runs[index % len(runs) :] + runs[: index % len(runs)]:  # rotate who goes first
            await run()
    throughput = statistics.median(direct) / statistics.median(supervised)
    pipe_ratio = statistics.median(supervised) / statistics.median(pipe)
    info(f"{writer.title}: line count exact in every run ({writer.lines:,} lines; rotated files summed)")
    report(
        Result(
            key=f"{writer.key}_elapsed",
            title=writer.title,
            unit="s",
            value=Stats(supervised),
            baseline=Stats(direct),
            baseline_label="stdout=file",
            goal_kind="ratio",
            goal=writer.goal,
            note=f"throughput {throughput:.1%} of stdout=file; hand pipe drain {statistics.median(pipe):.3f} s, "
            f"ratio to it {pipe_ratio:.2f}",
            extra={"pipe_drain": Stats(pipe).to_json(), "throughput_of_direct": throughput},
        ),
        results,
    )
    report(
        Result(
            key=f"{writer.key}_throughput",
            title=f"{writer.title}, MB/s",
            unit="MB/s",
            value=Stats([writer.megabytes / s for s in supervised]),
            baseline=Stats([writer.megabytes / s for s in direct]),
            baseline_label="stdout=file",
            goal_kind="info",
            goal=None,
            note=f"{throughput:.1%} of stdout=file",
        ),
        results,
    )
    report(
        Result(
            key=f"{writer.key}_cpu",
            title=f"{writer.title}, supervisor CPU",
            unit="%",
            value=Stats(cpu_percent),
            baseline=None,
            baseline_label="",
            goal_kind="max" if writer.cpu_goal is not None else "info",
            goal=writer.cpu_goal,
            note=f"of one core, from the spawn until the output is all on disk; "
            f"{statistics.median(cpu_ms_per_100mb):.0f} ms of CPU per 100 MB",
            extra={"cpu_ms_per_100mb": Stats(cpu_ms_per_100mb).to_json()},
        ),
        results,
    )
    megabytes_per_second = writer.megabytes / statistics.median(supervised)
    floor_percent = statistics.median(floor_cpu_ms_per_100mb) / 1000 * megabytes_per_second  # s/100 MB x MB/s x 100 %
    report(
        Result(
            key=f"{writer.key}_cpu_floor",
            title=f"{writer.title}, CPU per 100 MB against the floor",
            unit="ms",
            value=Stats(cpu_ms_per_100mb),
            baseline=Stats(floor_cpu_ms_per_100mb),
            baseline_label="bare napping read/write loop",
            goal_kind="info",
            goal=None,
            note=f"the floor of any pump that reads the pipe (no lines, no tail, no event loop); at the supervised "
            f"pace ({megabytes_per_second:.0f} MB/s) the floor alone is {floor_percent:.1f} % of a core",
            extra={"floor_percent_at_supervised_pace": floor_percent},
        ),
        results,
    )
    report(
        Result(
            key=f"{writer.key}_cpu_per_100mb",
            title=f"{writer.title}, CPU per 100 MB",
            unit="ms",
            value=Stats(cpu_ms_per_100mb),
            baseline=Stats(pipe_cpu_ms_per_100mb),
            baseline_label="hand pipe drain",
            goal_kind="info",
            goal=None,
            note="the supervisor's CPU against a bare blocking read/write loop's (its thread's CPU) draining the "
            "same child: what a hand-written launcher pays",
        ),
        results,
    )
