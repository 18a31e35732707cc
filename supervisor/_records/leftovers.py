"""What a run left behind: its live processes (never a reused pid), runs for ``gc``, unrecorded marks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path

import psutil

from .._host.proctable import Member, run_members
from .index import RunRecord, list_runs

__all__ = ["gc_candidates", "leftover_members", "leftovers", "protected_pids", "unrecorded_marks"]


def protected_pids() -> set[int]:
    """This process and its ancestors: a ``supervisor stop`` run from a replica's shell must not kill it."""
    me = psutil.Process()
    with contextlib.suppress(psutil.Error):
        return {me.pid, *(p.pid for p in me.parents())}
    return {me.pid}


def leftover_members(record: RunRecord, *, exclude: Collection[int] = ()) -> dict[int, Member]:
    """Live processes of the run: those in its cgroups (by the replica whose cgroup holds them); for a run
    not wholly contained by cgroup also marked ones, and members of recorded process groups that are
    still ours (leader create time matches, or a marked process is in the group)."""
    replicas = record.replicas()
    skip = {*protected_pids(), *exclude}
    in_cgroups = _cgroup_members(record, skip)
    if record.cgroups and record.containment in ("cgroup2", "freezer") and not record.manifest.slurm_job:
        return _with_leaders(record, in_cgroups, exclude)  # every replica ran in its cgroup: no /proc scan
    pgids = {r.pgid for r in replicas if r.pgid}
    members = {**run_members(record.run_id, pgids, exclude=skip), **in_cgroups}
    marked_groups = {m.pgid for m in members.values() if m.run_id == record.run_id}
    ours = {r.pgid for r in replicas if r.pgid and (r.pgid in marked_groups or r.process() is not None)}
    found = {pid: m for pid, m in members.items() if m.run_id == record.run_id or m.pgid in ours or pid in in_cgroups}
    return _with_leaders(record, found, exclude)


def _with_leaders(record: RunRecord, found: dict[int, Member], exclude: Collection[int]) -> dict[int, Member]:
    """A recorded leader that is still the process we started (pid and create time) is ours wherever it is."""
    for replica in record.replicas():
        leader = replica.process()
        if leader is not None and leader.pid not in found and leader.pid not in exclude:
            found[leader.pid] = Member(leader.pid, replica.pgid or leader.pid, None, replica.name)
    return found


def _cgroup_members(record: RunRecord, skip: Collection[int]) -> dict[int, Member]:
    """Every process in the run's cgroup, named by the replica cgroup it is in."""
    if not record.cgroups:
        return {}
    from .._host.containment import tree_pids

    found: dict[int, Member] = {}
    root = record.cgroups[0]
    for pid in tree_pids(root):
        if pid in skip:
            continue
        replica = _replica_of(root, pid)
        try:
            found[pid] = Member(pid, os.getpgid(pid), record.run_id, replica)
        except OSError:
            continue
    return found


def _replica_of(root: Path, pid: int) -> str | None:
    """The replica cgroup (a child of the run's) that ``pid`` is in, from ``/proc/PID/cgroup``."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split(":", 2)[-1]
        marker = f"/{root.name}/"
        if marker in path:
            from .._host.containment import replica_named

            return replica_named(path.split(marker, 1)[1].split("/", 1)[0]) or None
    return None


def leftovers(record: RunRecord) -> list[psutil.Process]:
    """Live processes of the run, never a reused pid (see ``leftover_members``)."""
    processes = []
    for pid in sorted(leftover_members(record)):
        with contextlib.suppress(psutil.Error):
            processes.append(psutil.Process(pid))
    return processes


def gc_candidates() -> list[RunRecord]:
    """Runs whose supervisor is dead and that are still indexed (leftovers or a stale entry), plus
    finished runs in ``runs_dir()`` that still have live processes; never a run whose records this
    topovisor cannot read (a newer one's: ``gc`` names those)."""
    marked = {m.run_id for m in run_members(None, exclude=protected_pids()).values()}
    candidates = []
    for record in list_runs(include_finished=True):
        if record.supervisor_alive or record.unreadable is not None:
            continue
        if record.indexed or record.run_id in marked or any(r.process() for r in record.replicas()):
            candidates.append(record)
    return candidates


def unrecorded_marks() -> dict[str, list[int]]:
    """Run id -> pids of live marked processes whose run has no record here (another state dir, a
    deleted run directory). Reported, never signalled: nothing says their supervisor is dead."""
    known = {r.run_id for r in list_runs(include_finished=True)}
    found: dict[str, list[int]] = {}
    for member in run_members(None, exclude=protected_pids()).values():
        if member.run_id is not None and member.run_id not in known:
            found.setdefault(member.run_id, []).append(member.pid)
    return {run_id: sorted(pids) for run_id, pids in sorted(found.items())}
