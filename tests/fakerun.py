"""Runs built by hand for the record, watchdog and CLI tests: real marked processes, a manifest written
with the records' own schema, and a ``Reaper`` that kills whatever a test started, even when it fails."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import psutil

from supervisor._host.process import REPLICA_ENV, RUN_ID_ENV
from supervisor._host.proctable import run_members
from supervisor._records.record import Manifest, ReplicaEntry, ServiceEntry, StopEntry, write_manifest

from .helpers import PROGRAMS, PYTHON, alive, wait_until

#: exits on SIGTERM after appending its replica name to $STOP_LOG: the order of lines is the stop order
POLITE = (
    "import os, signal, sys, time\n"
    "def bye(*_):\n"
    "    with open(os.environ['STOP_LOG'], 'a') as f: f.write(os.environ['TOPOVISOR_REPLICA'] + '\\n')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('up', flush=True)\n"
    "while True: time.sleep(1)\n"
)
#: ignores SIGTERM: only SIGKILL ends it
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\nwhile True: time.sleep(1)\n"


class Reaper:
    """Everything a test started: killed (process group and pid, create time checked) and reaped at the end."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[Any]] = []
        self.groups: list[int] = []  #: sessions we started; an unreaped leader keeps its id from reuse
        self.run_ids: list[str] = []

    def start(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, new_session: bool = True, ready: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start ``argv``; with ``ready``, wait for its first output line (it prints once it is set up)."""
        popen = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE if ready else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
        )
        self.popens.append(popen)
        if new_session:
            self.groups.append(popen.pid)
        if ready:
            assert popen.stdout is not None
            assert popen.stdout.readline(), f"{argv} exited before it was ready"
        return popen

    def start_replica(
        self, run_id: str, replica: str, code: str = STUBBORN, *, extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A replica leader as ``_runtime.replica.py`` starts one: own session, the run's mark in its environment."""
        self.watch_run(run_id)
        env = {**os.environ, RUN_ID_ENV: run_id, REPLICA_ENV: replica, **(extra_env or {})}
        return self.start([PYTHON, "-c", code], env=env)

    def start_tree(self, run_id: str, replica: str, pids_file: Path) -> subprocess.Popen[bytes]:
        """tests/programs/tree.py: stubborn leader, children, setsid grandchildren and a daemon."""
        self.watch_run(run_id)
        env = {**os.environ, RUN_ID_ENV: run_id, REPLICA_ENV: replica}
        argv = [PYTHON, str(PROGRAMS / "tree.py"), "--pids", str(pids_file), "--ignore-term", "--children", "2",
                "--setsid-children", "2", "--daemon"]  # fmt: skip
        return self.start(argv, env=env)

    def watch_run(self, run_id: str) -> None:
        if run_id not in self.run_ids:
            self.run_ids.append(run_id)

    def cleanup(self) -> None:
        for pgid in self.groups:  # before reaping: until then the leader's pid (= group id) stays ours
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        for popen in self.popens:
            with contextlib.suppress(OSError):
                popen.kill()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # SIGKILL is asynchronous: until the marked ones are really gone
            left = [pid for run_id in self.run_ids for pid in run_members(run_id)]
            if not left:
                break
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for popen in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(10)
            if popen.stdout is not None:
                popen.stdout.close()


def reaper_fixture() -> Iterator[Reaper]:
    reaper = Reaper()
    try:
        yield reaper
    finally:
        reaper.cleanup()


def dead_process() -> tuple[int, float]:
    """The pid and create time of a process that has exited (and was reaped): a supervisor that died."""
    popen = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(0.05)"])
    create_time = psutil.Process(popen.pid).create_time()
    popen.wait(10)
    return popen.pid, create_time


def replica_entry(
    name: str, popen: subprocess.Popen[bytes] | None, run_dir: Path, *, create_time: float | None = None, **extra: Any
) -> ReplicaEntry:
    """A manifest replica entry for a process started with ``Reaper.start_replica``."""
    pid = popen.pid if popen is not None else None
    if create_time is None and pid is not None:
        create_time = psutil.Process(pid).create_time()
    entry = ReplicaEntry(
        name=name,
        state="ready",
        pid=pid,
        pgid=pid,
        create_time=create_time,
        command=["python"],
        log=str(run_dir / "logs" / f"{name}.log"),
        stop=StopEntry(signal="SIGTERM", grace_seconds=0.5),
    )
    return attrs.evolve(entry, **extra)


def write_run(
    runs_dir: Path,
    run_id: str,
    services: Mapping[str, tuple[Sequence[str], Sequence[ReplicaEntry]]],
    *,
    supervisor: tuple[int, float] | None = None,
    phase: str = "running",
    name: str = "fake",
) -> Path:
    """A run directory with a manifest: ``services`` maps a name to (depends_on, replica entries)."""
    run_dir = runs_dir / run_id
    (run_dir / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
    supervisor_pid, supervisor_create_time = supervisor or dead_process()
    manifest = Manifest(
        run_id=run_id,
        name=name,
        run_dir=str(run_dir),
        phase=phase,
        supervisor_pid=supervisor_pid,
        supervisor_create_time=supervisor_create_time,
        started_wall_time=time.time() - 5,
        services={
            service: ServiceEntry(depends_on={dep: "ready" for dep in deps}, replicas=list(replicas))
            for service, (deps, replicas) in services.items()
        },
    )
    write_manifest(run_dir, manifest)
    return run_dir


def all_gone(pids: Sequence[int], timeout: float = 5.0) -> None:
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=timeout)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
