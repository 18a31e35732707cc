"""Core benchmarks of topovisor (package ``supervisor``), each against a baseline measured in the same run.

    python benchmarks/bench_core.py [--quick] [--json PATH] [--only NAME ...] [--repeats N]

Every figure is the median of several runs (min and max shown too). Supervisor runs and their hand-driven
baselines alternate, so both see the same machine state. Everything talks to 127.0.0.1 only, lives in a
temporary directory, and every process started here is stopped before the script exits. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import json
import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import psutil

import supervisor as sv
from supervisor.proctable import marked_processes

PROGRAMS = Path(__file__).resolve().parent / "programs"
PYTHON = sys.executable
HOST = "127.0.0.1"
LAUNCH_LIMIT_SECONDS = 120.0  # no single launch (or hand-driven equivalent) may take longer than this

# ---------------------------------------------------------------------------------------------------------
# results


@dataclass
class Stats:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "values": self.values}


@dataclass
class Result:
    """One measurement line: the supervisor's figure, the same-run baseline, and the goal."""

    key: str
    title: str
    unit: str
    value: Stats
    baseline: Stats | None
    baseline_label: str
    goal_kind: str  # "ratio": value/baseline (elapsed times) <= goal; "max": value <= goal; "info": no goal
    goal: float | None  # None: shown, but no PASS/MISS (INFO)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """What the goal is compared with: the ratio of medians, or the median itself."""
        if self.goal_kind == "ratio":
            assert self.baseline is not None
            return self.value.median / self.baseline.median
        if self.goal_kind == "max":
            return self.value.median
        return None

    @property
    def verdict(self) -> str:
        if self.goal is None or self.score is None:
            return "INFO"
        return "PASS" if self.score <= self.goal else "MISS"

    def goal_text(self) -> str:
        if self.goal_kind == "ratio":
            return f"ratio {self.score:.3f}" + (f" (goal <= {self.goal:g})" if self.goal is not None else "")
        if self.goal_kind == "max" and self.goal is not None:
            return f"median {fmt(self.value.median, self.unit)} (goal <= {fmt(self.goal or 0, self.unit)})"
        return "no goal"

    def line(self) -> str:
        base = ""
        if self.baseline is not None:
            base = f" | {self.baseline_label} {fmt_stats(self.baseline, self.unit)}"
        note = f"  [{self.note}]" if self.note else ""
        figure = fmt_stats(self.value, self.unit)
        return f"{self.title}: {figure}{base} | {self.goal_text()} {self.verdict}{note}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "value": self.value.to_json(),
            "baseline": self.baseline.to_json() if self.baseline else None,
            "baseline_label": self.baseline_label,
            "goal_kind": self.goal_kind,
            "goal": self.goal,
            "score": self.score,
            "verdict": self.verdict,
            "note": self.note,
            "extra": self.extra,
        }


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.1f} {unit}"


def fmt_stats(stats: Stats, unit: str) -> str:
    if len(stats.values) == 1:
        return fmt(stats.median, unit)
    low, high = fmt(stats.low, unit), fmt(stats.high, unit)
    return f"{fmt(stats.median, unit)} (min {low}, max {high}, n={len(stats.values)})"


def report(result: Result, results: list[Result]) -> None:
    results.append(result)
    print(result.line(), flush=True)


def info(text: str) -> None:
    print(f"    {text}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# settings


@dataclass
class Settings:
    quick: bool
    repeats: int | None  # overrides every section's count
    work: Path  # temporary directory of this run

    def count(self, full: int, quick: int) -> int:
        return self.repeats if self.repeats is not None else (quick if self.quick else full)

    def budget(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    @property
    def runs_dir(self) -> Path:
        return self.work / "runs"


def rounds(count: int, budget_seconds: float, minimum: int = 1) -> Iterator[int]:
    """Repeat ``count`` times, but stop early (after ``minimum``) once ``budget_seconds`` are spent."""
    deadline = time.monotonic() + budget_seconds
    for index in range(count):
        if index >= minimum and time.monotonic() > deadline:
            info(f"(time budget of {budget_seconds:g}s spent: {index} of {count} rounds)")
            return
        yield index


def child_env() -> dict[str, str]:
    """The environment the supervisor gives a child, minus its two marks: same for hand-driven runs."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ---------------------------------------------------------------------------------------------------------
# hand-driven process handling (the baselines)


class HandProcesses:
    """Processes started by hand: each in its own session; all SIGKILLed and reaped on close."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: Sequence[str], *, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
        )
        self.procs.append(proc)
        if proc.stdout is not None:
            os.set_blocking(proc.stdout.fileno(), False)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


@contextlib.contextmanager
def hand_processes() -> Iterator[HandProcesses]:
    hand = HandProcesses()
    try:
        yield hand
    finally:
        hand.close()


async def read_until(fd: int, marker: bytes, buffer: bytearray) -> float:
    """Read a non-blocking pipe until ``marker`` appears; return ``time.monotonic()`` at that moment."""
    while marker not in buffer:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        if not chunk:
            raise RuntimeError(f"end of output before {marker!r}: {bytes(buffer[-300:])!r}")
        buffer += chunk
    return time.monotonic()


async def read_stamp(path: Path, limit: float = 5.0) -> float:
    """The float a child wrote to ``path`` (it may write it just after we noticed readiness)."""
    with anyio.fail_after(limit):
        while not path.exists():
            await anyio.sleep(0.001)
    return float(path.read_text())


def spread(index: int, low: float, high: float) -> float:
    """A delay in [low, high) that differs from round to round, so polls meet readiness at varied phases."""
    return low + (high - low) * ((index * 0.6180339887) % 1.0)


# ---------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------
# 2. readiness notice latency


@dataclass
class Variant:
    key: str
    title: str
    mode: str  # 503 | late | log
    announce: bool
    goal: float | None  # ms
    health_seconds: float = 0.0  # how long each GET /health takes (a busy server)


VARIANTS = [
    Variant("ready_log", "2. ready latency, log probe", "log", True, 2.0),
    Variant("ready_http_503_announced", "2. ready latency, http 503->200, line printed", "503", True, 10.0),
    Variant("ready_http_503_silent", "2. ready latency, http 503->200, silent", "503", False, 10.0),
    Variant("ready_http_late_announced", "2. ready latency, http bind-late, line printed", "late", True, 10.0),
    Variant("ready_http_late_silent", "2. ready latency, http bind-late, silent", "late", False, 10.0),
    # diagnostic: output that arrives while a probe attempt is in flight should still wake the probe
    Variant("ready_http_503_slow", "2. ready latency, 503->200, printed, 30ms /health", "503", True, None, 0.03),
]


def server_argv(mode: str, delay: float, stamp: Path, port: str, *, announce: bool, health: float = 0.0) -> list[str]:
    argv = [PYTHON, "-S", str(PROGRAMS / "ready_server.py"), "--mode", mode, "--delay", f"{delay:.4f}"]
    argv += ["--stamp", str(stamp), "--port", port, "--health-seconds", str(health)]
    return argv + (["--announce"] if announce else [])


async def latency_supervised(settings: Settings, variant: Variant, delay: float, stamp: Path) -> float:
    http = sv.HttpCheck("http://127.0.0.1:{port}/health")
    check: sv.Check = sv.LogCheck("^READY$") if variant.mode == "log" else http
    service = sv.Service(
        name="server",
        command=server_argv(
            variant.mode, delay, stamp, "{port}", announce=variant.announce, health=variant.health_seconds
        ),
        ports=["port"],
        ready=sv.Probe(check, timeout_seconds=60),
    )
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with sv.launch(sv.Topology(name="bench-ready", services=[service]), runs_dir=settings.runs_dir):
            returned = time.monotonic()
            return (returned - await read_stamp(stamp)) * 1000


async def http_ok(port: int) -> bool:
    """One raw GET /health; true on a 200."""
    try:
        async with await anyio.connect_tcp(HOST, port) as stream:
            await stream.send(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                head += await stream.receive(256)
            return head.split(b" ", 2)[1] == b"200"
    except (OSError, anyio.EndOfStream, IndexError):
        return False


async def latency_hand(mode: str, delay: float, stamp: Path) -> float:
    """The floor: read the pipe directly (log), or a raw GET every millisecond (http)."""
    port = free_port()
    with hand_processes() as hand, anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        proc = hand.spawn(server_argv(mode, delay, stamp, str(port), announce=mode == "log"))
        assert proc.stdout is not None
        if mode == "log":
            seen = await read_until(proc.stdout.fileno(), b"READY\n", bytearray())
        else:
            while not await http_ok(port):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                await anyio.sleep(0.001)
            seen = time.monotonic()
        return (seen - await read_stamp(stamp)) * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def bench_readiness(settings: Settings, results: list[Result]) -> None:
    count = settings.count(7, 3)
    info("servers become ready 0.3-0.5 s after start (varied per round); latency = launch return - ready stamp")
    hand: dict[str, list[float]] = {"log": [], "503": [], "late": []}
    supervised: dict[str, list[float]] = {v.key: [] for v in VARIANTS}
    stamps = settings.work / "stamps"
    stamps.mkdir(exist_ok=True)
    serial = 0

    def next_stamp() -> Path:
        nonlocal serial
        serial += 1
        return stamps / f"ready-{serial}"

    for index in rounds(count, settings.budget(90, 35)):
        delay = spread(index, 0.3, 0.5)
        for mode in hand:
            hand[mode].append(await latency_hand(mode, delay, next_stamp()))
        for variant in VARIANTS:
            supervised[variant.key].append(await latency_supervised(settings, variant, delay, next_stamp()))
    for variant in VARIANTS:
        floor = "pipe read" if variant.mode == "log" else "raw 1ms poll"
        if variant.health_seconds:
            info(
                f"(next line: each GET /health takes {variant.health_seconds * 1000:.0f} ms, so about that is "
                "expected; a max near the 100 ms poll period means a ready line was missed)"
            )
        report(
            Result(
                key=variant.key,
                title=variant.title,
                unit="ms",
                value=Stats(supervised[variant.key]),
                baseline=None if variant.health_seconds else Stats(hand[variant.mode]),
                baseline_label=f"hand {floor}",
                goal_kind="max" if variant.goal is not None else "info",
                goal=variant.goal,
            ),
            results,
        )


# ---------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------
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


def cpu_seconds() -> float:
    """This process's user+system CPU as psutil reports it (clock ticks: 10 ms resolution)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


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


# ---------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------
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
    with hand_processes() as hand:
        began = time.monotonic()
        read_fd, write_fd = os.pipe()
        hand.spawn([sys.executable, "-c", CRASHER, "-"], stdout=write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        try:
            seen = await read_until(read_fd, b"ready", bytearray())
        finally:
            os.close(read_fd)
        return (seen - began) * 1000


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


# ---------------------------------------------------------------------------------------------------------
# driver

SECTIONS: dict[str, Callable[[Settings, list[Result]], Awaitable[None]]] = {
    "dag": bench_dag,
    "ready": bench_readiness,
    "teardown": bench_teardown,
    "logs": bench_logs,
    "replicas": bench_replicas,
    "mixed": bench_mixed,
    "restart": bench_restart,
}


def leftovers(settings: Settings) -> list[int]:
    """Processes this script started that are still alive: our children, and anything of our runs."""
    pids = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    runs = settings.runs_dir
    for run in runs.iterdir() if runs.is_dir() else ():
        pids.update(marked_processes(run.name))
    return sorted(pids)


def kill_leftovers(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


def summary(results: Sequence[Result]) -> str:
    rows = [("measurement", "median", "min", "max", "baseline", "goal", "score", "result")]
    for r in results:
        ratio = r.goal_kind == "ratio"
        goal = "-" if r.goal is None else (f"<= {r.goal:g}" if ratio else f"<= {fmt(r.goal, r.unit)}")
        score = "-" if r.score is None else (f"{r.score:.3f}" if ratio else fmt(r.score, r.unit))
        rows.append(
            (r.title, fmt(r.value.median, r.unit), fmt(r.value.low, r.unit), fmt(r.value.high, r.unit),
             fmt(r.baseline.median, r.unit) if r.baseline else "-", goal, score, r.verdict)
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def library_version() -> str:
    """Where ``supervisor`` was imported from, and the git commit there (with a mark for local edits)."""
    package = Path(sv.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        edited = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, edited = "", ""
    if not commit:
        return str(package)
    return f"{package} at {commit}" + (" with uncommitted changes" if edited else "")


async def warm_up(settings: Settings) -> None:
    """One unmeasured launch with a log and an http probe: lazy imports (httpx included) happen here."""
    stamp = settings.work / "warm-up-stamp"
    services = [
        sv.Service(name="log", command=dag_argv(0.0), ready=sv.LogCheck("^ready$")),
        sv.Service(
            name="http",
            command=server_argv("503", 0.05, stamp, "{port}", announce=False),
            ports=["port"],
            ready=sv.HttpCheck("http://127.0.0.1:{port}/health"),
        ),
    ]
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with sv.launch(sv.Topology(name="bench-warm-up", services=services), runs_dir=settings.runs_dir):
            pass


async def main_async(settings: Settings, only: Sequence[str]) -> list[Result]:
    results: list[Result] = []
    await warm_up(settings)
    for name, section in SECTIONS.items():
        if only and name not in only:
            continue
        began = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            await section(settings, results)
        finally:
            left = leftovers(settings)
            if left:
                kill_leftovers(left)
                print(f"!! {name}: processes left behind and killed: {left}", flush=True)
        info(f"({time.monotonic() - began:.1f} s)")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about a minute in all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), default=[], help="run only these sections")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a goal is missed")
    parser.add_argument("--repeats", type=int, help="rounds per section (overrides --quick's and the default)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    cpus = os.cpu_count()
    system = f"{platform.system()} {platform.release()}"
    mode = "quick" if args.quick else "full"
    print(f"topovisor bench_core: python {platform.python_version()}, {system}, {cpus} CPUs, {mode}", flush=True)
    print(f"library: {library_version()}", flush=True)
    load_before = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load_before:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="topovisor-bench-") as work:
        settings = Settings(quick=args.quick, repeats=args.repeats, work=Path(work))
        try:
            results = anyio.run(main_async, settings, args.only, backend="asyncio")
        except KeyboardInterrupt:
            print("\ninterrupted", flush=True)
            return 130
        finally:
            left = leftovers(settings)
            if left:
                kill_leftovers(left)
                print(f"!! processes left behind and killed: {left}", flush=True)
    elapsed = time.monotonic() - began
    load_after = os.getloadavg()[0]
    loads = f"load average {load_before:.2f} -> {load_after:.2f}"
    print(f"\nsummary ({elapsed:.0f} s in all, {loads})\n" + summary(results), flush=True)
    if args.json:
        document = {
            "library": library_version(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": cpus,
            "quick": args.quick,
            "elapsed_seconds": elapsed,
            "load_average": [load_before, load_after],
            "results": [r.to_json() for r in results],
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    misses = [r.key for r in results if r.verdict == "MISS"]
    return 1 if misses and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
