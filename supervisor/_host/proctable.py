"""The process table, read with pid reuse in mind: which live processes belong to a run.

A pid alone names nothing: once its process is gone the kernel hands the number to the next one. A pid
is trusted only together with its create time (``matching_process``), and a process group only while a
process of the run is still in it. Both the watchdog and ``supervisor stop/gc`` decide what to signal
from here, so the module stays light (stdlib and psutil): the watchdog imports it at start.

Zombies count as gone everywhere: they hold no memory, no ports and no GPU, and where PID 1 does not
reap orphans (some containers) they would otherwise look alive forever.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Collection
from typing import NamedTuple

import psutil

from .._marks import REPLICA_ENV, RUN_ID_ENV

__all__ = [
    "CREATE_TIME_TOLERANCE_SECONDS",
    "Member",
    "marked_processes",
    "matching_process",
    "processes_with_env",
    "run_members",
]

#: psutil derives create times from clock ticks (10 ms); a reused pid starts far later than this.
CREATE_TIME_TOLERANCE_SECONDS = 0.05
_RUN_PREFIX = f"{RUN_ID_ENV}=".encode()
_REPLICA_PREFIX = f"{REPLICA_ENV}=".encode()


class Member(NamedTuple):
    """A live process that belongs to a run: by its mark, by its process group, or both."""

    pid: int
    pgid: int
    run_id: str | None  #: the run id in its environment; None when found by process group only
    replica: str | None  #: the replica name in its environment


def matching_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process ``pid``, but only if it started at ``create_time``: a reused pid gives None."""
    if not pid or pid <= 0 or create_time is None:
        return None
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > CREATE_TIME_TOLERANCE_SECONDS:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return process


def marked_processes(run_id: str) -> dict[int, tuple[str, psutil.Process]]:
    """Every live process carrying ``run_id``'s mark: pid -> (replica name, process). Signalling through the
    psutil handle re-checks the create time, so a pid reused since the scan is not touched."""
    found: dict[int, tuple[str, psutil.Process]] = {}
    for pid, member in run_members(run_id).items():
        with contextlib.suppress(psutil.Error):
            found[pid] = (member.replica or "", psutil.Process(pid))
    return found


def run_members(run_id: str | None, pgids: Collection[int] = (), *, exclude: Collection[int] = ()) -> dict[int, Member]:
    """Live processes marked with ``run_id`` (any run's mark when None) or in one of ``pgids``.

    One pass over ``/proc`` on Linux (stat + environ per process; other users' environments are
    unreadable and skipped), psutil elsewhere. ``exclude`` (and this process) are never listed.
    """
    skip = {os.getpid(), *exclude}
    wanted_groups = set(pgids)
    if sys.platform == "linux" and os.path.isdir("/proc"):
        return _scan_proc(run_id, wanted_groups, skip)
    return _scan_psutil(run_id, wanted_groups, skip)


def _scan_proc(run_id: str | None, pgids: set[int], skip: set[int]) -> dict[int, Member]:
    found: dict[int, Member] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                fields = file.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) < 3 or fields[0] in (b"Z", b"X"):
            continue
        pgid = int(fields[2])
        environ = b""
        with contextlib.suppress(OSError), open(f"/proc/{entry}/environ", "rb") as file:
            environ = file.read()
        mark = _env_value(environ, _RUN_PREFIX)
        if (mark is not None and (run_id is None or mark == run_id)) or pgid in pgids:
            found[pid] = Member(pid, pgid, mark, _env_value(environ, _REPLICA_PREFIX))
    return found


def _scan_psutil(run_id: str | None, pgids: set[int], skip: set[int]) -> dict[int, Member]:
    found: dict[int, Member] = {}
    for process in psutil.process_iter():
        if process.pid in skip:
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            pgid = os.getpgid(process.pid)
            environ: dict[str, str] = {}
            with contextlib.suppress(psutil.AccessDenied):
                environ = process.environ()
        except (psutil.Error, OSError):
            continue
        mark = environ.get(RUN_ID_ENV)
        if (mark is not None and (run_id is None or mark == run_id)) or pgid in pgids:
            found[process.pid] = Member(process.pid, pgid, mark, environ.get(REPLICA_ENV))
    return found


def processes_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment holds ``name=value`` (a probe attempt's mark: one /proc pass)."""
    wanted = f"{name}={value}".encode()
    found: list[int] = []
    if sys.platform != "linux" or not os.path.isdir("/proc"):
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if process.environ().get(name) == value:
                    found.append(process.pid)
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/environ", "rb") as file:
            if wanted in file.read().split(b"\0"):
                found.append(int(entry))
    return found


def _env_value(environ: bytes, prefix: bytes) -> str | None:
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None
