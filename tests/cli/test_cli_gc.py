"""``supervisor gc --older-than``: the run dirs of finished runs untouched for that long go (with --yes),
never a live run's, never while its processes are left over, and gc says how much it freed."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil

from supervisor._records.paths import default_runs_dir, index_path, write_json
from supervisor._records.prune import dir_usage
from supervisor._records.record import Summary, register_run
from supervisor._units import format_size

from ..fakerun import STUBBORN, Reaper, replica_entry, write_run
from ..helpers import PYTHON, alive, supervisor_cli

DAY = 86400.0
DEAD_PID = os.getpid() + 100000  #: a supervisor that is no longer there


def age(run_dir: Path, days: float) -> None:
    """Every file and directory of the run last changed ``days`` ago."""
    then = time.time() - days * DAY
    for root, dirs, files in os.walk(run_dir):
        for name in [*dirs, *files]:
            os.utime(os.path.join(root, name), (then, then))
    os.utime(run_dir, (then, then))


def finished_run(run_id: str, *, days: float, log_bytes: int = 1000) -> Path:
    """A run that ended ``days`` ago, cleanly, in the runs dir gc looks at (not indexed any more)."""
    root = default_runs_dir()
    run_dir = write_run(root, run_id, {"web": ([], [replica_entry("web", None, root / run_id, state="stopped")])},
                        phase="stopped")  # fmt: skip
    (run_dir / "logs" / "web.log").write_bytes(b"x" * log_bytes)
    write_json(
        run_dir / "summary.json", Summary(run_id=run_id, outcome="stopped", ended_wall_time=time.time() - days * DAY)
    )
    age(run_dir, days)
    return run_dir


def live_run(reaper: Reaper, run_id: str) -> tuple[Path, int]:
    """A run whose supervisor (a live process of ours) wrote nothing for ten days."""
    supervisor = reaper.start([PYTHON, "-c", STUBBORN])
    me = psutil.Process(supervisor.pid)
    run_dir = write_run(default_runs_dir(), run_id, {"web": ([], [])}, supervisor=(me.pid, me.create_time()))
    age(run_dir, 10)
    return run_dir, supervisor.pid


def orphaned_run(reaper: Reaper, runs_dir: Path, run_id: str) -> tuple[Path, int]:
    """A run whose supervisor died ten days ago and left a replica (that ignores SIGTERM) running."""
    orphan = reaper.start_replica(run_id, "web")
    run_dir = write_run(runs_dir, run_id, {"web": ([], [replica_entry("web", orphan, runs_dir / run_id)])})
    register_run(run_id, run_dir, supervisor_pid=DEAD_PID)
    age(run_dir, 10)
    return run_dir, orphan.pid


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its size and mtime: what a dry run must leave as it was."""
    found = {}
    for root in roots:
        for base, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                info = os.lstat(os.path.join(base, name))
                found[os.path.join(base, name)] = (info.st_size, info.st_mtime_ns)
    return found


def test_gc_older_than_lists_what_it_would_prune_and_touches_nothing(
    reaper: Reaper, runs_dir: Path, private_state_dir: Path
) -> None:
    """The dry run: the old finished runs with their size and the total; a live run and a run with
    leftovers are kept and say why; a fresh run is not mentioned; no file changes, nothing is signalled."""
    big = finished_run("run-old-big", days=10, log_bytes=300_000)
    small = finished_run("run-old-small", days=8)
    finished_run("run-fresh", days=1)
    _, supervisor = live_run(reaper, "run-live")
    _, orphan = orphaned_run(reaper, runs_dir, "run-orphaned")
    before = snapshot(private_state_dir, runs_dir)
    dry = supervisor_cli("gc", "--older-than", "7d")
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    assert re.search(rf"run run-old-big: last changed 10d00h ago, 29\d\.\d KiB: to prune {big}$", out, re.M), out
    assert f"run run-old-small: last changed 8d00h ago, {format_size(dir_usage(small).bytes)}: to prune" in out
    assert "run-live: last changed 10d00h ago, " in out and f"kept: its supervisor (pid {supervisor}) is alive" in out
    assert f"its processes are left over ({orphan}); pruned once gc has stopped them" in out
    assert "run-fresh" not in out
    total = dir_usage(big).bytes + dir_usage(small).bytes
    assert f"would free {format_size(total)} ({total:,} bytes) in 2 run dirs" in out
    assert "dry run: nothing was signalled or removed" in out
    assert snapshot(private_state_dir, runs_dir) == before
    assert alive(orphan) and alive(supervisor)


def test_gc_yes_older_than_prunes_finished_runs_and_says_how_much_it_freed(
    reaper: Reaper, runs_dir: Path, tmp_path: Path
) -> None:
    """With --yes: the orphaned run's leftovers are stopped, then its dir goes with the old finished ones
    and its index entry; the live and the fresh run stay, and so does a directory an index entry names
    that is not a run's own."""
    old = [finished_run("run-old-big", days=10, log_bytes=300_000), finished_run("run-old-small", days=8)]
    fresh = finished_run("run-fresh", days=1)
    live, supervisor = live_run(reaper, "run-live")
    orphaned, orphan = orphaned_run(reaper, runs_dir, "run-orphaned")
    precious = tmp_path / "precious"  # a damaged index entry must not make gc remove this
    write_run(tmp_path, "precious", {})
    age(precious, 30)
    register_run("run-damaged", precious, supervisor_pid=DEAD_PID)
    at_least = sum(dir_usage(path).bytes for path in [*old, orphaned])
    done = supervisor_cli("gc", "--yes", "--older-than", "7d")
    assert done.returncode == 0, done.stdout + done.stderr
    freed = re.search(r"^pruned 3 run dirs, freed (\S+ \S+) \(([\d,]+) bytes\)$", done.stdout, re.M)
    assert freed is not None, done.stdout
    assert int(freed[2].replace(",", "")) >= at_least and freed[1] == format_size(int(freed[2].replace(",", "")))
    assert not any(path.exists() for path in [*old, orphaned]) and not alive(orphan)
    assert not index_path("run-orphaned").exists()
    assert fresh.is_dir() and live.is_dir() and alive(supervisor) and (precious / "manifest.json").is_file()
    again = supervisor_cli("gc", "--older-than", "7d")
    assert "run-live" in again.stdout and "to prune" not in again.stdout


def test_gc_older_than_with_nothing_old_and_a_bad_duration() -> None:
    """Nothing to prune: no line about it (other users' runs on this host may still be listed); a duration
    gc cannot read is bad input (exit 2) before anything is done."""
    fresh = finished_run("run-fresh", days=1)
    quiet = supervisor_cli("gc", "--yes", "--older-than", "7d")
    assert quiet.returncode == 0, quiet.stderr
    assert "run-fresh" not in quiet.stdout and "pruned" not in quiet.stdout and fresh.is_dir()
    bad = supervisor_cli("gc", "--older-than", "a week")
    assert bad.returncode == 2 and "expected a duration" in bad.stderr
