"""``supervisor ps | stop | gc | logs | status | restart | scale``: commands on runs owned by other processes,
over the records (and, for a live run, its control socket: ``control``).

The command table names these handlers (``status``, ``restart`` and ``scale`` are in ``control``).
Exit codes: 0 ok, 1 something is left or failed, 2 bad input (an unknown run).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import psutil

from .._experiment.live import list_sweeps
from .._host.logfollow import LogFollower, Missed
from .._records.died import DIED_OUTCOME
from .._records.paths import read_json
from .._records.prune import OldRun, old_runs, prune_run
from .._records.reclaim import StopReport, stop_run
from .._records.record import (
    ReplicaRecord,
    RunRecord,
    UnknownRun,
    gc_candidates,
    leftover_members,
    list_runs,
    resolve_run,
    unrecorded_marks,
)
from .._units import format_size
from .context import Invocation, reader_may_leave

__all__ = ["gc_command", "logs_command", "ps_command", "stop_command"]

EXIT_OK = 0
EXIT_LEFT = 1
EXIT_BAD_INPUT = 2
_FOLLOW_POLL_SECONDS = 0.2
_FOLLOW_RUN_CHECK_SECONDS = 1.0
_SOCKET_STOP_EXIT_SECONDS = 30.0  #: after the run answered ``stop`` (its teardown is over), for it to exit
_TERMINAL_STATES = frozenset({"completed", "failed", "stopped"})


# ----- ps ----------------------------------------------------------------------------------------------
@reader_may_leave
def ps_command(call: Invocation) -> int:
    args = call.args
    now = time.time()
    sweeps = [_sweep_view(data) for data in list_sweeps()]
    if args.sweeps:
        if args.json:
            print(json.dumps(sweeps, indent=2))
        elif sweeps:
            _print_sweeps(sweeps)
        else:
            print("no sweeps")
        return EXIT_OK
    views = [_run_view(record, now) for record in list_runs(include_finished=args.all)]
    if args.json:
        print(json.dumps(views, indent=2))  # a list of runs, as ever: the sweeps are ``ps --sweeps --json``
        return EXIT_OK
    if sweeps:
        _print_sweeps(sweeps)
        print()
    if not views:
        print("no runs" + ("" if args.all else " (supervisor ps --all also lists finished ones)"))
        return EXIT_OK
    for index, view in enumerate(views):
        if index:
            print()
        supervisor = view["supervisor"]
        pid = "-" if supervisor["pid"] is None else str(supervisor["pid"])
        head = [["RUN", "NAME", "STATUS", "SUPERVISOR", "UPTIME"]]
        status = view["status"] + (" (supervisor died)" if view["outcome"] == DIED_OUTCOME else "")
        head.append(
            [view["run_id"], view["name"] or "-", status, pid + ("" if supervisor["alive"] else " (dead)"),
             _age(view["uptime_seconds"])]
        )  # fmt: skip
        _print_table(head)
        rows = [["REPLICA", "STATE", "PID", "PORTS", "UPTIME", "RESTARTS"]]
        for service in view["services"].values():
            for r in service["replicas"]:
                ports = " ".join(f"{k}={v}" for k, v in r["ports"].items()) or "-"
                rows.append([r["name"], r["state"], str(r["pid"] or "-"), ports, _age(r["uptime_seconds"]),
                             str(r["restarts"])])  # fmt: skip
        if len(rows) > 1:
            _print_table(rows, indent="    ")
        if view["leftovers"]:
            print(f"    left over: {' '.join(map(str, view['leftovers']))} (supervisor stop {view['run_id']})")
        if view["unreadable"]:
            print(f"    {view['unreadable']}")
    return EXIT_OK


def _sweep_view(data: dict[str, Any]) -> dict[str, Any]:
    """What ``ps`` shows of a sweep (``ps --sweeps --json`` prints it as is)."""
    return {
        "sweep_id": data["sweep_id"], "path": data.get("path"), "pid": data.get("pid"),
        "status": "running" if data["alive"] else "died", "planned": data.get("planned"),
        "done": data.get("done"), "trial": data.get("trial"), "arm": data.get("arm"),
        "seconds_left": data.get("seconds_left"),
    }  # fmt: skip


def _print_sweeps(sweeps: Sequence[dict[str, Any]]) -> None:
    from .._experiment.live import format_left

    rows = [["SWEEP", "TRIAL", "ARM", "LEFT", "STATUS"]]
    for sweep in sweeps:
        trial = (
            f"{sweep['trial']} of {sweep['planned']}"
            if sweep["trial"]
            else f"{sweep['done']} of {sweep['planned']} done"
        )
        if sweep["status"] == "running":
            status = f"running (pid {sweep['pid']})"
        else:
            status = f"died: supervisor sweep --resume {sweep['sweep_id']}"
        rows.append([sweep["sweep_id"], trial, sweep["arm"] or "-", format_left(sweep["seconds_left"]), status])
    _print_table(rows)


def _run_view(record: RunRecord, now: float) -> dict[str, Any]:
    """Everything ``ps`` shows about one run, as plain data (``--json`` prints it as is)."""
    left = sorted(leftover_members(record)) if not record.supervisor_alive else []
    if record.supervisor_alive:
        status = record.phase
    elif left:
        status = "orphaned"
    else:
        status = "stopped" if record.phase == "stopped" else "dead"
    if record.unreadable is not None:
        status = "unreadable"  # a newer topovisor's records: ``unreadable`` says which reads them
    running = record.supervisor_alive or bool(left)
    services: dict[str, Any] = {}
    for service, replicas in record.services().items():
        services[service] = {
            "depends_on": record.depends_on(service),
            "replicas": [_replica_view(r, record.supervisor_alive, now) for r in replicas],
        }
    return {
        "run_id": record.run_id,
        "name": record.name,
        "run_dir": str(record.run_dir),
        "phase": record.phase,
        "status": status,
        "containment": record.containment,
        "outcome": _outcome(record) if not record.supervisor_alive else None,
        "supervisor": {"pid": record.supervisor_pid, "alive": record.supervisor_alive},
        "watchdog": {"pid": record.watchdog_pid, "alive": record.watchdog_alive},
        "started_wall_time": record.started_wall_time,
        "uptime_seconds": now - record.started_wall_time if running and record.started_wall_time else None,
        "leftovers": left,
        "services": services,
        "unreadable": record.unreadable,
    }


def _outcome(record: RunRecord) -> str | None:
    """How the run ended, from its ``summary.json`` (None before one is written)."""
    outcome = read_json(record.run_dir / "summary.json").get("outcome")
    return outcome if isinstance(outcome, str) else None


def _replica_view(replica: ReplicaRecord, supervised: bool, now: float) -> dict[str, Any]:
    process = replica.process()
    if supervised or replica.state in _TERMINAL_STATES:
        state = replica.state
    else:
        state = "left over" if process is not None else "gone"
    return {
        "name": replica.name,
        "service": replica.service,
        "state": state,
        "pid": replica.pid,
        "alive": process is not None,
        "ports": replica.ports,
        "url": replica.url,
        "uptime_seconds": now - replica.create_time if process is not None and replica.create_time else None,
        "restarts": replica.restarts,
        "log": str(replica.log),
    }


def _print_table(rows: list[list[str]], indent: str = "") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# ----- stop and gc -------------------------------------------------------------------------------------
@reader_may_leave
def stop_command(call: Invocation) -> int:
    args = call.args
    record = resolve_run(args.run)
    if not record.supervisor_alive and not leftover_members(record):
        if record.indexed or record.phase != "stopped":  # a dead supervisor's record: close it
            anyio.run(stop_run, record)
        print(f"run {record.run_id}: nothing is running")
        return EXIT_OK
    print(f"run {record.run_id}: stopping", flush=True)  # on stdout with the outcome: one stream, in order
    if record.supervisor_alive and args.grace is None:
        done = _stop_through_socket(record)
        if done is not None:
            return done
    report = anyio.run(functools.partial(stop_run, record, grace_seconds=args.grace))
    return _say_stopped(record, report)


def _stop_through_socket(record: RunRecord) -> int | None:
    """A live run stops itself when asked through its control socket (the same orderly teardown as
    Ctrl-C); None when it has no socket (an older run) or did not answer: then signals do it."""
    from .._control.protocol import socket_path
    from .._host.proctable import matching_process
    from .._records.reclaim import _supervisor_budget
    from .command import CMD_GRACE_SECONDS
    from .control import stop_through_socket

    path = Path(record.manifest.control_socket or socket_path(record.run_dir))
    supervisor = matching_process(record.supervisor_pid, record.supervisor_create_time)
    budget = _supervisor_budget(record, None) + CMD_GRACE_SECONDS  # its teardown, after its CMD's grace
    seconds = stop_through_socket(path, supervisor, timeout_seconds=budget, wait_seconds=_SOCKET_STOP_EXIT_SECONDS)
    if seconds is None:
        return None
    fresh = record.reload()
    if fresh.supervisor_alive or leftover_members(fresh):
        return None  # what is left is stopped from the record
    print(f"run {record.run_id}: its supervisor (pid {record.supervisor_pid}) stopped it in {seconds:.1f}s")
    return EXIT_OK


def _say_stopped(record: RunRecord, report: StopReport) -> int:
    if report.supervisor_was_alive:
        how = f"its supervisor (pid {record.supervisor_pid}) stopped it"
        if report.supervisor_killed:
            how = f"its supervisor (pid {record.supervisor_pid}) did not finish in time and was killed"
    elif report.signalled:
        how = f"its supervisor is dead; stopped {len(report.signalled)} processes from the record"
    else:
        how = "nothing was running; record closed"
    if report.killed:
        how += f" ({len(report.killed)} needed SIGKILL)"
    print(f"run {record.run_id}: {how} in {report.seconds:.1f}s")
    if report.remaining:
        print(f"run {record.run_id}: still alive after SIGKILL: {_describe(report.remaining)}", file=sys.stderr)
        return EXIT_LEFT
    return EXIT_OK


@reader_may_leave
def gc_command(call: Invocation) -> int:
    args = call.args
    candidates = [(record, sorted(leftover_members(record))) for record in gc_candidates()]
    unrecorded = unrecorded_marks()
    unreadable = [r for r in list_runs() if r.unreadable is not None]  # indexed: they may own processes
    old = old_runs(args.older_than) if args.older_than is not None else []
    if not candidates and not unrecorded and not unreadable and not old:
        older = "" if args.older_than is None else ", and no finished run is that old"
        print(f"nothing to collect{older}")
        return EXIT_OK
    for record, left in candidates:
        dead = f"supervisor {record.supervisor_pid} is dead" if record.supervisor_pid else "no supervisor recorded"
        if left:
            print(f"run {record.run_id}: {dead}; left over: {_describe(left)}")
        else:
            print(f"run {record.run_id}: {dead}; nothing left (stale record)")
    for run_id, pids in unrecorded.items():
        print(f"run {run_id}: no record here, so it is not touched ({len(pids)} processes): {_describe(pids)}")
    for record in unreadable:
        print(f"run {record.run_id}: not touched: {record.unreadable}")
    stopping = {record.run_id for record, left in candidates if left}
    _say_old(old, stopping, dry_run=not args.yes)
    if not args.yes:
        if candidates or any(o.kept_because is None or o.record.run_id in stopping for o in old):
            print("dry run: nothing was signalled or removed; `supervisor gc --yes` does what is listed above")
        return EXIT_OK
    code = EXIT_OK
    for record, _ in candidates:
        code = max(code, _say_stopped(record, anyio.run(functools.partial(stop_run, record, by="gc"))))
    return max(code, _prune(old, stopping))


def _say_old(old: Sequence[OldRun], stopping: set[str], *, dry_run: bool) -> None:
    """One line per run dir older than asked: pruned (or to be), or kept and why."""
    now = time.time()
    for run in old:
        head = (
            f"run {run.record.run_id}: last changed {_age(now - run.last_activity)} ago, {format_size(run.usage.bytes)}"
        )
        if run.kept_because is None:
            print(f"{head}: {'to prune' if dry_run else 'pruning'} {run.record.run_dir}")
        elif run.record.run_id in stopping:
            print(f"{head}: {run.kept_because}; pruned once gc has stopped them")
        else:
            print(f"{head}: kept: {run.kept_because}")
    if dry_run:
        ready = [run for run in old if run.kept_because is None]
        if ready:
            total = sum(run.usage.bytes for run in ready)
            print(f"would free {_freed(total)} in {_dirs(len(ready))}")


def _prune(old: Sequence[OldRun], stopping: set[str]) -> int:
    """Remove the old runs' directories (each checked again first: gc may just have stopped its
    leftovers); says how much that freed. Exit 1 when one could not be removed."""
    code, freed, pruned = EXIT_OK, 0, 0
    for run in old:
        done = prune_run(run)
        freed += done.freed
        pruned += done.removed
        if done.failure is not None:
            code = EXIT_LEFT
            print(f"run {run.record.run_id}: {done.failure}", file=sys.stderr)
        elif done.kept_because is not None and (run.kept_because is None or run.record.run_id in stopping):
            print(f"run {run.record.run_id}: kept: {done.kept_because}")  # said otherwise above: say so now
    if old:
        print(f"pruned {_dirs(pruned)}, freed {_freed(freed)}")
    return code


def _freed(size: int) -> str:
    return f"{format_size(size)} ({size:,} bytes)"


def _dirs(count: int) -> str:
    return f"{count} run dir{'' if count == 1 else 's'}"


def _describe(pids: Sequence[int], limit: int = 5) -> str:
    """``pid (command)`` for the first few, then how many more."""
    parts = []
    for pid in pids[:limit]:
        try:
            command = _shortened(psutil.Process(pid).cmdline())
        except psutil.Error:
            command = ""
        parts.append(f"{pid} ({command})" if command else str(pid))
    more = f" and {len(pids) - limit} more" if len(pids) > limit else ""
    return ", ".join(parts) + more


def _shortened(argv: Sequence[str], width: int = 60) -> str:
    """The arguments that fit in ``width`` (the program always), whole, then ``...`` for the rest: a
    command cut inside an argument reads as another command."""
    shown = list(argv[:1])
    for argument in argv[1:]:
        if len(" ".join([*shown, argument])) > width:
            return " ".join([*shown, "..."])
        shown.append(argument)
    return " ".join(shown)


# ----- logs --------------------------------------------------------------------------------------------
@reader_may_leave
def logs_command(call: Invocation) -> int:
    args = call.args
    record = resolve_run(args.run)
    sources = _log_sources(record, args.service)
    prefixed = len(sources) > 1
    followers = [LogFollower(path) for _, path in sources]
    out = sys.stdout
    for (name, _), follower in zip(sources, followers, strict=True):
        for line in follower.history(max(0, args.lines)):
            out.write(f"{name} | {line}\n" if prefixed else f"{line}\n")
    out.flush()
    if not args.follow:
        return EXIT_OK
    running = _run_is_running(record)
    next_check = time.monotonic() + _FOLLOW_RUN_CHECK_SECONDS
    try:
        while True:  # until Ctrl-C or the end of the run: that is what --follow asks for
            for (name, _), follower in zip(sources, followers, strict=True):
                for line in follower.new_lines():
                    out.write(f"{name} | {line}\n" if prefixed else f"{line}\n")
                for missed in follower.take_missed():
                    out.flush()  # the notice goes between the lines it stands for
                    sys.stderr.write(_missed_notice(name, missed))
                    sys.stderr.flush()
            out.flush()
            if not running:
                return EXIT_OK  # one last drain above, after the run ended
            time.sleep(_FOLLOW_POLL_SECONDS)
            if time.monotonic() >= next_check:
                running = _run_is_running(record)
                next_check = time.monotonic() + _FOLLOW_RUN_CHECK_SECONDS
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        for follower in followers:
            follower.close()


def _missed_notice(replica: str, missed: Missed) -> str:
    if missed.bytes is None:
        amount = "some output"
    else:
        lines = f" (about {missed.lines:,} line{'s' if missed.lines != 1 else ''})" if missed.lines is not None else ""
        amount = f"{missed.bytes:,} bytes of output{lines}"
    return (
        f"supervisor: {replica}: {amount} missed here: the log rotated past all its backups before it could"
        " be read (a larger log.max_bytes or log.backups keeps more)\n"
    )


def _run_is_running(record: RunRecord) -> bool:
    fresh = record.reload()
    return fresh.supervisor_alive or bool(leftover_members(fresh))


def _log_sources(record: RunRecord, selector: str | None) -> list[tuple[str, Path]]:
    """(replica name, log path) for every replica, one service's, or one replica's."""
    replicas = record.replicas()
    sources = [(r.name, r.log) for r in replicas if selector in (None, r.service, r.name)]
    if not replicas:  # no manifest: whatever the logs directory holds
        found = sorted((record.run_dir / "logs").glob("*.log"))
        sources = [(p.stem, p) for p in found if selector in (None, p.stem, p.stem.split(".")[0])]
    if not sources and selector is not None:
        names = sorted({r.service for r in replicas} | {r.name for r in replicas})
        raise UnknownRun(
            f"run {record.run_id} has no service or replica {selector!r}; it has: {', '.join(names) or 'none'}",
            names,
        )
    return sources
