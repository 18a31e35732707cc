"""Stop a run from its record: the run's own supervisor if it still lives, else the record's pids.

This is ``supervisor stop`` and ``supervisor gc --yes``: the caller is another process (a detached run,
a supervisor that died, a terminal closed days ago). A live supervisor gets SIGTERM and does its own
orderly teardown; we wait for it (bounded), SIGKILL it if it hangs, and then check what is left
ourselves. Without one we follow the record: replicas in reverse dependency order, the stop signal to
each recorded process group (only while it is still the run's) and to the replica's marked processes,
SIGKILL after the grace, then a sweep of everything still carrying the run's mark. Every pid is checked
against its create time first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence

import anyio
import anyio.to_thread
import attrs
import psutil

from .._control.protocol import remove_stale_sockets
from .._host.process import alive
from .._host.proctable import Member, matching_process
from .died import write_dead_run_summary
from .eventfile import append_event
from .paths import warn_record_failure
from .record import (
    ACTIVE_STATES,
    ReplicaRecord,
    RunRecord,
    leftover_members,
    protected_pids,
    read_manifest,
    unregister_run,
    write_manifest,
)

__all__ = ["StopReport", "stop_run"]

STOP_EVENT = "record_teardown"
_KILL_WAIT_SECONDS = 10.0  #: after SIGKILL; only a process stuck in the kernel (a GPU driver call) takes long
_SUPERVISOR_MARGIN_SECONDS = 10.0  #: on top of the graces: the supervisor's own sweep and record keeping
_SWEEP_TERM_SECONDS = 1.0  #: a process found only by the final sweep gets this long after SIGTERM
_SWEEP_ROUNDS = 20


@attrs.frozen
class StopReport:
    """What ``stop_run`` did. ``remaining`` should be empty; anything in it survived SIGKILL."""

    run_id: str
    supervisor_was_alive: bool  #: it did the teardown itself (we only checked afterwards)
    supervisor_killed: bool  #: it did not finish within its budget and got SIGKILL
    signalled: tuple[int, ...]  #: pids that got their stop signal from us
    killed: tuple[int, ...]  #: pids that needed SIGKILL from us
    remaining: tuple[int, ...]  #: pids still alive at the end
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.remaining


async def stop_run(record: RunRecord, *, grace_seconds: float | None = None, by: str = "stop") -> StopReport:
    """Orderly teardown of a run started by another process; see the module docstring.

    ``grace_seconds`` replaces every replica's recorded grace (and so shortens how long a live
    supervisor is given before it is killed). The run is marked stopped and leaves the index once
    nothing of it is left. A run whose supervisor died (or hung and got SIGKILL) and wrote no
    ``summary.json`` gets one saying so, ``ended_by`` ``by`` (the command: stop or gc).
    ``IncompatibleVersion`` for a run whose records a newer topovisor wrote: nothing is signalled then.
    """
    record.readable()
    began = time.monotonic()
    supervisor = matching_process(record.supervisor_pid, record.supervisor_create_time)
    supervisor_killed = False
    if supervisor is not None:
        with contextlib.suppress(psutil.Error):
            supervisor.send_signal(signal.SIGTERM)
        if not await _wait_gone([supervisor], _supervisor_budget(record, grace_seconds)):
            supervisor_killed = True
            with contextlib.suppress(psutil.Error):
                supervisor.send_signal(signal.SIGKILL)
            await _wait_gone([supervisor], _KILL_WAIT_SECONDS)
        record = record.reload()  # it may have restarted replicas or finished its own record
    signalled: set[int] = set()
    killed: set[int] = set()
    for wave in record.stop_order():
        members = await anyio.to_thread.run_sync(leftover_members, record)  # one scan per wave
        services = record.services()
        async with anyio.create_task_group() as tg:
            for service in wave:
                for replica in services[service]:
                    tg.start_soon(_stop_replica, replica, members, grace_seconds, signalled, killed)
    await _sweep(record, signalled, killed)
    await anyio.to_thread.run_sync(_remove_cgroups, record)
    await anyio.to_thread.run_sync(_cancel_allocation, record)
    remaining = sorted(await anyio.to_thread.run_sync(leftover_members, record))
    report = StopReport(
        run_id=record.run_id,
        supervisor_was_alive=supervisor is not None,
        supervisor_killed=supervisor_killed,
        signalled=tuple(sorted(signalled)),
        killed=tuple(sorted(killed)),
        remaining=tuple(remaining),
        seconds=time.monotonic() - began,
    )
    _close_record(record, report, by)
    return report


def _remove_cgroups(record: RunRecord) -> None:
    """Kill what is still in the run's cgroups (a fork made during the sweep), then remove them."""
    from .._host.containment import empty_and_remove

    for path in record.cgroups:
        empty_and_remove(path)


def _cancel_allocation(record: RunRecord) -> None:
    """The Slurm allocation the run made (its record says so), if its supervisor could not cancel it;
    checked by name too, so a reused job id is left alone."""
    manifest = read_manifest(record.run_dir)
    if manifest is not None and manifest.slurm_job and manifest.slurm_job_owned:
        from .._host.slurm_alloc import cancel_job

        cancel_job(manifest.slurm_job, name=manifest.slurm_job_name or None)


def _supervisor_budget(record: RunRecord, grace_seconds: float | None) -> float:
    """Its own teardown takes at most the longest grace of each stop wave, one wave after the other."""
    services = record.services()
    total = 0.0
    for wave in record.stop_order():
        graces = [grace_seconds if grace_seconds is not None else r.grace_seconds for s in wave for r in services[s]]
        total += max(graces, default=0.0)
    return total + _SUPERVISOR_MARGIN_SECONDS


async def _stop_replica(
    replica: ReplicaRecord,
    members: dict[int, Member],
    grace_seconds: float | None,
    signalled: set[int],
    killed: set[int],
) -> None:
    pgid = replica.pgid
    # ``members`` holds only processes that are still the run's: a group member listed here vouches for it
    in_group = [m for m in members.values() if pgid is not None and m.pgid == pgid]
    own = [m for m in members.values() if m.replica == replica.name and m not in in_group]
    processes = _processes([m.pid for m in [*in_group, *own]])
    if not processes:
        return
    stop_signal = _signal_named(replica.stop_signal)
    if in_group and pgid is not None:
        _killpg(pgid, stop_signal)
    _send(_processes([m.pid for m in own]), stop_signal)
    signalled.update(p.pid for p in processes)
    grace = grace_seconds if grace_seconds is not None else replica.grace_seconds
    if await _wait_gone(processes, grace):
        return
    left = [p for p in processes if alive(p)]
    if pgid is not None and any(_pgid(p) == pgid for p in left):  # still ours: one of our processes is in it
        _killpg(pgid, signal.SIGKILL)
    _send(left, signal.SIGKILL)
    killed.update(p.pid for p in left)
    await _wait_gone(left, _KILL_WAIT_SECONDS)


async def _sweep(record: RunRecord, signalled: set[int], killed: set[int]) -> None:
    """Whatever is still the run's (spawned late, marked but unknown to the record): SIGTERM once, then
    SIGKILL until nothing is left, bounded in rounds and time."""
    members = await anyio.to_thread.run_sync(leftover_members, record)
    fresh = _processes([pid for pid in members if pid not in signalled])
    if fresh:
        _send(fresh, signal.SIGTERM)
        signalled.update(p.pid for p in fresh)
        await _wait_gone(fresh, _SWEEP_TERM_SECONDS)
    deadline = time.monotonic() + _KILL_WAIT_SECONDS
    for _ in range(_SWEEP_ROUNDS):
        members = await anyio.to_thread.run_sync(leftover_members, record)
        left = _processes(list(members))
        if not left or time.monotonic() > deadline:
            return
        _send(left, signal.SIGKILL)
        killed.update(p.pid for p in left)
        await _wait_gone(left, min(1.0, max(0.0, deadline - time.monotonic())))


def _close_record(record: RunRecord, report: StopReport, by: str) -> None:
    """Write the summary a dead supervisor could not, mark the manifest stopped, remove the control
    socket it left, log what we did, leave the index."""
    supervisor_dead = matching_process(record.supervisor_pid, record.supervisor_create_time) is None
    if supervisor_dead:
        remove_stale_sockets(record.run_dir)
    if (not report.supervisor_was_alive or report.supervisor_killed) and record.run_dir.is_dir():
        _write_summary(record, report, by)  # first: from the replicas' last known states, before "stopped"
    manifest = read_manifest(record.run_dir)
    if manifest is not None:
        if supervisor_dead:
            manifest.control_socket = None
        if not report.remaining:
            manifest.phase = "stopped"
            for _, replica in manifest.replicas():
                if replica.state in ACTIVE_STATES:
                    replica.state = "stopped"
        manifest.leftovers = list(report.remaining)
        with contextlib.suppress(OSError):
            write_manifest(record.run_dir, manifest)
    if record.run_dir.is_dir():
        event = {
            "event": STOP_EVENT,
            "run_id": record.run_id,
            "supervisor_was_alive": report.supervisor_was_alive,
            "supervisor_killed": report.supervisor_killed,
            "signalled": list(report.signalled),
            "killed": list(report.killed),
            "remaining": list(report.remaining),
            "seconds": round(report.seconds, 4),
            "monotonic": time.monotonic(),
            "wall_time": time.time(),
        }
        with contextlib.suppress(OSError):
            append_event(record.run_dir / "events.jsonl", event)
    if not report.remaining:
        unregister_run(record.run_id)


def _write_summary(record: RunRecord, report: StopReport, by: str) -> None:
    """The run's ``summary.json`` (outcome supervisor-died) unless its supervisor or watchdog wrote one;
    never raises: a record we cannot write must not stop the rest of the cleanup."""
    try:
        write_dead_run_summary(
            record.run_dir,
            run_id=record.run_id,
            killed=sorted({*report.signalled, *report.killed}),
            survivors=report.remaining,
            by=by,
        )
    except Exception as exc:  # a full disk, a damaged record: say so, go on
        error = exc if isinstance(exc, OSError) else OSError(repr(exc))
        warn_record_failure(record.run_dir, "summary.json", error)


def _processes(pids: Sequence[int]) -> list[psutil.Process]:
    """psutil handles (they remember the create time) for the pids still alive, minus our own lineage."""
    mine = protected_pids()
    found = []
    for pid in dict.fromkeys(pids):
        if pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if alive(process):
                found.append(process)
    return found


def _send(processes: Sequence[psutil.Process], signum: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)  # psutil refuses a pid whose create time changed


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signum)


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except OSError:
        return None


def _signal_named(name: str) -> signal.Signals:
    with contextlib.suppress(KeyError):
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    return signal.SIGTERM


async def _wait_gone(processes: Sequence[psutil.Process], timeout_seconds: float) -> bool:
    """True once none is alive (zombies count as gone); False at the deadline."""
    deadline = time.monotonic() + timeout_seconds
    delay = 0.002
    while any(alive(p) for p in processes):
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)
    return True
