"""Run records: the per-user index of live runs, what each run wrote on disk, and what it left behind.

A supervisor registers its run in ``$XDG_STATE_HOME/topovisor/index/<run_id>.json`` (mode 0700 dir,
atomic writes) and unregisters it after a verified teardown, so the index lists exactly the runs that
may still own processes. Everything else comes from the run's own ``manifest.json``. A later
``supervisor ps/stop/gc`` (another process, maybe another day) works from these alone, and trusts a pid
only together with its recorded create time: a reused pid is never signalled.

Pure library: no printing. ``reclaim.stop_run`` and the ``ps/stop/gc/logs`` commands build on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import weakref
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import psutil

from ._redact import Redactor
from .errors import SupervisorError
from .plan import default_runs_dir, default_state_dir
from .process import REPLICA_ENV, RUN_ID_ENV
from .proctable import Member, matching_process, run_members

if TYPE_CHECKING:
    from .group import RunningTopology
    from .replica import Replica

__all__ = [
    "PortOwner",
    "ReplicaRecord",
    "RunRecord",
    "UnknownRun",
    "gc_candidates",
    "leftover_members",
    "leftovers",
    "list_runs",
    "load_run",
    "manifest_of",
    "port_owner",
    "port_owners",
    "protected_pids",
    "redactor_of",
    "register_run",
    "resolve_run",
    "runs_dir",
    "save_record",
    "state_dir",
    "summary_of",
    "unrecorded_marks",
    "unregister_run",
    "warn_record_failure",
    "write_manifest",
]

_LOCAL_ADDRESSES = frozenset({"127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"})


class UnknownRun(SupervisorError):
    """A run named on the command line matches no record, or more than one."""

    def __init__(self, message: str, candidates: Iterable[str] = ()) -> None:
        self.candidates = list(candidates)
        super().__init__(message)


# ----- where records live ------------------------------------------------------------------------------
def state_dir() -> Path:
    """``$XDG_STATE_HOME/topovisor`` (default ``~/.local/state/topovisor``), created private (0700)."""
    return _private_dir(default_state_dir())


def runs_dir() -> Path:
    """Where runs go when the topology names no ``run_dir``."""
    state_dir()  # made private first
    return default_runs_dir()


def _index_dir() -> Path:
    return _private_dir(state_dir() / "index")


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    return path


def _write_json(path: Path, data: dict[str, Any], *, indent: int | None = None) -> None:
    """Atomically: readers see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(data, indent=indent))  # dumps, not dump: only dumps uses the C encoder
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)  # a full disk keeps no half-written temporary
        raise


def _read_json(path: Path) -> dict[str, Any]:
    """The object in ``path``; an empty dict when it is missing, unreadable or half-written by a crash."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _create_time(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def register_run(run_id: str, run_dir: Path, *, supervisor_pid: int, watchdog_pid: int | None = None) -> Path:
    """List a run in the index (call once its manifest exists); returns the entry's path."""
    path = _index_dir() / f"{run_id}.json"
    _write_json(
        path,
        {
            "run_id": run_id,
            "run_dir": str(Path(run_dir).absolute()),
            "supervisor_pid": supervisor_pid,
            "supervisor_create_time": _create_time(supervisor_pid),
            "watchdog_pid": watchdog_pid,
            "watchdog_create_time": _create_time(watchdog_pid),
            "registered_wall_time": time.time(),
        },
    )
    return path


def unregister_run(run_id: str) -> bool:
    """Drop a run from the index (after a verified teardown); False if it was not listed."""
    try:
        (_index_dir() / f"{run_id}.json").unlink()
    except FileNotFoundError:
        return False
    return True


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Replace ``manifest.json`` atomically (``supervisor stop`` updates a dead supervisor's record)."""
    _write_json(run_dir / "manifest.json", manifest)  # compact: written after every spawn batch


_log = logging.getLogger("supervisor.records")
_warned: set[Path] = set()  #: run dirs already warned about: one warning per run, not one per write


def save_record(run_dir: Path, name: str, data: dict[str, Any], *, indent: int | None = None) -> bool:
    """Write ``<run_dir>/<name>`` atomically, never raising: a full disk or a deleted run directory must
    not stand in the way of a run or its teardown. The first failure of a run is a warning; False then."""
    try:
        _write_json(run_dir / name, data, indent=indent)
    except OSError as exc:
        warn_record_failure(run_dir, name, exc)
        return False
    return True


def warn_record_failure(run_dir: Path, name: str, exc: OSError) -> None:
    """Log the first failed record write of a run (later ones are expected to fail the same way)."""
    if run_dir in _warned:
        return
    _warned.add(run_dir)
    reason = exc.strerror or str(exc)
    _log.warning("cannot write %s in %s (%s); the run goes on without its record", name, run_dir, reason)


# ----- records -----------------------------------------------------------------------------------------
@attrs.frozen
class ReplicaRecord:
    """One replica as the manifest recorded it."""

    service: str
    name: str
    state: str
    pid: int | None
    pgid: int | None
    create_time: float | None  #: of ``pid``; without it the pid is never trusted
    ports: dict[str, int] = attrs.field(eq=False)
    url: str | None
    log: Path
    stop_signal: str  #: e.g. ``SIGTERM``, sent to the process group first
    grace_seconds: float  #: before SIGKILL
    restarts: int

    @classmethod
    def from_manifest(cls, service: str, data: dict[str, Any], run_dir: Path) -> ReplicaRecord:
        name = str(data.get("name") or service)
        stop = _dict(data.get("stop"))
        ports = _dict(data.get("ports"))
        return cls(
            service=service,
            name=name,
            state=str(data.get("state") or "unknown"),
            pid=_int_or_none(data.get("pid")),
            pgid=_int_or_none(data.get("pgid", data.get("pid"))),
            create_time=_float_or_none(data.get("create_time")),
            ports={str(k): int(v) for k, v in ports.items() if isinstance(v, int)},
            url=data.get("url") if isinstance(data.get("url"), str) else None,
            log=Path(data["log"]) if isinstance(data.get("log"), str) else run_dir / "logs" / f"{name}.log",
            stop_signal=str(stop.get("signal") or "SIGTERM"),
            grace_seconds=_float_or_none(stop.get("grace_seconds")) or 10.0,
            restarts=_int_or_none(data.get("restarts")) or 0,
        )

    def process(self) -> psutil.Process | None:
        """The replica's leader if it still runs: same pid *and* same create time."""
        return matching_process(self.pid, self.create_time)


@attrs.frozen
class RunRecord:
    """A run as its index entry and manifest describe it, with liveness checked just now."""

    run_id: str
    run_dir: Path
    name: str
    phase: str  #: pending, starting, running, stopping, stopped (as the manifest last said); unknown
    supervisor_pid: int | None
    supervisor_create_time: float | None
    supervisor_alive: bool  #: same pid and same create time as recorded
    watchdog_pid: int | None
    watchdog_alive: bool
    started_wall_time: float | None
    indexed: bool  #: listed in the index (the supervisor has not confirmed a clean end)
    manifest: dict[str, Any] = attrs.field(eq=False, repr=False)

    def replicas(self) -> list[ReplicaRecord]:
        return [r for replicas in self.services().values() for r in replicas]

    def services(self) -> dict[str, list[ReplicaRecord]]:
        """Service name -> its replicas, in start order."""
        services = self.manifest.get("services")
        if not isinstance(services, dict):
            return {}
        return {
            name: [
                ReplicaRecord.from_manifest(name, r, self.run_dir)
                for r in (info.get("replicas") or [])
                if isinstance(r, dict)
            ]
            for name, info in services.items()
            if isinstance(info, dict)
        }

    def depends_on(self, service: str) -> list[str]:
        info = (self.manifest.get("services") or {}).get(service) or {}
        deps = info.get("depends_on") or {}
        return [str(d) for d in deps] if isinstance(deps, (dict, list)) else []

    def stop_order(self) -> list[list[str]]:
        """Services in waves: each wave only after every service depending on it has stopped."""
        remaining = list(self.services())
        waves: list[list[str]] = []
        while remaining:
            needed = {d for s in remaining for d in self.depends_on(s) if d != s}
            wave = [s for s in reversed(remaining) if s not in needed] or list(reversed(remaining))  # a cycle
            waves.append(wave)
            remaining = [s for s in remaining if s not in wave]
        return waves

    def reload(self) -> RunRecord:
        """The same run, read again from disk."""
        return load_run(self.run_dir, run_id=self.run_id)


def load_run(run_dir: Path, *, run_id: str | None = None, entry: dict[str, Any] | None = None) -> RunRecord:
    """A record from a run directory (its manifest may be missing) and its index entry, if any."""
    run_dir = Path(run_dir).absolute()
    manifest = _read_json(run_dir / "manifest.json")
    run_id = run_id or str(manifest.get("run_id") or run_dir.name)
    if entry is None:
        entry = _read_json(_index_dir() / f"{run_id}.json")
    indexed = bool(entry)
    supervisor_pid = _int_or_none(entry.get("supervisor_pid", manifest.get("supervisor_pid")))
    supervisor_create_time = _float_or_none(
        entry.get("supervisor_create_time") or manifest.get("supervisor_create_time")
    )
    watchdog_pid = _int_or_none(entry.get("watchdog_pid"))
    return RunRecord(
        run_id=run_id,
        run_dir=run_dir,
        name=str(manifest.get("name") or ""),
        phase=str(manifest.get("phase") or "unknown"),
        supervisor_pid=supervisor_pid,
        supervisor_create_time=supervisor_create_time,
        supervisor_alive=matching_process(supervisor_pid, supervisor_create_time) is not None,
        watchdog_pid=watchdog_pid,
        watchdog_alive=matching_process(watchdog_pid, _float_or_none(entry.get("watchdog_create_time"))) is not None,
        started_wall_time=_float_or_none(manifest.get("started_wall_time") or entry.get("registered_wall_time")),
        indexed=indexed,
        manifest=manifest,
    )


def list_runs(*, include_finished: bool = False) -> list[RunRecord]:
    """Indexed runs, oldest first; with ``include_finished`` also the unindexed runs in ``runs_dir()``."""
    records: dict[str, RunRecord] = {}
    for path in sorted(_index_dir().glob("*.json")):
        entry = _read_json(path)
        run_id = str(entry.get("run_id") or path.stem)
        run_dir = Path(str(entry.get("run_dir") or runs_dir() / run_id))
        records[run_id] = load_run(run_dir, run_id=run_id, entry=entry or {"run_id": run_id})
    if include_finished:
        finished = runs_dir()
        for run_dir in sorted(finished.iterdir() if finished.is_dir() else ()):
            if not (run_dir / "manifest.json").is_file():
                continue
            record = load_run(run_dir)
            records.setdefault(record.run_id, record)
    return sorted(records.values(), key=lambda r: (r.started_wall_time or 0.0, r.run_id))


def resolve_run(spec: str) -> RunRecord:
    """A run named by its id, a unique prefix or suffix of one, its name (if one live run has it), or its
    directory. Raises ``UnknownRun`` naming the candidates otherwise."""
    path = Path(spec).expanduser()
    if (os.sep in spec or spec.startswith(".")) and path.is_dir():
        return load_run(path)
    records = list_runs(include_finished=True)
    for record in records:
        if record.run_id == spec:
            return record
    matches = [r for r in records if r.run_id.startswith(spec) or r.run_id.endswith(spec)]
    if not matches:
        matches = [r for r in records if r.indexed and r.name == spec]
    if len(matches) == 1:
        return matches[0]
    if matches:
        ids = [r.run_id for r in matches]
        raise UnknownRun(f"{spec!r} matches {len(ids)} runs: {', '.join(ids)}; give more of the run id", ids)
    live = [r.run_id for r in records if r.indexed]
    known = f"recorded runs: {', '.join(live)}" if live else "no run is recorded (supervisor ps --all lists old ones)"
    raise UnknownRun(f"no run matches {spec!r}; {known}", live)


# ----- what a run left behind --------------------------------------------------------------------------
def protected_pids() -> set[int]:
    """This process and its ancestors: a ``supervisor stop`` run from a replica's shell must not kill it."""
    me = psutil.Process()
    with contextlib.suppress(psutil.Error):
        return {me.pid, *(p.pid for p in me.parents())}
    return {me.pid}


def leftover_members(record: RunRecord, *, exclude: Collection[int] = ()) -> dict[int, Member]:
    """Live processes of the run: marked ones, and members of recorded process groups that are still ours
    (leader create time matches, or a marked process is in the group)."""
    replicas = record.replicas()
    pgids = {r.pgid for r in replicas if r.pgid}
    members = run_members(record.run_id, pgids, exclude={*protected_pids(), *exclude})
    marked_groups = {m.pgid for m in members.values() if m.run_id == record.run_id}
    ours = {r.pgid for r in replicas if r.pgid and (r.pgid in marked_groups or r.process() is not None)}
    found = {pid: m for pid, m in members.items() if m.run_id == record.run_id or m.pgid in ours}
    for replica in replicas:  # a leader that moved to another group is still ours
        leader = replica.process()
        if leader is not None and leader.pid not in found and leader.pid not in exclude:
            found[leader.pid] = Member(leader.pid, replica.pgid or leader.pid, None, replica.name)
    return found


def leftovers(record: RunRecord) -> list[psutil.Process]:
    """Live processes of the run, never a reused pid (see ``leftover_members``)."""
    processes = []
    for pid in sorted(leftover_members(record)):
        with contextlib.suppress(psutil.Error):
            processes.append(psutil.Process(pid))
    return processes


def gc_candidates() -> list[RunRecord]:
    """Runs whose supervisor is dead and that are still indexed (leftovers or a stale entry), plus
    finished runs in ``runs_dir()`` that still have live processes."""
    marked = {m.run_id for m in run_members(None, exclude=protected_pids()).values()}
    candidates = []
    for record in list_runs(include_finished=True):
        if record.supervisor_alive:
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


# ----- stale servers -----------------------------------------------------------------------------------
@attrs.frozen
class PortOwner:
    """Who listens on a port we want: pid and command line, and the run it belongs to if it has a mark."""

    port: int
    address: str
    pid: int | None  #: None when the socket belongs to another user's process
    cmdline: tuple[str, ...]
    run_id: str | None
    replica: str | None
    recorded: bool  #: ``run_id`` has a record here, so ``supervisor stop/gc`` can reach it

    def describe(self) -> str:
        """One line for a person: who holds the port and what to do about it."""
        if self.pid is None:
            return f"port {self.port} is already in use on {self.address} by another user's process"
        command = " ".join(self.cmdline) or "?"
        text = f"port {self.port} is already in use on {self.address} by pid {self.pid} ({command})"
        if self.run_id is not None:
            text += f", a leftover of run {self.run_id}" + (f" (replica {self.replica})" if self.replica else "")
            text += f"; stop it with: supervisor stop {self.run_id}" if self.recorded else "; it has no record here"
        return text


def port_owners(ports: Collection[int]) -> dict[int, PortOwner]:
    """Listeners on loopback or wildcard addresses for each of ``ports`` (one scan of the socket table)."""
    wanted = set(ports)
    owners: dict[int, PortOwner] = {}
    with contextlib.suppress(psutil.AccessDenied):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in wanted:
                continue
            if conn.laddr.ip not in _LOCAL_ADDRESSES or conn.laddr.port in owners:
                continue
            owners[conn.laddr.port] = _owner(conn.laddr.port, conn.laddr.ip, conn.pid)
    return owners


def port_owner(port: int) -> PortOwner | None:
    """Who listens on ``port`` (127.0.0.1, 0.0.0.0, ::1 or ::), or None if it is free."""
    return port_owners([port]).get(port)


def _owner(port: int, address: str, pid: int | None) -> PortOwner:
    cmdline: list[str] = []
    environ: dict[str, str] = {}
    if pid is not None:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            cmdline = process.cmdline()
            environ = process.environ()
    run_id = environ.get(RUN_ID_ENV)
    recorded = False
    if run_id is not None:
        recorded = (_index_dir() / f"{run_id}.json").is_file() or (runs_dir() / run_id / "manifest.json").is_file()
    replica = environ.get(REPLICA_ENV)
    return PortOwner(port, address, pid, tuple(cmdline), run_id, replica, recorded)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ----- what a running group writes ---------------------------------------------------------------------
_REDACTORS: weakref.WeakKeyDictionary[RunningTopology, Redactor] = weakref.WeakKeyDictionary()


def redactor_of(group: RunningTopology) -> Redactor:
    """The secrets of a run: those of the caller's environment and of every service's env."""
    redactor = _REDACTORS.get(group)
    if redactor is None:
        redactor = Redactor.from_environments(group.base_env, *(r.plan.env for r in group.replicas))
        _REDACTORS[group] = redactor
    return redactor


def manifest_of(group: RunningTopology) -> dict[str, Any]:
    """``manifest.json``: resolved commands, redacted env, ports, and every pid with its create time."""
    redactor = redactor_of(group)
    manifest = {
        "run_id": group.run_id,
        "name": group.plan.name,
        "source": group.plan.source,
        "run_dir": str(group.run_dir),
        "phase": group.phase,
        "supervisor_pid": os.getpid(),
        "supervisor_create_time": _own_create_time(),
        "started_wall_time": group.started_wall_time,
        "services": {
            s.name: {
                "depends_on": {d.service: d.condition for d in s.plan.depends_on},
                "replicas": [_replica_record(r, redactor) for r in s.replicas],
            }
            for s in group.services
        },
        "leftovers": group.leftovers,
    }
    return redactor.data(manifest)  # type: ignore[no-any-return]


def summary_of(group: RunningTopology) -> dict[str, Any]:
    """``summary.json``: how the run ended and whether anything survived it."""
    replicas = group.replicas
    if group.failure is not None:
        outcome = "failed"
    elif replicas and all(r.state.value == "completed" for r in replicas):
        outcome = "completed"
    else:
        outcome = "stopped"
    summary = {
        "run_id": group.run_id,
        "outcome": outcome,
        "failure": str(group.failure) if group.failure is not None else None,
        "started_wall_time": group.started_wall_time,
        "ended_wall_time": time.time(),
        "ready_seconds": None if group.ready_at is None else group.ready_at - group.started_at,
        "replicas": {
            r.name: {"state": r.state.value, "restarts": r.restarts, "returncode": r.returncode} for r in replicas
        },
        "verified_no_leftovers": not group.leftovers,
        "leftovers": group.leftovers,
    }
    return redactor_of(group).data(summary)  # type: ignore[no-any-return]


def _replica_record(replica: Replica, redactor: Redactor) -> dict[str, Any]:
    process = replica.process
    return {
        "name": replica.name,
        "state": replica.state.value,
        "pid": replica.pid,
        "pgid": replica.pid,
        "create_time": process.create_time if process else None,
        "returncode": replica.returncode,
        "restarts": replica.restarts,
        "command": redactor.argv(replica.plan.argv),
        "env": redactor.env(replica.plan.env),
        "ports": replica.ports,
        "url": replica.url,
        "log": str(replica.log_path),
        "stop": {"signal": replica.plan.stop.signal, "grace_seconds": replica.plan.stop.grace_seconds},
    }


_OWN_CREATE_TIME: list[float] = []


def _own_create_time() -> float:
    if not _OWN_CREATE_TIME:
        _OWN_CREATE_TIME.append(psutil.Process().create_time())
    return _OWN_CREATE_TIME[0]
