"""The running group's state: one object with public fields that starting, supervision, stopping and the
live operations all work on, so none of them reaches into the handle's private members.

``RunningTopology`` (``_runtime.group``) is the public handle and owns one ``RunState``; the modules below
it (``group_start``, ``supervision``, ``group_stop``, ``operations``, ``scaling``, ``rollout``,
``dependents``) are functions over it. The state is also the replicas' host (``ReplicaHost``: spawn,
track, output) and the view the run's records are written from (``_records.snapshot.RunView``). What it
cannot do itself without importing the layers above it (follow a replica that moved to another node) the
handle tells it how to do: ``on_moved``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from .._errors import ConfigError, ServiceFailed
from .._events import Event, EventLog
from .._host.containment import ReplicaCgroup, RunContainment
from .._host.launcher import Launcher, LocalLauncher
from .._host.probes import PollBudget
from .._plan.plan import Plan, ReplicaPlan
from .._records.paths import private_dirs
from .._records.record import save_record
from .autoscale_policy import AutoscaleState
from .conditions import StartConditions
from .decision_log import DecisionLog
from .replica import Incarnation, Replica, ServiceHandle
from .resources import ResourceSampler
from .run_phase import RunPhase, check_phase_change

if TYPE_CHECKING:
    import httpx

    from .._control.server import ControlServer
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._host.watchdog import Watchdog
    from .._plan.ports import PortAllocator
    from .headstart import HeadStart

__all__ = ["RunState"]


class RunState:
    """Everything the running group keeps while it runs. Fields are public to the runtime package; the
    phase changes only through ``enter_phase`` (a guarded transition, as ``Replica.transition`` is)."""

    def __init__(
        self,
        plan: Plan,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
        launcher: Launcher | None = None,
        gpus: GpuInventory | None = None,
        gpus_before: frozenset[tuple[int, int]] | None = None,
        head_start: HeadStart | None = None,
        allocation: SlurmAllocation | None = None,
        containment: RunContainment | None = None,
    ) -> None:
        self.plan = plan
        self.gpus = gpus  #: checked after teardown: the GPUs must stop listing our processes
        self.gpus_before = gpus_before  #: (gpu, pid) listed before the first spawn (``listed_before``)
        self.run_id = plan.run_id
        self.base_env = {"PYTHONUNBUFFERED": "1", **os.environ}  # output reaches the logs as it is printed
        self.poll_budget = PollBudget()
        #: a head start (``supervisor run``) already spawned the first replicas: it hands them over
        #: the run's cgroup tree (made by ``preflight.open_containment``), or none: marks and process groups
        self.containment = containment or RunContainment("marks")
        self.launcher: Launcher = launcher or head_start or LocalLauncher(self.containment)
        self.head_start = head_start
        #: the Slurm job that replicas with a placement run in; released at teardown if we made it
        self.allocation = allocation
        if allocation is None and any(r.placement for s in plan.services for r in s.replicas):
            from .._host.slurm_alloc import SlurmAllocation

            self.allocation = SlurmAllocation.current()  # a plan made inside an allocation, say
            if self.allocation is None:
                problem = "replicas are placed on cluster nodes, but there is no Slurm allocation to run them in"
                raise ConfigError(problem, source=plan.source)
        self.run_dir = plan.run_dir
        self.logs_dir = plan.run_dir / "logs"
        private_dirs(self.logs_dir)
        os.chmod(self.run_dir, 0o700)
        self.output_hook = on_output
        #: told the service whose replica moved nodes (its dependents follow); the group's handle sets it
        self.on_moved: Callable[[str], None] | None = None
        self.event_log = EventLog(self.run_dir / "events.jsonl", hook=on_event)
        self.service_map: dict[str, ServiceHandle] = {}  #: by service name, in the plan's order
        self.replica_map: dict[str, Replica] = {}  #: by replica name, and ``service.index`` too
        for service in plan.services:
            replicas = [Replica(r, service, self.logs_dir / f"{r.name}.log") for r in service.replicas]
            self.service_map[service.name] = ServiceHandle(service, replicas)
            self.replica_map.update({r.name: r for r in replicas})
            for r in replicas:
                self.replica_map.setdefault(f"{service.name}.{r.index}", r)
        self.conditions = StartConditions(s.name for s in plan.services)
        self.tg: TaskGroup | None = None  #: the long-lived tasks' group, from the start on
        self.task_scopes: set[anyio.CancelScope] = set()  #: the shielded pumps and watchers
        self.body_scope: anyio.CancelScope | None = None  #: the start, then the caller's body
        self.http: httpx.AsyncClient | None = None
        self.watchdog: Watchdog | None = None
        self.control: ControlServer | None = None
        self.control_socket: Path | None = None  #: where the run's control socket listens, once it does
        self.restart_lock = anyio.Lock()
        self.operation_lock = anyio.Lock()  #: one scale, rollout, restart or stop(name) at a time
        self.retired: list[Replica] = []  #: scaled away; kept for the final sweep and a kill
        self.ports: PortAllocator | None = None  #: for replicas added while the run goes on
        self.autoscaling: dict[str, AutoscaleState] = {}  #: the services with ``autoscale:``, once ready
        self.planner_decisions = DecisionLog()  #: an outside planner's decisions (``planner_decision``)
        self.stopping = False  #: the teardown began: nothing new is spawned
        self.kill_requested = False  #: the second Ctrl-C: SIGKILL instead of the stop signal
        self.teardown_began = anyio.Event()  #: as ``stopping`` turns true: live operations are cut short
        self.torn_down = anyio.Event()
        self.all_done = anyio.Event()
        self.failure: ServiceFailed | None = None  #: the first fatal failure, once one happened
        self.started_at = time.monotonic() if head_start is None else head_start.began_at
        self.started_wall_time = time.time() if head_start is None else head_start.began_wall_time
        self.ready_at: float | None = None
        self.teardown_started_at: float | None = None  #: monotonic, once the teardown began
        self._phase = RunPhase.PENDING
        self.leftovers: list[int] = []  #: pids still alive after teardown (should always be empty)
        self.seen_pids: dict[int, str] = {}  #: every process of the run seen so far -> its replica
        #: each replica's CPU, memory and GPU memory (``replica.resources``), and the peaks for the summary
        self.resource_sampler = ResourceSampler(gpus)

    # ----- what the run holds ---------------------------------------------------------------------
    @property
    def phase(self) -> RunPhase:
        """pending, starting, running, stopping, stopped: changed only by ``enter_phase``."""
        return self._phase

    def enter_phase(self, phase: RunPhase) -> None:
        self._phase = check_phase_change(self.run_id, self._phase, phase)

    @property
    def services(self) -> list[ServiceHandle]:
        return list(self.service_map.values())

    @property
    def replicas(self) -> list[Replica]:
        return [r for s in self.service_map.values() for r in s.replicas]

    @property
    def event_history(self) -> list[Event]:
        return list(self.event_log.history)

    def service(self, name: str) -> ServiceHandle:
        """The service ``name``; ``KeyError`` naming the services."""
        if name not in self.service_map:
            raise KeyError(f"no service named {name!r}; services: {', '.join(self.service_map)}")
        return self.service_map[name]

    def targets(self, name: str) -> list[Replica]:
        """The replicas a name means: every replica of a service, or one; ``KeyError`` naming the services."""
        if name in self.service_map:
            return list(self.service_map[name].replicas)
        if name in self.replica_map:
            return [self.replica_map[name]]
        raise KeyError(f"no service or replica named {name!r}; services: {', '.join(self.service_map)}")

    def order(self, replica: Replica) -> tuple[int, int]:
        """Dependency order: the service's place in the plan, then the replica's index."""
        names = [s.name for s in self.plan.services]
        return names.index(replica.service), replica.index

    # ----- records --------------------------------------------------------------------------------
    def write_manifest(self) -> None:
        from .._records.snapshot import manifest_of, redactor_of

        self.event_log.redactor = redactor_of(self)  # events.jsonl hides the services' secrets too
        save_record(self.run_dir, "manifest.json", manifest_of(self))  # never raises: teardown goes on

    def learn_secrets(self) -> None:
        """The services' env changed (a rolled spec): the records' redactor is made again from the replicas,
        and the event log hides the new secrets from the next event on."""
        from .._records.snapshot import forget_redactor, redactor_of

        forget_redactor(self)
        self.event_log.redactor = redactor_of(self)

    def write_summary(self) -> None:
        """How the run ended, and the verification that nothing of it is left (checked on every run)."""
        from .._records.snapshot import summary_of

        save_record(self.run_dir, "summary.json", summary_of(self), indent=2)

    # ----- ReplicaHost ----------------------------------------------------------------------------
    def probe_argv(self, argv: Sequence[str], env: Mapping[str, str]) -> Sequence[str]:
        """An exec probe's command, started in the run's probe cgroup when the run is contained."""
        return self.containment.enter_probe(argv, env)

    def cgroup_of(self, replica: str) -> ReplicaCgroup | None:
        """The replica's cgroup, when its processes were started in one."""
        return self.containment.holding(replica)

    def launcher_for(self, plan: ReplicaPlan) -> Launcher:
        """This machine's launcher, or a step on the replica's nodes in the run's Slurm allocation."""
        if plan.placement is None or self.allocation is None:
            return self.launcher
        from .._host.slurm import SlurmLauncher

        return SlurmLauncher(self.allocation, plan.placement)

    def relocate(self, replica: Replica) -> None:
        """Move ``replica`` off cluster nodes that went down (``_runtime.node_loss``); the run's plan follows,
        and ``on_moved`` is told, so that the services whose templates name it (``{decode.urls}`` now holds
        its new host) follow as after a scale: each per its ``on_change``."""
        if self.allocation is not None and replica.plan.placement is not None:
            from .node_loss import relocate

            before = replica.plan
            relocate(self, self.service_map[replica.service], replica, self.allocation)
            if replica.plan is not before and self.on_moved is not None:
                self.on_moved(replica.service)

    def emit(self, event: Event) -> None:
        self.event_log.emit(event)

    def start_shielded(self, task: Callable[[], Awaitable[None]], name: str) -> None:
        """Pumps and watchers ignore outside cancellation: teardown needs them (to see exits, and to keep
        draining output while children shut down) and ends them itself when it is done."""

        async def shielded() -> None:
            with anyio.CancelScope(shield=True) as scope:
                self.task_scopes.add(scope)
                try:
                    await task()
                finally:
                    self.task_scopes.discard(scope)

        assert self.tg is not None
        self.tg.start_soon(shielded, name=name)

    def http_client(self) -> httpx.AsyncClient:
        if self.http is None:
            import httpx

            self.http = httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)
            )
        return self.http

    def track(self, replica: Replica, incarnation: Incarnation) -> None:
        self.seen_pids[incarnation.process.pid] = replica.name
        if self.watchdog is not None:
            process, stop = incarnation.process, replica.plan.stop
            self.watchdog.track(
                process.pid, process.create_time, process.pid, stop.signal, stop.grace_seconds, replica.name
            )

    def untrack(self, incarnation: Incarnation) -> None:
        """An exited leader: the watchdog forgets it (restarts would otherwise grow its list)."""
        if self.watchdog is not None:
            self.watchdog.untrack(incarnation.process.pid)
