"""The benchmarks' harness: results and their table, settings and round budgets, the hand-driven
baselines' process handling, and the leftover check run after each section."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil

import supervisor as sv
from supervisor._host.proctable import marked_processes

PROGRAMS = Path(__file__).resolve().parent / "programs"
PYTHON = sys.executable
HOST = "127.0.0.1"
LAUNCH_LIMIT_SECONDS = 120.0  # no single launch (or hand-driven equivalent) may take longer than this


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
    goal_kind: str  # "ratio": value/baseline (elapsed times) <= goal; "max": value <= goal; "min": value >= goal;
    # "info": no goal
    goal: float | None  # None: shown, but no PASS/MISS (INFO)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """What the goal is compared with: the ratio of medians, or the median itself."""
        if self.goal_kind == "ratio":
            assert self.baseline is not None
            return self.value.median / self.baseline.median
        if self.goal_kind in ("max", "min"):
            return self.value.median
        return None

    @property
    def verdict(self) -> str:
        if self.goal is None or self.score is None:
            return "INFO"
        if self.goal_kind == "min":
            return "PASS" if self.score >= self.goal else "MISS"
        return "PASS" if self.score <= self.goal else "MISS"

    def goal_text(self) -> str:
        if self.goal_kind == "ratio":
            return f"ratio {self.score:.3f}" + (f" (goal <= {self.goal:g})" if self.goal is not None else "")
        if self.goal_kind == "max" and self.goal is not None:
            return f"median {fmt(self.value.median, self.unit)} (goal <= {fmt(self.goal or 0, self.unit)})"
        if self.goal_kind == "min" and self.goal is not None:
            return f"median {fmt(self.value.median, self.unit)} (goal >= {fmt(self.goal, self.unit)})"
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
    if unit == "count":
        return f"{value:g}"
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


async def hand_start_ms(argv: Sequence[str], marker: bytes = b"ready") -> float:
    """A program's own start, the baseline of a supervised one: spawn it by hand and read its pipe until
    ``marker`` (ms); it is killed afterwards."""
    with hand_processes() as hand:
        began = time.monotonic()
        read_fd, write_fd = os.pipe()
        hand.spawn(argv, stdout=write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        try:
            seen = await read_until(read_fd, marker, bytearray())
        finally:
            os.close(read_fd)
        return (seen - began) * 1000


async def read_stamp(path: Path, limit: float = 5.0) -> float:
    """The float a child wrote to ``path`` (it may write it just after we noticed readiness)."""
    with anyio.fail_after(limit):
        while not path.exists():
            await anyio.sleep(0.001)
    return float(path.read_text())


def spread(index: int, low: float, high: float) -> float:
    """A delay in [low, high) that differs from round to round, so polls meet readiness at varied phases."""
    return low + (high - low) * ((index * 0.6180339887) % 1.0)


def cpu_seconds() -> float:
    """This process's user+system CPU as psutil reports it (clock ticks: 10 ms resolution)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


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


def stop_leftovers(settings: Settings, what: str = "") -> None:
    """After a section or a whole benchmark: kill what it left (by pid) and say so."""
    left = leftovers(settings)
    if left:
        kill_leftovers(left)
        print(f"!! {what + ': ' if what else ''}processes left behind and killed: {left}", flush=True)


def summary(results: Sequence[Result]) -> str:
    rows = [("measurement", "median", "min", "max", "baseline", "goal", "score", "result")]
    for r in results:
        ratio = r.goal_kind == "ratio"
        bound = ">=" if r.goal_kind == "min" else "<="
        goal = "-" if r.goal is None else (f"<= {r.goal:g}" if ratio else f"{bound} {fmt(r.goal, r.unit)}")
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
