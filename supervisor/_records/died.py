"""``summary.json`` for a run whose supervisor died (SIGKILL, an OOM kill) before writing its own.

Users and benchmark harnesses read ``summary.json`` after every run; a run that ended by its supervisor's
death still gets one, with outcome ``supervisor-died``: written by the watchdog after its sweep, or by
``supervisor gc`` when the watchdog died too. It is built from the records on disk alone (``manifest.json``
for the services and replicas, ``events.jsonl`` for each replica's last known state and restarts), with
the standard library and the schema: no event loop, nothing of the runtime, so the watchdog can load it
after its sweep. A summary already there (the supervisor's own) is never replaced.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .eventfile import read_events
from .paths import read_json, write_json
from .schema import ReplicaOutcome, ServiceOutcome, Summary, manifest_from_json

__all__ = ["DIED_OUTCOME", "summary_of_dead_run", "write_dead_run_summary"]

DIED_OUTCOME = "supervisor-died"

#: the state an event leaves its replica in (the supervisor's own names, ``ReplicaState`` values)
_STATE_AFTER = {
    "spawned": "starting",
    "ready": "ready",
    "unready": "unready",
    "restarting": "restarting",
    "completed": "completed",
    "failed": "failed",
    "stopping": "stopping",
    "stopped": "stopped",
    "replica_removed": "removed",
}
_MAX_EVENT_BYTES = 64 * 1024 * 1024  #: a runaway events file is read this far, no further


def _events(path: Path) -> Iterable[dict[str, Any]]:
    """The lines of ``events.jsonl`` that parse (a line cut short by the death is skipped, with a warning)."""
    return read_events(path, max_bytes=_MAX_EVENT_BYTES)


def summary_of_dead_run(
    run_dir: Path,
    *,
    run_id: str = "",
    killed: Sequence[int] = (),
    survivors: Sequence[int] = (),
    by: str = "watchdog",
) -> Summary:
    """The summary of a run whose supervisor died: each replica's last known state, its restarts and
    last exit code, the pids ``by`` (the watchdog, or gc) had to kill, and any that survived it."""
    manifest = manifest_from_json(read_json(run_dir / "manifest.json"))
    replicas: dict[str, ReplicaOutcome] = {}
    services: dict[str, ServiceOutcome] = {}
    leader_pids: dict[str, int] = {}
    for service, entry in manifest.services.items():
        services[service] = ServiceOutcome(depends_on=dict(entry.depends_on), replicas=[r.name for r in entry.replicas])
        for r in entry.replicas:
            replicas[r.name] = ReplicaOutcome(
                state=r.state, restarts=r.restarts, returncode=r.returncode, service=service
            )
            if r.pid is not None:
                leader_pids[r.name] = r.pid
    for event in _events(run_dir / "events.jsonl"):
        name, kind = event.get("replica"), event.get("event")
        if not isinstance(name, str) or not name or (kind not in _STATE_AFTER and kind != "exited"):
            continue
        of = event.get("service")
        outcome = replicas.setdefault(name, ReplicaOutcome(service=of if isinstance(of, str) else ""))
        if outcome.service:
            shape = services.setdefault(outcome.service, ServiceOutcome())
            current, removed = (
                (shape.removed, shape.replicas) if kind == "replica_removed" else (shape.replicas, shape.removed)
            )
            if name in removed:
                removed.remove(name)
            if name not in current:
                current.append(name)
        if kind == "exited":
            code = event.get("exit_code")
            outcome.returncode = code if isinstance(code, int) and not isinstance(code, bool) else None
            pid = event.get("pid")
            if isinstance(pid, int) and leader_pids.get(name) == pid:
                leader_pids.pop(name)  # that incarnation was gone before the death
        else:
            outcome.state = _STATE_AFTER[str(kind)]
        if kind == "spawned" and isinstance(event.get("pid"), int):
            leader_pids[name] = event["pid"]
        if kind == "restarting" and isinstance(event.get("restarts"), int):
            outcome.restarts = max(outcome.restarts, event["restarts"])
    gone = set(killed)
    for name, pid in leader_pids.items():
        if pid in gone:
            replicas[name].killed = True
    supervisor = f" (pid {manifest.supervisor_pid})" if manifest.supervisor_pid else ""
    what = f"its {by} killed {len(gone)} process{'' if len(gone) == 1 else 'es'}"
    if survivors:
        what += f"; still alive after SIGKILL: {', '.join(map(str, survivors))}"
    return Summary(
        run_id=run_id or manifest.run_id,
        outcome=DIED_OUTCOME,
        failure=f"the supervisor{supervisor} died before its teardown; {what}",
        started_wall_time=manifest.started_wall_time,
        ended_wall_time=time.time(),
        services=services,
        replicas=replicas,
        verified_no_leftovers=not survivors,
        leftovers=sorted(survivors),
        killed=sorted(gone),
        ended_by=by,
    )


def write_dead_run_summary(
    run_dir: Path,
    *,
    run_id: str = "",
    killed: Sequence[int] = (),
    survivors: Sequence[int] = (),
    by: str = "watchdog",
) -> bool:
    """Write ``summary.json`` for a dead supervisor's run unless one is there; True if written.
    Raises OSError (a full disk, a run dir gone): the caller judges."""
    path = run_dir / "summary.json"
    if path.exists():
        return False
    summary = summary_of_dead_run(run_dir, run_id=run_id, killed=killed, survivors=survivors, by=by)
    write_json(path, summary, indent=2)
    return True
