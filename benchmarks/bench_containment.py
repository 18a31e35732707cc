"""12. Containment: crash -> replacement ready and teardown on a host crowded with foreign processes.

    python benchmarks/bench_containment.py [--quick] [--foreign N] [--json PATH] [--strict]   # as root

The checks that find a run's processes (the leftover check before a restart, the teardown's stop and sweep)
read the replica's ``cgroup.procs`` when the run is contained by cgroup, and scan the whole process table
(every process's environment) when it is not (``containment: marks``). The goal: with 5,000 foreign idle
processes on the host, crash -> replacement ready and teardown take at most 1.5x what they take on an idle
host. Both modes are measured, in one run, alternating:

- **idle**: the host as it is;
- **busy**: the same, plus N foreign processes (default 5,000) started here for the purpose:
  ``programs/idle_crowd.py`` starts N ``sleep`` processes, each with an environment of about 3 KB, all in
  one process group of its own (what the /proc scan reads is their environments).

Each round is one launch of a topology of two services, ``w`` (one replica, restart on-failure, backoff 0)
and ``pool`` (3 replicas), all a ``python -S`` that prints ``ready`` and idles. Once all are ready, ``w``
is SIGKILLed 3 times, each time timed from the ``kill`` to the replacement's ``Ready`` event; then the
``async with`` block is left and timed until it has exited (the teardown: stop signals in dependency order,
the sweep, "nothing of the run is left" verified). Idle and busy stretches come in ABBA order (4 cycles:
idle, busy busy, idle idle, busy busy, idle; the crowd is started for each busy stretch), the two modes
alternating within each, so that drift in the machine's load falls on both states alike. The figures are
a few milliseconds (a ``python -S`` start, mostly), so a load burst from other work shows: each stretch's
line gives the load average. Each line gives
the busy median over the idle median (goal: at most 1.5). Only cgroup2 is held to the goal by
``--strict``; marks is shown beside it, as what the process-table scan costs. A diagnostic line gives the
supervisor's own part of the restart (kill -> the replacement's ``Spawned`` event), and an INFO line the
cost of one scan, idle and busy.

One more line, first, on the idle host: what cgroup2 containment costs a run's first spawn (the run's and the
replica's cgroups made, then the spawn through the ``sh`` wrapper that enters the cgroup, to the child's
first act, a ``date`` stamp), over the same child spawned plainly just before or after (the median of
the 20 differences; goal: at most 5 ms).

The crowd is bounded (``--foreign``, at most 10,000, and only when the pid space, the process limit and
the memory leave room for it), each of its processes exits by itself after an hour at most, and it is
stopped at the end whatever happens: its stdin is closed (it SIGKILLs and reaps its children), then its
process group is SIGKILLed while its leader is not yet reaped (so the group is surely ours), then the
leader is reaped. If this script dies, the crowd sees its stdin end and does the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from harness import (
    LAUNCH_LIMIT_SECONDS,
    PROGRAMS,
    PYTHON,
    Result,
    Settings,
    Stats,
    info,
    library_version,
    report,
    stop_leftovers,
    summary,
)

import supervisor as sv
from supervisor._host.containment import ContainmentUnavailable, RunContainment
from supervisor._host.proctable import run_members

MODES = ("cgroup2", "marks")
GOAL_RATIO = 1.5
FOREIGN_DEFAULT = 5000
FOREIGN_MAX = 10000  # a shared machine: 20,000 ran (pid_max 32768), but their SIGKILL spikes the load to ~800
ENV_BYTES = 3000  # each foreign process's environment, about
CROWD_LIFETIME_SECONDS = 3600  # the foreign processes exit by themselves after this, whatever happens here
CROWD_START_LIMIT_SECONDS = 180.0
CROWD_STOP_LIMIT_SECONDS = 60.0
MEMORY_PER_PROCESS_BYTES = 512 * 1024  # asked of MemAvailable per foreign process (about 200 KB measured)
CRASHES_PER_ROUND = 3
POOL_REPLICAS = 3
EVENT_LIMIT_SECONDS = 30.0
FIRST_SPAWN_ROUNDS = 20
FIRST_SPAWN_GOAL_MS = 5.0  # "containment costs the first spawn at most a few ms"
WORKER = [PYTHON, "-S", "-c", "import time\nprint('ready', flush=True)\ntime.sleep(3600)"]


# the crowd of foreign processes


def _process_count() -> int:
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


def _room_for(count: int) -> str | None:
    """Why ``count`` more processes would not fit on this host; None when they would."""
    now = _process_count()
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    limits = {"pid_max": pid_max, "threads-max": threads_max}
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:  # root is not held to RLIMIT_NPROC
        limits["ulimit -u"] = soft
    for name, limit in limits.items():
        if now + count + 1000 > limit * 0.8:
            return f"{count} more processes beside {now} would come near {name} ({limit}; use a smaller --foreign)"
    available = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if available < count * MEMORY_PER_PROCESS_BYTES:
        wanted = count * MEMORY_PER_PROCESS_BYTES >> 20
        return f"{count} processes want about {wanted} MiB, {available >> 20} available (use a smaller --foreign)"
    return None


@contextlib.contextmanager
def crowd(count: int) -> Iterator[None]:
    """``count`` foreign idle processes on the host while the block runs; all gone after it."""
    argv = [PYTHON, "-S", str(PROGRAMS / "idle_crowd.py"), str(count), str(ENV_BYTES), str(CROWD_LIFETIME_SECONDS)]
    began = time.monotonic()
    helper = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert helper.stdout is not None
        line = _read_line(helper.stdout.fileno(), time.monotonic() + CROWD_START_LIMIT_SECONDS)
        if line.split() != [b"ready", str(count).encode()]:
            raise RuntimeError(f"the crowd did not start: {line!r}")
        info(f"{count} foreign processes started in {time.monotonic() - began:.1f} s ({_process_count()} on the host)")
        yield
    finally:
        began = time.monotonic()
        _stop_crowd(helper)
        info(f"foreign processes stopped in {time.monotonic() - began:.1f} s ({_process_count()} on the host)")


def _read_line(fd: int, deadline: float) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no line from the crowd in {CROWD_START_LIMIT_SECONDS:g} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        line += chunk
    return line


def _stop_crowd(helper: subprocess.Popen[bytes]) -> None:
    """Close its stdin (it kills and reaps its children), wait (bounded) until it has exited but do not
    reap it yet, SIGKILL its process group (its pid, pinned while unreaped), then reap it."""
    assert helper.stdin is not None and helper.stdout is not None
    with contextlib.suppress(OSError):
        helper.stdin.close()
    deadline = time.monotonic() + CROWD_STOP_LIMIT_SECONDS
    while time.monotonic() < deadline and _state(helper.pid) not in (b"Z", b""):
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(helper.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        helper.wait(timeout=CROWD_STOP_LIMIT_SECONDS)
    helper.stdout.close()


def _state(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return b""


# one round: a launch, crashes, the teardown


def _topology(mode: str) -> sv.Topology:
    restart = sv.RestartPolicy(
        policy="on-failure",
        max_restarts=1000,
        backoff=sv.Backoff(initial_seconds=0, factor=1, jitter=0),
    )
    return sv.Topology(
        name="bench-containment",
        containment=mode,
        services=[
            sv.Service(name="w", command=WORKER, ready=sv.LogCheck("^ready$"), restart=restart),
            sv.Service(name="pool", command=WORKER, replicas=POOL_REPLICAS, ready=sv.LogCheck("^ready$")),
        ],
    )


@dataclass
class Round:
    """One launch's figures (ms): each crash to the replacement's ``Spawned`` and ``Ready``, the teardown."""

    spawned: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    teardown: float = 0.0


async def one_round(settings: Settings, mode: str, crashes: int) -> Round:
    """One launch in ``mode``: ``crashes`` SIGKILLs of ``w``, each until its replacement is ready, then the
    teardown."""
    figures = Round()
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with sv.launch(_topology(mode), runs_dir=settings.runs_dir) as group:
            manifest = json.loads((group.run_dir / "manifest.json").read_text())
            if manifest.get("containment") != mode:
                raise RuntimeError(f"asked for containment {mode}, the run has {manifest.get('containment')}")
            pid = group.replica("w").pid
            events = group.events()
            for _ in range(crashes):
                assert pid is not None
                began = time.monotonic()
                os.kill(pid, signal.SIGKILL)  # our own child: the supervisor runs in this process
                with anyio.fail_after(EVENT_LIMIT_SECONDS):
                    async for event in events:
                        if isinstance(event, sv.Failed):
                            raise RuntimeError(f"{event.replica} failed: {event.reason}")
                        if isinstance(event, sv.Spawned) and event.replica == "w":
                            figures.spawned.append((event.monotonic - began) * 1000)
                        if isinstance(event, sv.Ready) and event.replica == "w":
                            figures.ready.append((event.monotonic - began) * 1000)
                            pid = event.pid
                            break
            leaving = time.monotonic()
        left = time.monotonic()
    figures.teardown = (left - leaving) * 1000
    return figures


def _first_act_ms(argv: list[str], stamp: Path) -> float:
    """ms from just before the ``Popen`` to the wall-clock time the child stamps as its first act."""
    began = time.time()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + EVENT_LIMIT_SECONDS
        while not stamp.exists() and time.monotonic() < deadline:
            time.sleep(0.0002)
        return (float(stamp.read_text()) - began) * 1000
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # not reaped yet: the group is surely ours
        child.wait()
        stamp.unlink(missing_ok=True)


def first_spawn(settings: Settings, rounds: int) -> tuple[list[float], list[float]]:
    """What cgroup2 containment adds before a run's first child runs, against a plain spawn (ms each round):
    the run's and the replica's cgroups made (``RunContainment.open``, ``replica``) plus the spawn through
    the enter wrapper, to the child's first act; the plain spawn of the same child alternates with it."""
    stamp = settings.work / "first-act"
    child = ["/bin/sh", "-c", f"date +%s.%N > {stamp}.tmp && mv {stamp}.tmp {stamp}"]
    contained: list[float] = []
    plain: list[float] = []
    for index in range(rounds):
        if index % 2:
            plain.append(_first_act_ms(child, stamp))
        began = time.perf_counter()
        containment = RunContainment.open(f"bench-first-spawn-{os.getpid()}-{index}", "cgroup2")
        try:
            argv = containment.enter("w", child, os.environ, None)
            made_ms = (time.perf_counter() - began) * 1000
            contained.append(made_ms + _first_act_ms(argv, stamp))
        finally:
            if not containment.empty_and_remove():
                raise RuntimeError(f"cgroup {containment.path} left behind")
        if not index % 2:
            plain.append(_first_act_ms(child, stamp))
    return contained, plain


def scan_ms() -> float:
    """One pass over the process table as mode marks makes it (every process's stat and environment)."""
    began = time.perf_counter()
    run_members(None)
    return (time.perf_counter() - began) * 1000


# the run


STATES = ("idle", "busy")
FIGURES = {  # key: title
    "crash_ready": "crash -> replacement ready",
    "teardown": "teardown (block exit)",
    "crash_spawned": "crash -> replacement spawned",
}


class Figures:
    """Every round's figures (ms) by figure, mode and state; the scans by state."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], list[float]] = {
            (key, mode, state): [] for key in FIGURES for mode in MODES for state in STATES
        }
        self.scan: dict[str, list[float]] = {state: [] for state in STATES}

    def add(self, mode: str, state: str, figures: Round) -> None:
        self.values["crash_ready", mode, state].extend(figures.ready)
        self.values["crash_spawned", mode, state].extend(figures.spawned)
        self.values["teardown", mode, state].append(figures.teardown)


async def stretch(settings: Settings, figures: Figures, state: str, rounds: int) -> None:
    """``rounds`` rounds of each mode, alternating which comes first; prints the stretch's own medians."""
    own = Figures()
    for index in range(rounds):
        for mode in MODES if index % 2 == 0 else tuple(reversed(MODES)):
            result = await one_round(settings, mode, CRASHES_PER_ROUND)
            own.add(mode, state, result)
            figures.add(mode, state, result)
        figures.scan[state].append(scan_ms())
    for mode in MODES:
        medians = ", ".join(
            f"{title} {statistics.median(own.values[key, mode, state]):.1f} ms" for key, title in FIGURES.items()
        )
        info(f"{state}, {mode} ({rounds} rounds, load {os.getloadavg()[0]:.1f}): {medians}")


def stretches(cycles: int) -> list[tuple[str, int]]:
    """The states in ABBA order (idle busy, busy idle, ...), adjacent equal ones merged: (state, cycles)."""
    order = [state for cycle in range(cycles) for state in (("idle", "busy") if cycle % 2 == 0 else ("busy", "idle"))]
    merged: list[tuple[str, int]] = []
    for state in order:
        if merged and merged[-1][0] == state:
            merged[-1] = (state, merged[-1][1] + 1)
        else:
            merged.append((state, 1))
    return merged


def _note(key: str, mode: str) -> str:
    if key == "crash_spawned":
        return "diagnostic: the supervisor's part (kill -> Spawned event), without the child's own start"
    return "" if mode == "cgroup2" else "not held to the goal: the /proc scan's cost"


async def main_async(settings: Settings, foreign: int, cycles: int, rounds: int) -> list[Result]:
    results: list[Result] = []
    contained, plain = first_spawn(settings, FIRST_SPAWN_ROUNDS)
    report(
        Result(
            key="containment_first_spawn",
            title="12. first spawn: cgroup2 (cgroups made, enter wrapper) over a plain spawn",
            unit="ms",
            value=Stats([c - p for c, p in zip(contained, plain, strict=True)]),  # each with its neighbour
            baseline=Stats(plain),
            baseline_label="plain Popen to the child's first act",
            goal_kind="max",
            goal=FIRST_SPAWN_GOAL_MS,
            note=f"contained: median {statistics.median(contained):.2f} ms",
        ),
        results,
    )
    for mode in MODES:  # unmeasured: lazy imports, the page cache
        await one_round(settings, mode, 1)
    figures = Figures()
    for state, count in stretches(cycles):
        if state == "idle":
            await stretch(settings, figures, state, rounds * count)
        else:
            with crowd(foreign):
                await stretch(settings, figures, state, rounds * count)
    label = f"{foreign:,} foreign"
    for key, title in FIGURES.items():
        for mode in MODES:
            report(
                Result(
                    key=f"containment_{key}_{mode}",
                    title=f"12. {title}, {mode}, {label} / idle",
                    unit="ms",
                    value=Stats(figures.values[key, mode, "busy"]),
                    baseline=Stats(figures.values[key, mode, "idle"]),
                    baseline_label="idle host",
                    goal_kind="ratio",
                    goal=GOAL_RATIO,
                    note=_note(key, mode),
                ),
                results,
            )
    report(
        Result(
            key="containment_proc_scan",
            title=f"12. one /proc scan (mode marks), {label}",
            unit="ms",
            value=Stats(figures.scan["busy"]),
            baseline=Stats(figures.scan["idle"]),
            baseline_label="idle host",
            goal_kind="info",
            goal=None,
        ),
        results,
    )
    return results


def _no_cgroup2() -> str | None:
    """Why mode cgroup2 cannot be had here (not root, no delegation...); None when it can."""
    try:
        probe = RunContainment.open(f"bench-check-{os.getpid()}", "cgroup2")
    except ContainmentUnavailable as exc:
        return str(exc)
    probe.remove()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 cycles of 2 rounds per state and mode")
    parser.add_argument("--foreign", type=int, default=FOREIGN_DEFAULT, help="foreign processes (default 5000)")
    parser.add_argument("--cycles", type=int, help="idle/busy cycles, in ABBA order (default 4; 2 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds per state, mode and cycle (default 4; 2 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when cgroup2 misses a goal")
    args = parser.parse_args(argv)
    if not 1 <= args.foreign <= FOREIGN_MAX:
        parser.error(f"--foreign must be 1 to {FOREIGN_MAX}")
    cycles = args.cycles or (2 if args.quick else 4)
    rounds = args.rounds or (2 if args.quick else 4)
    if not 1 <= cycles <= 10 or not 1 <= rounds <= 20:
        parser.error("--cycles must be 1 to 10 and --rounds 1 to 20")
    why = _room_for(args.foreign) or _no_cgroup2()
    if why is not None:
        print(f"bench_containment: not started: {why}", file=sys.stderr)
        return 2
    system = f"{platform.system()} {platform.release()}"
    print(f"topovisor bench_containment: python {platform.python_version()}, {system}, {os.cpu_count()} CPUs")
    print(f"library: {library_version()}")
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}", flush=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="topovisor-bench-") as work:
        settings = Settings(quick=args.quick, repeats=None, work=Path(work))
        try:
            results = anyio.run(main_async, settings, args.foreign, cycles, rounds, backend="asyncio")
        except KeyboardInterrupt:
            print("\ninterrupted", flush=True)
            return 130
        finally:
            stop_leftovers(settings)
    print(f"\n{summary(results)}")
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}; {time.monotonic() - began:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_json() for r in results], indent=2))
    held = {"containment_crash_ready_cgroup2", "containment_teardown_cgroup2", "containment_first_spawn"}
    missed = [r for r in results if r.key in held and r.verdict == "MISS"]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
