"""One small watchdog process per run: when the supervisor dies, for any reason, the run dies with it.

The supervisor starts ``python -m supervisor._host.watchdog --run-id ID --run-dir DIR`` with a pipe on its
stdin whose write end only the supervisor holds (close-on-exec, and closed in forked children), then
writes one ``track`` line per replica leader it spawns. The kernel closes that write end whenever the
supervisor exits, SIGKILL included, so end-of-file on stdin *is* the death notice: no polling, no
timers. A supervisor that finished its own verified teardown writes ``bye`` first and the watchdog
exits quietly. Otherwise it sweeps: each tracked process group (only while its leader's create time
still matches, or a process of the run is still in it) and every process carrying the run's mark gets
its stop signal, then SIGKILL after min(grace, 3 s), then re-scans until nothing is left (10 s at most),
appends one ``watchdog_sweep`` line to ``events.jsonl`` and, if the supervisor wrote none, a
``summary.json`` with outcome ``supervisor-died`` (``_records.died``). A Slurm allocation the run made
(``slurm_job J NAME``) is cancelled first: Slurm ends its tasks on every node, which no local scan sees.

Why this and not the alternatives:

- ``PR_SET_PDEATHSIG`` per child needs ``preexec_fn``, which makes subprocess fork instead of vfork
  (slow for a large supervisor) and covers only direct children: grandchildren, ``setsid`` ones and
  re-parented daemons escape, and it fires on the death of the spawning *thread*, not the process.
- A Python nanny per replica costs 35 to 50 ms of start and ~10 MB each: too much at 200 replicas.
  One watchdog per run costs one interpreter (~15 MB) and nothing per replica but a line on a pipe.

A run contained by cgroup (``cgroup PATH`` lines) is swept by its cgroups first: each replica's members
get its stop signal, then the tree is killed (``cgroup.kill`` or freeze + SIGKILL) and removed, whatever
its processes did to their environment or process group. Without a cgroup it does not cover a process that
scrubbed ``TOPOVISOR_RUN_ID`` from its environment *and* left its replica's process group (the mark and the
group are the only ways to recognise it then). Nor, either way, a watchdog killed together with the
supervisor (``kill -9`` of both, an OOM kill of the session, a reboot). The run record
stays on disk for those: ``supervisor gc`` finds and stops what is left.

The watchdog does not carry the run mark (the client scrubs it from its environment), lives in its own
session (a terminal's Ctrl-C does not reach it), ignores SIGINT and SIGHUP, and never signals itself or
its parent. It imports only the standard library, psutil, ``supervisor._host.proctable`` and the events writer,
never anyio, so it starts fast (a test keeps it so); psutil and the rest load only when it sweeps, and the
supervisor's side of this module (spawn, track) needs none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .._marks import REPLICA_ENV, RUN_ID_ENV

if TYPE_CHECKING:  # the sweep loads them when it runs: the supervisor's side (spawn, track) needs neither
    from .containment import RunContainment
    from .proctable import Member

__all__ = ["SWEEP_EVENT", "Watchdog", "main"]

SWEEP_EVENT = "watchdog_sweep"
_GRACE_CAP_SECONDS = 3.0  #: the supervisor is gone: nobody waits for a long, polite shutdown
_KILL_BOUND_SECONDS = 10.0  #: after the grace: SIGKILL and re-scan until nothing is left, at most this long
_POLL_SECONDS = 0.01
_CLOSE_WAIT_SECONDS = 20.0  #: a sweep takes at most grace cap + kill bound


# ----- client: lives in the supervisor ---------------------------------------------------------------
_instances: weakref.WeakSet[Watchdog] = weakref.WeakSet()


def _forget_in_forked_child() -> None:
    """A forked child (multiprocessing, os.fork) must not hold the write end: the EOF would never come."""
    for watchdog in list(_instances):
        watchdog._forget()


os.register_at_fork(after_in_child=_forget_in_forked_child)


class Watchdog:
    """The supervisor's end of a run's watchdog: ``track`` each replica leader, ``close`` at the end."""

    def __init__(self, popen: subprocess.Popen[bytes], write_fd: int) -> None:
        self._popen = popen
        self._fd: int | None = write_fd
        _instances.add(self)

    @classmethod
    def spawn(cls, run_id: str, run_dir: Path) -> Watchdog:
        """Start the watchdog of ``run_id``; its messages go to ``<run_dir>/watchdog.log``."""
        from .._records.paths import open_private, private_dirs

        private_dirs(run_dir)
        env = {k: v for k, v in os.environ.items() if k not in (RUN_ID_ENV, REPLICA_ENV)}
        root = str(Path(__file__).resolve().parent.parent)  # the package we run from, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "supervisor._host.watchdog", "--run-id", run_id, "--run-dir", str(run_dir)]
        read_fd, write_fd = os.pipe()  # both close-on-exec: replicas never inherit the write end
        try:
            with os.fdopen(open_private(run_dir / "watchdog.log"), "ab") as log:
                popen = subprocess.Popen(
                    argv,
                    stdin=read_fd,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                    cwd="/",
                    start_new_session=True,
                    close_fds=True,
                )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        return cls(popen, write_fd)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def alive(self) -> bool:
        """The watchdog runs and still listens to us."""
        return self._fd is not None and self._popen.poll() is None

    def track(
        self,
        pid: int,
        create_time: float,
        pgid: int,
        stop_signal: str,
        grace_seconds: float,
        replica: str | None = None,
    ) -> None:
        """Remember a replica leader; never raises once the watchdog is gone (``alive`` tells)."""
        name = signal.Signals[stop_signal if stop_signal.startswith("SIG") else f"SIG{stop_signal}"].name
        fields = ["track", str(pid), repr(float(create_time)), str(pgid), name, repr(float(grace_seconds))]
        self._send(" ".join([*fields, replica] if replica else fields))

    async def wait_exit(self) -> None:
        """Return when the watchdog process has exited (pidfd where the kernel has it, else a slow poll)."""
        import anyio  # only the supervisor side needs it; the watchdog program starts without it

        pidfd = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(self._popen.pid)
        try:
            if pidfd is not None:
                await anyio.wait_readable(pidfd)
            while self._popen.poll() is None:
                await anyio.sleep(0.5)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def contain(self, containment: RunContainment) -> None:
        """The run's cgroups: swept first, whatever their processes did to their environment or group."""
        if containment.path is not None:
            for path in (containment.path, *containment.extras.values()):
                self._send(f"cgroup {path}")

    def cancel_job_on_death(self, job_id: str, name: str) -> None:
        """A Slurm allocation we made (named ``name``): cancelled if we die without saying ``bye``."""
        self._send(f"slurm_job {job_id} {name}".rstrip())

    def untrack(self, pid: int) -> None:
        """Forget a leader that exited (a restarted replica gets a new one)."""
        self._send(f"untrack {pid}")

    def close(self, clean: bool, *, timeout_seconds: float = _CLOSE_WAIT_SECONDS) -> int | None:
        """End the watchdog: ``clean`` means our own teardown verified that nothing is left, so it exits
        without sweeping; otherwise it sweeps now. Waits for it (bounded) and returns its exit code."""
        self._send("bye" if clean else "sweep")  # "sweep": we live, and write the summary ourselves
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        _instances.discard(self)
        try:
            return self._popen.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self._popen.kill()  # our own child, by pid; a sweep stuck past its bounds helps nobody
            return self._popen.wait(5.0)

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, (line + "\n").encode())  # < PIPE_BUF: one atomic write
        except OSError:
            self._forget()

    def _forget(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        return f"<Watchdog pid={self.pid} {'alive' if self.alive else 'gone'}>"


# ----- the watchdog process --------------------------------------------------------------------------
class _Leader(NamedTuple):
    pid: int
    create_time: float
    pgid: int
    stop_signal: signal.Signals
    grace_seconds: float
    replica: str | None


class _Sweep(NamedTuple):
    killed: list[int]
    survivors: list[int]
    groups: list[int]
    seconds: float


class _Commands(NamedTuple):
    leaders: dict[int, _Leader]
    clean: bool  #: the last word was ``bye``
    jobs: dict[str, str]  #: Slurm job id -> its name, to cancel
    asked: bool  #: the supervisor asked for the sweep (``sweep``: it lives) rather than died
    cgroups: list[Path]  #: the run's cgroups, the first the one that contains it


def _read_commands(lines: Iterable[bytes]) -> _Commands:
    """Until EOF: what the supervisor told us."""
    leaders: dict[int, _Leader] = {}
    clean = asked = False
    jobs: dict[str, str] = {}
    cgroups: list[Path] = []
    for raw in lines:
        text = raw.decode(errors="replace")
        words = text.split()
        try:
            if words[:1] == ["cgroup"] and len(words) >= 2:
                cgroups.append(Path(text.rstrip("\n").split(" ", 1)[1]))
            elif words[:1] == ["track"] and len(words) >= 6:
                pid, pgid = int(words[1]), int(words[3])
                replica = words[6] if len(words) > 6 else None
                leaders[pid] = _Leader(pid, float(words[2]), pgid, signal.Signals[words[4]], float(words[5]), replica)
                clean = False
            elif words[:1] == ["untrack"] and len(words) == 2:
                leaders.pop(int(words[1]), None)
            elif words[:1] == ["slurm_job"] and len(words) in (2, 3) and words[1].isdigit():
                jobs[words[1]] = words[2] if len(words) == 3 else ""
            elif words == ["bye"]:
                clean = True
            elif words == ["sweep"]:
                asked = True
            elif words:
                print(f"watchdog: ignored {raw!r}", file=sys.stderr, flush=True)
        except (ValueError, KeyError):
            print(f"watchdog: bad command {raw!r}", file=sys.stderr, flush=True)
    return _Commands(leaders, clean, jobs, asked, cgroups)


def _cancel_jobs(jobs: dict[str, str]) -> None:
    """``scancel`` each allocation we made: Slurm ends its tasks on every node (SLURM_CONF is inherited)."""
    for job, name in jobs.items():
        try:
            argv = ["scancel", *(["--name", name] if name else []), job]
            subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"watchdog: scancel {job}: {exc}", file=sys.stderr, flush=True)


def _ours(
    members: dict[int, Member], run_id: str, leaders: dict[int, _Leader], trusted: set[int], seen: set[int]
) -> tuple[dict[int, _Leader], list[Member]]:
    """The process groups we may signal, and every live process of the run.

    A tracked group counts while its leader is the process we were told about, a marked process is in it,
    or it holds a process we already saw in this sweep: never a group id the kernel handed to someone else.
    It also counts when its leader is gone and no live process has the group's id as its pid: a leader is
    tracked until the supervisor reaps it, so it was still pinned (a zombie) when the supervisor died, and
    the kernel hands out no pid that is still some process group's id; the members left (an ``env -i``
    child that outlived its leader) are the group's own.
    """
    from .proctable import matching_process

    marked_groups = {m.pgid for m in members.values() if m.run_id == run_id}
    seen_groups = {m.pgid for m in members.values() if m.pid in seen and m.pgid in trusted}
    groups = {
        leader.pgid: leader
        for leader in leaders.values()
        if leader.pgid in marked_groups
        or leader.pgid in seen_groups
        or matching_process(leader.pid, leader.create_time) is not None
        or (leader.pgid == leader.pid and leader.pid not in members and _has_members(members, leader.pgid))
    }
    processes = [m for m in members.values() if m.run_id == run_id or m.pgid in groups]
    return groups, processes


def _has_members(members: dict[int, Member], pgid: int) -> bool:
    return any(m.pgid == pgid for m in members.values())


def _signal(groups: Iterable[int], pids: Iterable[int], signum: int) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signum)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def _sweep_cgroups(cgroups: Sequence[Path], leaders: dict[int, _Leader]) -> tuple[list[int], list[int]]:
    """The run's cgroups: each replica's members get its stop signal, the grace (capped), then the whole
    tree is killed and removed. Returns (pids seen, pids still there)."""
    from .containment import empty_and_remove, populated, replica_named, signal_tree, tree_pids

    if not cgroups:
        return [], []
    run_cgroup = cgroups[0]
    by_replica = {t.replica: t for t in leaders.values() if t.replica}
    seen = set(tree_pids(run_cgroup))
    deadline = time.monotonic()
    with contextlib.suppress(OSError):
        for child in run_cgroup.iterdir():
            if child.is_dir():
                leader = by_replica.get(replica_named(child.name))
                seen.update(signal_tree(child, leader.stop_signal if leader else signal.SIGTERM))
                grace = min(leader.grace_seconds if leader else 1.0, _GRACE_CAP_SECONDS)
                deadline = max(deadline, time.monotonic() + grace)
    while populated(run_cgroup) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    removed = [empty_and_remove(path, _KILL_BOUND_SECONDS) for path in cgroups]
    survivors = [] if all(removed) else tree_pids(run_cgroup)
    return sorted(seen), sorted(survivors)


def _sweep(run_id: str, leaders: dict[int, _Leader], cgroups: Sequence[Path] = ()) -> _Sweep:
    from .proctable import run_members

    began = time.monotonic()
    in_cgroups, cgroup_survivors = _sweep_cgroups(cgroups, leaders)  # first: it reaches every member at once
    exclude = {os.getpid(), os.getppid()}
    pgids = {leader.pgid for leader in leaders.values()}
    members = run_members(run_id, pgids, exclude=exclude)
    groups, processes = _ours(members, run_id, leaders, set(), set())
    seen = {m.pid for m in processes}
    trusted = set(groups)
    # 1. the stop signal: to each group, and to each marked process outside the groups (setsid ones)
    for pgid, leader in groups.items():
        _signal([pgid], [], leader.stop_signal)
    by_replica: dict[str | None, signal.Signals] = {t.replica: t.stop_signal for t in leaders.values() if t.replica}
    for member in processes:
        if member.pgid not in groups:
            _signal([], [member.pid], by_replica.get(member.replica, signal.SIGTERM))
    # each replica gets its own grace (capped): a quick service is not held up by a slow one's grace
    grace_of_replica: dict[str | None, float] = {
        t.replica: min(t.grace_seconds, _GRACE_CAP_SECONDS) for t in leaders.values() if t.replica
    }
    grace_of_group = {pgid: min(leader.grace_seconds, _GRACE_CAP_SECONDS) for pgid, leader in groups.items()}
    default_grace = min(max(grace_of_group.values(), default=1.0), _GRACE_CAP_SECONDS)
    deadline = time.monotonic() + max([default_grace, *grace_of_group.values(), *grace_of_replica.values()])
    while processes and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        members = run_members(run_id, pgids, exclude=exclude)
        groups, processes = _ours(members, run_id, leaders, trusted, seen)
        seen.update(m.pid for m in processes)
        elapsed = time.monotonic() - began
        overdue_groups = [g for g in groups if elapsed >= grace_of_group.get(g, default_grace)]
        overdue = [
            m.pid
            for m in processes
            if m.pgid not in groups and elapsed >= grace_of_replica.get(m.replica, default_grace)
        ]
        if overdue_groups or overdue:
            _signal(overdue_groups, overdue, signal.SIGKILL)
            trusted.update(overdue_groups)
    # 2. SIGKILL whatever is left, re-scanning until nothing is (new forks, late re-parenting)
    deadline = time.monotonic() + _KILL_BOUND_SECONDS
    for _ in range(int(_KILL_BOUND_SECONDS / _POLL_SECONDS)):
        if not processes or time.monotonic() > deadline:
            break
        _signal(groups, [m.pid for m in processes], signal.SIGKILL)
        trusted.update(groups)
        time.sleep(_POLL_SECONDS)
        members = run_members(run_id, pgids, exclude=exclude)
        groups, processes = _ours(members, run_id, leaders, trusted, seen)
        seen.update(m.pid for m in processes)
    survivors = sorted({*(m.pid for m in processes), *cgroup_survivors})
    killed = sorted({*seen, *in_cgroups} - set(survivors))
    return _Sweep(killed, survivors, sorted(trusted), time.monotonic() - began)


def _append_event(run_dir: Path, run_id: str, sweep: _Sweep) -> None:
    from .._records.eventfile import append_event

    event = {
        "event": SWEEP_EVENT,
        "run_id": run_id,
        "killed": sweep.killed,
        "survivors": sweep.survivors,
        "groups": sweep.groups,
        "seconds": round(sweep.seconds, 4),
        "monotonic": time.monotonic(),
        "wall_time": time.time(),
    }
    append_event(run_dir / "events.jsonl", event)


def _write_summary(run_dir: Path, run_id: str, sweep: _Sweep) -> None:
    """The supervisor died before writing ``summary.json``: write it, saying so (one it wrote stays).
    Never raises: the sweep is done, and a record we cannot write must not change our exit code."""
    try:
        from .._records.died import write_dead_run_summary

        write_dead_run_summary(run_dir, run_id=run_id, killed=sweep.killed, survivors=sweep.survivors)
    except Exception as exc:  # a full disk, a removed run dir, a damaged record: the message says which
        print(f"watchdog: run {run_id}: no summary.json: {exc!r}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 clean or everything swept, 1 something survived the sweep, 2 bad usage."""
    parser = argparse.ArgumentParser(prog="python -m supervisor._host.watchdog", description=__doc__.split("\n")[0])
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if os.getsid(0) != os.getpid():
        with contextlib.suppress(OSError):
            os.setsid()
    told = _read_commands(sys.stdin.buffer)
    if told.clean:  # the supervisor waits for us at the end of its teardown: skip the interpreter's shutdown
        os._exit(0)
    _cancel_jobs(told.jobs)  # first: Slurm's own kill of remote tasks runs while we sweep the local ones
    sweep = _sweep(args.run_id, told.leaders, told.cgroups)
    with contextlib.suppress(OSError):
        _append_event(args.run_dir, args.run_id, sweep)
    if not told.asked:  # the supervisor died: nobody else writes the run's summary.json
        _write_summary(args.run_dir, args.run_id, sweep)
    if sweep.survivors:
        print(f"watchdog: run {args.run_id}: still alive after SIGKILL: {sweep.survivors}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
