"""The first spawns, before the event loop: ``supervisor run`` starts the services that wait for nothing
while the runtime (asyncio, anyio, the group) is still being imported.

A fresh ``supervisor run`` spends about 100 ms importing the runtime and starting its event loop, and a
process whose service depends on nothing needs none of it: the plan says what to run, a ``Popen`` runs it.
``HeadStart.begin`` makes the checks ``launch`` makes (``preflight``), spawns the run's watchdog, then each
replica of those services, with the argv, environment and directory the group would give it. The group
adopts them: the watchdog when it starts, each process at its replica's first spawn (the head start is the
group's launcher: it hands over the waiting process where the group would have spawned one).

What stays true:

- bad input starts nothing: the checks come first;
- a SIGKILLed supervisor leaves nothing behind: the watchdog is spawned before the first child (its
  ``Popen`` returns once it is exec'd, a millisecond: its own start-up never delays ours), each process is
  tracked as soon as it is spawned, and it carries the run's mark;
- no output is lost: it waits in the process's pipe (1 MiB) until the group drains it;
- the records stay honest: an adopted process keeps its real spawn time, and the run its start time;
- whatever the group never adopts (a run stopped or failed before it got there) is SIGKILLed with its
  process group and reaped by ``close``, and the watchdog then sweeps the run.

Only runs on this machine start early (the CLI makes no head start for a ``cluster:`` run), and only plain
replicas: a profiled service and a service with dependencies start in the event loop, as before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .._host.process import ChildProcess
from .._host.watchdog import Watchdog
from .._marks import REPLICA_ENV, RUN_ID_ENV
from .._records.registry import register_run, unregister_run
from .preflight import open_containment, preflight

if TYPE_CHECKING:
    from .._host.containment import RunContainment
    from .._host.gpu_inventory import GpuInventory
    from .._host.launcher import LaunchedProcess
    from .._plan.plan import Plan, ReplicaPlan

__all__ = ["HeadStart"]


class _Waiting(NamedTuple):
    process: ChildProcess
    argv: list[str]
    env: dict[str, str]
    cwd: str | None


class HeadStart:
    """The run's watchdog and its first processes, started before the event loop, until the group adopts
    them; a ``Launcher`` for the group, and a context manager that cleans up what it never adopted."""

    def __init__(self, plan: Plan, inventory: GpuInventory | None, began_at: float, began_wall_time: float) -> None:
        self.plan = plan
        self.inventory = inventory  #: what ``preflight`` returned: the run's GPU inventory
        self.gpus_before: frozenset[tuple[int, int]] | None = None  #: what the GPUs listed before any spawn
        self.began_at = began_at  #: ``time.monotonic()`` when the run began: its start time in the records
        self.began_wall_time = began_wall_time
        self.spawned: dict[str, int] = {}  #: replica name -> pid, for every process started here, in order
        self.watchdog_pid: int | None = None
        self.containment: RunContainment | None = None  #: the run's cgroup, made before the first spawn
        self._watchdog: Watchdog | None = None
        self._waiting: dict[str, _Waiting] = {}
        self._abandoned = False
        self._registered = False  #: the run is in the index, by us: the group's end unregisters it, or ours

    @classmethod
    def begin(cls, plan: Plan, gpus: GpuInventory | None = None) -> HeadStart:
        """Check, then spawn the watchdog and every replica of the services that depend on nothing.
        ``ConfigError`` from the checks: nothing started."""
        assert plan.cluster is None, "a cluster run starts its replicas through the cluster's launcher"
        head = cls(plan, None, time.monotonic(), time.time())
        head.inventory = preflight(plan, gpus)
        if head.inventory is not None:
            from .gpu_checks import listed_before

            head.gpus_before = listed_before(head.inventory, plan)
        head.containment = containment = open_containment(plan)
        try:
            head._watchdog = Watchdog.spawn(plan.run_id, plan.run_dir)
            head.watchdog_pid = head._watchdog.pid
            head._watchdog.contain(containment)
            # indexed before the first child: if we and the watchdog both die now, gc still finds the run
            register_run(
                plan.run_id,
                plan.run_dir,
                supervisor_pid=os.getpid(),
                watchdog_pid=head.watchdog_pid,
                containment=containment.record(),
            )
            head._registered = True
            base_env = {"PYTHONUNBUFFERED": "1", **os.environ}  # as ``RunningTopology.base_env``
            for service in plan.services:
                if service.depends_on:
                    continue
                for replica in service.replicas:
                    if replica.profile is None:
                        head._spawn(replica, base_env)
        except BaseException:
            head.close()
            raise
        return head

    def _spawn(self, replica: ReplicaPlan, base_env: Mapping[str, str]) -> None:
        env = {**replica.environment(base_env), RUN_ID_ENV: self.plan.run_id, REPLICA_ENV: replica.name}  # as spawn
        assert self.containment is not None
        try:
            argv = self.containment.enter(replica.name, replica.argv, env, replica.cwd)
            process = ChildProcess.spawn(argv, env, replica.cwd)
        except OSError:
            return  # the group tries again and reports it as it reports any failed spawn
        watchdog, stop = self._watchdog, replica.stop  # tracked at once, as the group tracks its spawns
        assert watchdog is not None
        watchdog.track(process.pid, process.create_time, process.pid, stop.signal, stop.grace_seconds, replica.name)
        self._waiting[replica.name] = _Waiting(process, list(replica.argv), env, replica.cwd)
        self.spawned[replica.name] = process.pid

    # ----- what the group takes over -----------------------------------------------------------------
    def take_watchdog(self) -> Watchdog | None:
        """The run's watchdog, already tracking the processes started here; None if there is none."""
        watchdog, self._watchdog = self._watchdog, None
        return watchdog

    def launch(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> LaunchedProcess:
        """``Launcher``: a replica's first spawn gets the process started for it here; any other, a new one."""
        waiting = self._waiting.pop(env.get(REPLICA_ENV, ""), None)
        if waiting is not None:
            if (waiting.argv, waiting.env, waiting.cwd) == (list(argv), dict(env), cwd):
                return waiting.process
            _discard(waiting.process)  # asked for something else than was started: start that instead
        name = env.get(REPLICA_ENV)
        if self.containment is not None and name:
            argv = self.containment.enter(name, argv, env, cwd)
        return ChildProcess.spawn(argv, env, cwd)

    # ----- the end -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Kill and reap every process the group did not adopt; end the watchdog if it did not take it
        (sweeping the run if a process was left here)."""
        for waiting in self._waiting.values():
            _discard(waiting.process)
            self._abandoned = True
        self._waiting.clear()
        watchdog = self.take_watchdog()
        if watchdog is not None:
            if self.containment is not None and self._abandoned:  # with whatever the moment's run forked
                self.containment.kill()
            swept = watchdog.close(clean=not self._abandoned)
            if self.containment is not None and not self.containment.empty_and_remove():
                swept = swept or 1  # something survived even SIGKILL: the run stays indexed for gc
            if self._registered and swept == 0:  # the group never took over, and nothing of ours is left
                unregister_run(self.plan.run_id)

    def __enter__(self) -> HeadStart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _discard(process: ChildProcess) -> None:
    """SIGKILL a process nobody adopted, with its process group, and reap it: it ran only for a moment."""
    process.signal_group(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(10.0)
    process.returncode = process.popen.returncode
    process.reap()
    with contextlib.suppress(OSError):
        os.close(process.output_fd)
