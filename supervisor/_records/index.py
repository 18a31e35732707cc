"""The per-user index of runs that may still own processes, and reading a run back from its records.

A supervisor registers its run in ``<state dir>/index/<run_id>.json`` (mode 0700 dir, atomic writes) and
unregisters it after a verified teardown, so the index lists exactly the runs that may still own
processes. Everything else comes from the run's own ``manifest.json``. A pid is trusted only together with
its recorded create time: a reused pid is never mistaken for the run's.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import psutil

from .._errors import IncompatibleVersion, UnknownRun
from .._host.proctable import matching_process
from .paths import finished_dir, index_dir, index_path, read_json, runs_dir, write_json
from .registry import register_run, unregister_run
from .schema import IndexEntry, Manifest, ReplicaEntry, index_entry_from_json, manifest_from_json

__all__ = [
    "ReplicaRecord",
    "RunRecord",
    "UnknownRun",
    "list_runs",
    "load_run",
    "read_manifest",
    "register_run",
    "resolve_run",
    "unregister_run",
    "write_manifest",
]


def read_manifest(run_dir: Path) -> Manifest | None:
    """The run's manifest, or None when there is none (never started, deleted, unreadable);
    ``IncompatibleVersion`` when a newer topovisor wrote it."""
    data = read_json(Path(run_dir) / "manifest.json")
    return manifest_from_json(data) if data else None


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Replace ``manifest.json`` atomically (``supervisor stop`` updates a dead supervisor's record)."""
    write_json(Path(run_dir) / "manifest.json", manifest)  # compact: written after every spawn batch


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
    def from_entry(cls, service: str, entry: ReplicaEntry, run_dir: Path) -> ReplicaRecord:
        name = entry.name or service
        return cls(
            service=service,
            name=name,
            state=entry.state,
            pid=entry.pid,
            pgid=entry.pgid if entry.pgid is not None else entry.pid,
            create_time=entry.create_time,
            ports=dict(entry.ports),
            url=entry.url,
            log=Path(entry.log) if entry.log else run_dir / "logs" / f"{name}.log",
            stop_signal=entry.stop.signal or "SIGTERM",
            grace_seconds=entry.stop.grace_seconds,
            restarts=entry.restarts,
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
    manifest: Manifest = attrs.field(eq=False, repr=False)  #: empty when the run wrote none (or a newer one)
    #: why this topovisor cannot read the run's records (a newer one wrote them); None when it can
    unreadable: str | None = None
    containment: str | None = None  #: cgroup2, freezer or marks; None: recorded before containment existed
    #: the run's cgroups, the containing one first (each replica's is a child named after it); only paths
    #: that are this run's own (``topovisor-<run id>`` on a mounted cgroup filesystem): a hand-edited record
    #: must not make gc kill a whole hierarchy
    cgroups: tuple[Path, ...] = ()

    def readable(self) -> RunRecord:
        """This record; ``IncompatibleVersion`` (saying who reads it) when its records are of a newer
        topovisor: nothing may be done to a run from records only half understood."""
        if self.unreadable is not None:
            raise IncompatibleVersion(self.unreadable)
        return self

    def replicas(self) -> list[ReplicaRecord]:
        return [r for replicas in self.services().values() for r in replicas]

    def services(self) -> dict[str, list[ReplicaRecord]]:
        """Service name -> its replicas, in start order."""
        return {
            name: [ReplicaRecord.from_entry(name, r, self.run_dir) for r in info.replicas]
            for name, info in self.manifest.services.items()
        }

    def depends_on(self, service: str) -> list[str]:
        info = self.manifest.services.get(service)
        return list(info.depends_on) if info is not None else []

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


def load_run(run_dir: Path, *, run_id: str | None = None, entry: IndexEntry | None = None) -> RunRecord:
    """A record from a run directory (its manifest may be missing) and its index entry, if any."""
    run_dir = Path(run_dir).absolute()
    unreadable = None
    try:
        manifest = read_manifest(run_dir) or Manifest()
    except IncompatibleVersion as exc:  # listed all the same (ps says why), used by nothing
        manifest, unreadable = Manifest(), str(exc)
    run_id = run_id or manifest.run_id or run_dir.name
    indexed = entry is not None
    if entry is None:
        data = read_json(index_path(run_id))
        indexed = bool(data)
        entry = index_entry_from_json(data)
    supervisor_pid = entry.supervisor_pid if entry.supervisor_pid is not None else manifest.supervisor_pid
    supervisor_create_time = entry.supervisor_create_time or manifest.supervisor_create_time
    return RunRecord(
        run_id=run_id,
        run_dir=run_dir,
        name=manifest.name,
        phase=manifest.phase,
        supervisor_pid=supervisor_pid,
        supervisor_create_time=supervisor_create_time,
        supervisor_alive=matching_process(supervisor_pid, supervisor_create_time) is not None,
        watchdog_pid=entry.watchdog_pid,
        watchdog_alive=matching_process(entry.watchdog_pid, entry.watchdog_create_time) is not None,
        started_wall_time=manifest.started_wall_time or entry.registered_wall_time,
        indexed=indexed,
        manifest=manifest,
        unreadable=unreadable,
        containment=manifest.containment or entry.containment,
        cgroups=_own_cgroups(
            run_id, [manifest.cgroup or entry.cgroup, *(manifest.cgroup_extras or entry.cgroup_extras)]
        ),
    )


def _own_cgroups(run_id: str, paths: list[str | None]) -> tuple[Path, ...]:
    """The recorded cgroups that are this run's: named for it, on a mounted cgroup filesystem. ``gc``
    signals whatever they list, so a hand-edited path counts only as written by a run: absolute, with no
    ``.`` or ``..`` (``<mount>/../../tmp/x/topovisor-ID`` is no cgroup), and on the mount's filesystem."""
    if not any(paths):
        return ()
    from .._host.cgroupfs import CgroupHost

    host = CgroupHost.read()
    mounts = [h.mount for h in (host.unified, *host.v1.values()) if h is not None]
    found: list[Path] = []
    for text in paths:
        if not text:
            continue
        path = Path(text)
        if not path.is_absolute() or os.path.normpath(text) != text or path.name != f"topovisor-{run_id}":
            continue
        mount = next((m for m in mounts if path.is_relative_to(m) and path != m), None)
        if mount is not None and _same_filesystem(path, mount):
            found.append(path)
    return tuple(found)


def _same_filesystem(path: Path, mount: Path) -> bool:
    """``path`` (when it exists) is on ``mount``'s filesystem, not on one mounted inside it."""
    try:
        return path.stat().st_dev == mount.stat().st_dev
    except FileNotFoundError:
        return True  # a removed cgroup lists nothing: it is harmless, and the record still names it
    except OSError:
        return False


def list_runs(*, include_finished: bool = False) -> list[RunRecord]:
    """Indexed runs, oldest first; with ``include_finished`` also the unindexed runs in ``runs_dir()``,
    and those that finished elsewhere (``finished_dir()``; an entry whose run dir was deleted is skipped)."""
    records: dict[str, RunRecord] = {}
    for path in sorted(index_dir().glob("*.json")):
        entry = index_entry_from_json(read_json(path))
        run_id = entry.run_id or path.stem
        run_dir = Path(entry.run_dir or runs_dir() / run_id)
        records[run_id] = load_run(run_dir, run_id=run_id, entry=entry)
    if include_finished:
        finished = runs_dir()
        for run_dir in sorted(finished.iterdir() if finished.is_dir() else ()):
            if not (run_dir / "manifest.json").is_file():
                continue
            record = load_run(run_dir)
            records.setdefault(record.run_id, record)
        for path in sorted(finished_dir(create=False).glob("*.json")):
            entry = index_entry_from_json(read_json(path))
            if not entry.run_dir or not Path(entry.run_dir).is_dir():
                continue  # its run dir was deleted: nothing to list (a reader changes nothing on disk)
            if (Path(entry.run_dir) / "manifest.json").is_file():
                record = load_run(Path(entry.run_dir), run_id=entry.run_id or path.stem)
                records.setdefault(record.run_id, record)
    return sorted(records.values(), key=lambda r: (r.started_wall_time or 0.0, r.run_id))


def resolve_run(spec: str) -> RunRecord:
    """A run named by its id, a unique prefix or suffix of one, its name (if one live run has it), or its
    directory. Raises ``UnknownRun`` naming the candidates otherwise, ``IncompatibleVersion`` for a run
    whose records a newer topovisor wrote."""
    path = Path(spec).expanduser()
    if (os.sep in spec or spec.startswith(".")) and path.is_dir():
        return load_run(path).readable()
    records = list_runs(include_finished=True)
    for record in records:
        if record.run_id == spec:
            return record.readable()
    matches = [r for r in records if r.run_id.startswith(spec) or r.run_id.endswith(spec)]
    if not matches:
        matches = [r for r in records if r.indexed and r.name == spec]
    if len(matches) == 1:
        return matches[0].readable()
    if matches:
        ids = [r.run_id for r in matches]
        raise UnknownRun(f"{spec!r} matches {len(ids)} runs: {_some(ids)}; give more of the run id", ids)
    live = [r.run_id for r in records if r.indexed]
    known = f"recorded runs: {_some(live)}" if live else "no run is recorded (supervisor ps --all lists old ones)"
    raise UnknownRun(f"no run matches {spec!r}; {known}", live)


def _some(run_ids: list[str], shown: int = 5) -> str:
    """The newest few of a list of run ids (oldest first), for an error line: a busy box records hundreds."""
    if len(run_ids) <= shown:
        return ", ".join(run_ids)
    return f"{', '.join(run_ids[-shown:])} and {len(run_ids) - shown} older (supervisor ps lists them)"
