"""4. Log throughput: captured and rotated output against a direct file and a hand pipe pump."""

from __future__ import annotations

import contextlib
import fcntl
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from harness import (
    LAUNCH_LIMIT_SECONDS,
    PROGRAMS,
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

# 4. log throughput

LINE_BYTES = 100  # both writers print numbered lines of exactly 100 bytes
F_SETPIPE_SZ = 1031


@dataclass
class Writer:
    key: str
    title: str
    argv: list[str]
    lines: int
    goal: float | None  # on the elapsed ratio vs stdout=file

    @property
    def megabytes(self) -> float:
        return self.lines * LINE_BYTES / 1e6


def writers(settings: Settings) -> list[Writer]:
    blocks = 200  # of 10,000 lines
    printed = 500_000
    return [
        Writer("logs_bulk", "4. log 200 MB, bulk writes", [PYTHON, "-S", str(PROGRAMS / "spew.py"), str(blocks)],
               blocks * 10_000, 1.2),
        Writer("logs_print", "4. log 50 MB, print() per line", [PYTHON, "-S", str(PROGRAMS / "print_lines.py"),
               str(printed)], printed, None),
    ]  # fmt: skip


def count_lines(paths: Sequence[Path]) -> int:
    lines = 0
    for path in paths:
        with path.open("rb") as file:
            while chunk := file.read(1 << 22):
                lines += chunk.count(b"\n")
    return lines


async def logs_supervised(settings: Settings, writer: Writer) -> tuple[float, float]:
    """(elapsed s, supervisor CPU s): launch() entry until the block has exited, output all on disk."""
    service = sv.Service(name="spew", command=writer.argv, log=sv.LogPolicy(max_bytes="50MB", backups=20))
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        cpu = cpu_seconds()
        began = time.monotonic()
        topology = sv.Topology(name="bench-logs", services=[service])
        async with sv.launch(topology, runs_dir=settings.runs_dir) as group:
            await group.wait()
            logs_dir = group.logs_dir
        elapsed = time.monotonic() - began
        cpu = cpu_seconds() - cpu
    files = sorted(logs_dir.glob("spew.log*"))
    got = count_lines(files)
    if got != writer.lines:
        raise RuntimeError(f"supervisor logs hold {got} lines, expected {writer.lines}: {files}")
    for path in files:
        path.unlink()
    return elapsed, cpu


def logs_direct(settings: Settings, writer: Writer) -> float:
    """The child's stdout is the file itself."""
    path = settings.work / "direct.log"
    with hand_processes() as hand, path.open("wb") as out:
        began = time.monotonic()
        proc = hand.spawn(writer.argv, stdout=out.fileno())
        proc.wait(timeout=LAUNCH_LIMIT_SECONDS)
        elapsed = time.monotonic() - began
    check_file(path, writer, proc)
    return elapsed


def logs_pipe(settings: Settings, writer: Writer) -> float:
    """A bare pipe in between: read up to 1 MiB, write it to the file, nothing else (one thread, blocking)."""
    path = settings.work / "pipe.log"
    with hand_processes() as hand, path.open("wb") as out:
        began = time.monotonic()
        proc = hand.spawn(writer.argv)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)  # as the supervisor does
        os.set_blocking(fd, True)
        while chunk := os.read(fd, 1 << 20):
            out.write(chunk)
        out.flush()
        proc.wait(timeout=LAUNCH_LIMIT_SECONDS)
        elapsed = time.monotonic() - began
    check_file(path, writer, proc)
    return elapsed


def check_file(path: Path, writer: Writer, proc: subprocess.Popen[bytes]) -> None:
    got = count_lines([path])
    path.unlink()
    if proc.returncode != 0 or got != writer.lines:
        raise RuntimeError(f"{writer.argv}: exit {proc.returncode}, {got} lines, expected {writer.lines}")


async def bench_logs(settings: Settings, results: list[Result]) -> None:
    info("numbered 100-byte lines to stdout as fast as the child can; supervisor log rotates at 50 MB;")
    info("baselines: stdout=open(file) (the goal), and a bare pipe->file drain by hand (what a pipe costs)")
    for writer in writers(settings):
        await bench_writer(settings, writer, results)


async def bench_writer(settings: Settings, writer: Writer, results: list[Result]) -> None:
    # one unmeasured round of each: the first run pays for page cache growth and lazy imports
    await logs_supervised(settings, writer)
    await anyio.to_thread.run_sync(logs_direct, settings, writer)
    supervised: list[float] = []
    cpu: list[float] = []
    direct: list[float] = []
    pipe: list[float] = []

    async def run_supervised() -> None:
        elapsed, cpu_seconds = await logs_supervised(settings, writer)
        supervised.append(elapsed)
        cpu.append(cpu_seconds)

    async def run_direct() -> None:
        direct.append(await anyio.to_thread.run_sync(logs_direct, settings, writer))

    async def run_pipe() -> None:
        pipe.append(await anyio.to_thread.run_sync(logs_pipe, settings, writer))

    runs = [run_supervised, run_direct, run_pipe]
    for index in rounds(settings.count(5, 2), settings.budget(30, 12)):
        for run in runs[index % 3 :] + runs[: index % 3]:  # rotate who goes first
            await run()
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
            note=f"hand pipe drain {statistics.median(pipe):.3f} s, ratio to it {pipe_ratio:.2f}; "
            f"supervisor CPU {statistics.median(cpu):.2f} s",
            extra={"pipe_drain": Stats(pipe).to_json(), "supervisor_cpu_seconds": Stats(cpu).to_json()},
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
        ),
        results,
    )
