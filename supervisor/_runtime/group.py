"""The running topology: the public handle (``RunningTopology``) and its lifecycle (``open``): start in
dependency order, hand each replica to supervision, tear everything down.

Starting (the watchdog, each service in dependency order, each replica's spawn) lives in ``_runtime.group_start``,
start conditions in ``_runtime.conditions``, each replica's supervision (restart policy, strategies, liveness,
quorum) in ``_runtime.supervision``, stopping (a replica, a set, the whole run) in ``_runtime.group_stop``,
the stop order and the final sweep's rounds in ``_host.teardown``. The group keeps the state; those
modules are functions over it that call one another directly (supervision and live operations stop
through ``group_stop``, operations launch through ``group_start``), each typing the group by a protocol
that extends the one below: ``StoppingGroup`` < ``SupervisedGroup`` < ``StartingGroup`` < ``LiveGroup``.

Long-lived tasks live in one task group. Output pumps and exit watchers are shielded (teardown needs them
and ends them); each replica's supervision loop has its own cancel scope so a strategy can restart a set
of replicas. A failure that cannot be absorbed cancels the start or the caller's body, and the shielded
teardown follows.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from .._errors import ConfigError, ServiceFailed, SupervisorError
from .._events import Event, EventLog, EventSubscription, Marked
from .._host.launcher import Launcher, LocalLauncher
from .._host.logs import mark_line
from .._host.probes import PollBudget
from .._host.watchdog import Watchdog
from .._plan.plan import Plan, ReplicaPlan
from .._records.record import save_record
from . import group_start as _group_start
from . import group_stop as _group_stop
from . import supervision as _supervision
from .conditions import StartConditions
from .metrics import METRICS_TIMEOUT_SECONDS, MetricsSnapshot, take_snapshot
from .replica import Incarnation, Replica, ReplicaState, ServiceHandle
from .run_phase import RunPhase, check_phase_change

if TYPE_CHECKING:  # the summary, snapshot and GPU-release code loads when used, after the first spawn
    import httpx

    from .._control.server import ControlServer
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._plan.ports import PortAllocator
    from .._records.summary import RunSummary
    from .._spec.model import Service
    from .headstart import HeadStart

__all__ = ["Replica", "ReplicaState", "RunningTopology", "ServiceHandle"]


class RunningTopology:
    """Handle on a launched topology: ``group["svc"]``, ``group["svc.1"]``, ``run_dir``, ``events()``."""

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
    ) -> None:
        self.plan = plan
        self.gpus = gpus  #: checked after teardown: the GPUs must stop listing our processes
        self.gpus_before = gpus_before  #: (gpu, pid) listed before the first spawn (``listed_before``)
        self.run_id = plan.run_id
        self.base_env = {"PYTHONUNBUFFERED": "1", **os.environ}  # output reaches the logs as it is printed
        self.poll_budget = PollBudget()
        #: a head start (``supervisor run``) already spawned the first replicas: it hands them over
        self.launcher: Launcher = launcher or head_start or LocalLauncher()
        self._head_start = head_start
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
        self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run_dir, 0o700)
        self._on_output = on_output
        self._events = EventLog(self.run_dir / "events.jsonl", hook=on_event)
        self._services: dict[str, ServiceHandle] = {}
        self._replicas: dict[str, Replica] = {}
        for service in plan.services:
            replicas = [Replica(r, service, self.logs_dir / f"{r.name}.log") for r in service.replicas]
            self._services[service.name] = ServiceHandle(service, replicas)
            self._replicas.update({r.name: r for r in replicas})
            for r in replicas:
                self._replicas.setdefault(f"{service.name}.{r.index}", r)
        self._conditions = StartConditions(s.name for s in plan.services)
        self._tg: TaskGroup | None = None
        self._task_scopes: set[anyio.CancelScope] = set()
        self._body_scope: anyio.CancelScope | None = None
        self._http: httpx.AsyncClient | None = None
        self._watchdog: Watchdog | None = None
        self._control: ControlServer | None = None
        self.control_socket: Path | None = None  #: where the run's control socket listens, once it does
        self._restart_lock = anyio.Lock()
        self._operation_lock = anyio.Lock()  #: one scale, rollout, restart or stop(name) at a time
        self._retired: list[Replica] = []  #: scaled away; kept for the final sweep and a kill
        self._ports: PortAllocator | None = None  #: for replicas added while the run goes on
        self._stopping = False
        self._kill_now = False
        self._torn_down = anyio.Event()
        self._all_done = anyio.Event()
        self.failure: ServiceFailed | None = None  #: the first fatal failure, once one happened
        self.started_at = time.monotonic() if head_start is None else head_start.began_at
        self.started_wall_time = time.time() if head_start is None else head_start.began_wall_time
        self.ready_at: float | None = None
        self.teardown_started_at: float | None = None  #: monotonic, once the teardown began
        self._phase = RunPhase.PENDING
        self.leftovers: list[int] = []  #: pids still alive after teardown (should always be empty)
        self._seen_pids: dict[int, str] = {}  #: every process of the run seen so far -> its replica

    # ----- public surface -------------------------------------------------------------------------
    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        plan: Plan,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
        on_group: Callable[[RunningTopology], None] | None = None,
        launcher: Launcher | None = None,
        gpus: GpuInventory | None = None,
        gpus_before: frozenset[tuple[int, int]] | None = None,
        head_start: HeadStart | None = None,
        allocation: SlurmAllocation | None = None,
    ) -> AsyncIterator[RunningTopology]:
        """The one lifecycle: start everything, yield once all is ready, always tear down (shielded).

        The outer task group holds pumps and exit watchers: it must outlive the teardown, which relies on
        them. A failure cancels only the inner scope (the start, or the caller's body), never them. The
        first fatal failure is raised after the teardown. ``on_group`` sees the group before anything
        spawns (a second Ctrl-C during startup can kill at once). ``head_start``: the watchdog and first
        processes that ``supervisor run`` started before the event loop (``_runtime.headstart``), adopted here.
        """
        group = cls(
            plan,
            on_event=on_event,
            on_output=on_output,
            launcher=launcher,
            gpus=gpus,
            gpus_before=gpus_before,
            head_start=head_start,
            allocation=allocation,
        )
        if on_group is not None:
            on_group(group)
        started = False
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as body_scope:
                group._body_scope = body_scope
                try:
                    await _group_start.start(group, tg)
                    started = True
                    yield group
                finally:
                    with anyio.CancelScope(shield=True):
                        await _group_stop.teardown(group)
            tg.cancel_scope.cancel()
        if group.failure is not None:
            raise group.failure
        if not started:  # ``cancel()`` (a stop through the control socket) came before all was ready
            raise SupervisorError(f"run {group.run_id}: stopped on request while starting; everything is down")

    def __getitem__(self, name: str) -> ServiceHandle | Replica:
        """A service (``"decode"``) or one replica (``"decode.1"``); see ``service()`` and ``replica()``."""
        if name in self._services:
            return self._services[name]
        if name in self._replicas:
            return self._replicas[name]
        raise KeyError(f"no service or replica named {name!r}; services: {', '.join(self._services)}")

    def service(self, name: str) -> ServiceHandle:
        """The service ``name`` (every replica of it)."""
        if name not in self._services:
            raise KeyError(f"no service named {name!r}; services: {', '.join(self._services)}")
        return self._services[name]

    def replica(self, name: str) -> Replica:
        """One replica: ``"decode.1"``, or a single-replica service's name."""
        if name not in self._replicas:
            raise KeyError(f"no replica named {name!r}; replicas: {', '.join(r.name for r in self.replicas)}")
        return self._replicas[name]

    def __iter__(self) -> Iterator[ServiceHandle]:
        return iter(self._services.values())

    @property
    def services(self) -> list[ServiceHandle]:
        return list(self._services.values())

    @property
    def phase(self) -> RunPhase:
        """pending, starting, running, stopping, stopped: changed only by ``enter_phase``."""
        return self._phase

    def enter_phase(self, phase: RunPhase) -> None:
        self._phase = check_phase_change(self.run_id, self._phase, phase)

    @property
    def replicas(self) -> list[Replica]:
        return [r for s in self._services.values() for r in s.replicas]

    def events(self, *, history: bool = False) -> EventSubscription:
        """Typed events from now on (with ``history``, past ones first); ends when the run is over."""
        return self._events.subscribe(history=history)

    @property
    def event_history(self) -> list[Event]:
        return list(self._events.history)

    def summary(self) -> RunSummary:
        """The run summary so far (at the end, what ``summary.json`` holds): time to ready per replica and
        phase, restarts, exits, teardown times, and the critical chain that set the all-ready time."""
        from .._records.snapshot import summary_of

        return summary_of(self)

    def mark(self, label: str) -> Marked:
        """A bookmark ("warmup done", "load 2x"): a ``Marked`` event in ``events.jsonl`` and the line
        ``--- topovisor mark: <label> <UTC time> ---`` in every replica's log, to find a moment of a long
        benchmark in all of them. Probes and fatal-output checks never see it; ``ValueError`` for a label
        that is not one line of text."""
        event = Marked(replica="", service="", label=label)
        line = mark_line(label, event.wall_time)  # checks the label before anything is written
        self.emit(event)
        for replica in self.replicas:
            replica.annotate(line)
        return event

    async def snapshot_metrics(
        self, label: str, *, timeout_seconds: float = METRICS_TIMEOUT_SECONDS
    ) -> MetricsSnapshot:
        """Save the ``metrics:`` endpoint of every running replica under ``<run_dir>/metrics/<label>/``
        (``<replica>.prom`` and ``index.json``), fetched concurrently, each within ``timeout_seconds``. An
        endpoint that fails is recorded in the index, never raised; ``ValueError`` for a label that is not
        a plain name (letters, digits, ``._-``) or was used before in this run."""
        return await take_snapshot(
            self.http_client(), self.replicas, self.run_dir, label, timeout_seconds=timeout_seconds
        )

    def environment(self) -> dict[str, str]:
        """``TOPOVISOR_<SERVICE>_URL``/``_URLS``/``_PORT`` and ``TOPOVISOR_RUN_DIR``: what ``supervisor run
        FILE -- CMD`` gives CMD, for a client started some other way (``subprocess.run(..., env=...)``).
        Without ``TOPOVISOR_RUN_ID``: a process carrying that is taken for part of the run and swept."""
        return self.plan.client_env()

    async def wait(self) -> None:
        """Until no replica is active any more (jobs completed, or all stopped: also by ``stop()``); a failure
        raises in the caller instead."""
        await self._all_done.wait()

    async def wait_torn_down(self) -> None:
        """Until the teardown is over (by the end of ``launch``, a ``stop()``, or a failure)."""
        await self._torn_down.wait()

    def cancel(self) -> bool:
        """End the run as a stop signal would (``supervisor stop``, ``stop`` on the control socket): the
        body of ``launch`` is cancelled, so its own cleanup runs first (``run``'s final metrics snapshot,
        ``-- CMD``'s grace), then everything is torn down. Returns at once (``wait_torn_down()`` waits);
        False when the group was not opened by ``launch``/``open`` (then ``stop()`` does it)."""
        if self._body_scope is None:
            return False
        self._body_scope.cancel()
        return True

    async def stop(self, name: str | None = None) -> None:
        """Stop one service or replica (no restart follows), or, without a name, tear everything down."""
        if name is None:
            with anyio.CancelScope(shield=True):
                await _group_stop.teardown(self)
            return
        self._targets(name)  # KeyError naming the services, at once
        async with self._operation_lock:  # after a scale or rollout under way (it would start it again)
            targets = self._targets(name)
            for replica in targets:
                replica.hold()  # a start or strategy restart still pending must leave it alone
            async with self._restart_lock:
                for replica in targets:
                    if replica.loop_scope is not None:
                        replica.loop_scope.cancel()
                await _group_stop.stop_in_order(self, targets, reason="stop requested")
                for replica in targets:
                    if replica.state.active:
                        replica.transition(ReplicaState.STOPPED)
        _supervision.check_done(self)

    async def restart(self, name: str) -> None:
        """Restart a service (every replica) or one replica; returns once it is ready again. Dependents
        keep running unless the service's strategy says otherwise. A scale or rolling restart under way
        finishes first (operations on the run go one at a time, as a Kubernetes rollout queues edits), so
        a restart never takes down what a rollout counts on to stay above ``min_ready``."""
        self._targets(name)  # KeyError naming the services, at once
        async with self._operation_lock:
            await self._restart(name)

    async def _restart(self, name: str) -> None:
        targets = self._targets(name)  # again: a scale just done may have removed or added replicas
        service = targets[0].service
        strategy = targets[0].service_plan.strategy
        if strategy == "rest_for_one":
            affected = self.plan.dependents_closure(service)
            targets = sorted(
                {*targets, *(r for s in affected[1:] for r in self._services[s].replicas)}, key=self._order
            )
        elif strategy == "one_for_all":
            targets = self.replicas
        for replica in targets:
            replica.count_restart()
            replica.unhold()
        if self._all_done.is_set():  # everything had stopped; now something runs again
            self._all_done = anyio.Event()
        await _supervision.restart_set(self, targets, delay_seconds=0.0, reason="restart requested", wait=True)

    async def scale(self, service: str, replicas: int) -> None:
        """Run ``replicas`` replicas of ``service``: new ones get their own ports and GPUs and count once
        ready (returns then); scaling down stops the highest-numbered ones, one after another, with their
        grace. ``ConfigError`` when it cannot be done (GPUs, the plan shown; a fixed port; below
        ``min_ready``): nothing started. A new replica that fails its start undoes the whole scale and
        raises its ``ServiceFailed``; the run goes on. See ``_runtime.scaling``."""
        from .scaling import scale

        await scale(self, service, replicas)

    async def rolling_restart(
        self,
        service: str,
        *,
        max_unavailable: int = 1,
        min_ready: int | None = None,
        overrides: Mapping[str, str] | None = None,
        service_spec: Service | None = None,
    ) -> None:
        """Restart ``service`` replica by replica (``max_unavailable`` at a time) on their own ports, never
        below ``min_ready`` ready; on a new spec from ``overrides`` (``--set`` style, the file re-loaded) or
        ``service_spec``. A replica that fails stops the rollout and goes back to its previous spec; the
        others keep serving; its ``ServiceFailed`` says which and why. See ``_runtime.rollout``."""
        from .rollout import rolling_restart

        await rolling_restart(
            self,
            service,
            max_unavailable=max_unavailable,
            min_ready=min_ready,
            overrides=overrides,
            service_spec=service_spec,
        )

    def kill_now(self) -> None:
        """SIGKILL every process of the run at once (the second Ctrl-C)."""
        _group_stop.kill_now(self)

    # ----- ReplicaHost ----------------------------------------------------------------------------
    def launcher_for(self, plan: ReplicaPlan) -> Launcher:
        """This machine's launcher, or a step on the replica's nodes in the run's Slurm allocation."""
        if plan.placement is None or self.allocation is None:
            return self.launcher
        from .._host.slurm import SlurmLauncher

        return SlurmLauncher(self.allocation, plan.placement)

    def relocate(self, replica: Replica) -> None:
        """Move ``replica`` off cluster nodes that went down (``_runtime.node_loss``); the run's plan follows, and
        so do the services whose templates name it (``{decode.urls}`` now holds its new host), as after a
        scale: each per its ``on_change``."""
        if self.allocation is not None and replica.plan.placement is not None:
            from .node_loss import relocate

            before = replica.plan
            relocate(self, self._services[replica.service], replica, self.allocation)
            if replica.plan is not before and self._tg is not None:
                self._tg.start_soon(self._follow_moved, replica.service, name=f"follow {replica.name}'s move")

    async def _follow_moved(self, service: str) -> None:
        from .dependents import follow_endpoints

        async with self._operation_lock:  # after a scale or rollout under way, as any operation
            if not self._stopping:
                await follow_endpoints(self, service)

    def emit(self, event: Event) -> None:
        self._events.emit(event)

    def start_shielded(self, task: Callable[[], Awaitable[None]], name: str) -> None:
        """Pumps and watchers ignore outside cancellation: teardown needs them (to see exits, and to keep
        draining output while children shut down) and ends them itself when it is done."""

        async def shielded() -> None:
            with anyio.CancelScope(shield=True) as scope:
                self._task_scopes.add(scope)
                try:
                    await task()
                finally:
                    self._task_scopes.discard(scope)

        assert self._tg is not None
        self._tg.start_soon(shielded, name=name)

    def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)
            )
        return self._http

    def track(self, replica: Replica, incarnation: Incarnation) -> None:
        self._seen_pids[incarnation.process.pid] = replica.name
        if self._watchdog is not None:
            process, stop = incarnation.process, replica.plan.stop
            self._watchdog.track(
                process.pid, process.create_time, process.pid, stop.signal, stop.grace_seconds, replica.name
            )

    def untrack(self, incarnation: Incarnation) -> None:
        """An exited leader: the watchdog forgets it (restarts would otherwise grow its list)."""
        if self._watchdog is not None:
            self._watchdog.untrack(incarnation.process.pid)

    def on_output(self, replica: str, block: bytes) -> None:
        if self._on_output is not None:
            self._on_output(replica, block)

    # ----- start (``_runtime.group_start``) ---------------------------------------------------------------
    async def _start_service(self, name: str, replicas: list[Replica] | None) -> None:
        await _group_start.start_service(self, name, replicas)

    async def _serve_control(self) -> None:
        """The control socket (``supervisor status/restart/stop``, ``attach``): opened once the first
        replica has spawned, so it never delays the start; closed when the teardown begins."""
        if self.plan.services:
            await self._conditions.wait(self.plan.services[0].name, "started")
        if self._stopping:
            return
        from .._control.protocol import socket_path
        from .._control.server import ControlServer

        self._control = ControlServer(self, socket_path(self.run_dir))
        await self._control.serve(on_listening=self._control_listening)

    def _control_listening(self, path: Path) -> None:
        if not self._stopping:
            self.control_socket = path

    def _targets(self, name: str) -> list[Replica]:
        target = self[name]
        return list(target.replicas) if isinstance(target, ServiceHandle) else [target]

    def _order(self, replica: Replica) -> tuple[int, int]:
        names = [s.name for s in self.plan.services]
        return names.index(replica.service), replica.index

    # ----- stopping (``_runtime.group_stop``) -------------------------------------------------------------
    # ----- record ---------------------------------------------------------------------------------
    def _write_manifest(self) -> None:
        from .._records.snapshot import manifest_of, redactor_of

        self._events.redactor = redactor_of(self)  # events.jsonl hides the services' secrets too
        save_record(self.run_dir, "manifest.json", manifest_of(self))  # never raises: teardown goes on

    def _write_summary(self) -> None:
        """How the run ended, and the verification that nothing of it is left (checked on every run)."""
        from .._records.snapshot import summary_of

        save_record(self.run_dir, "summary.json", summary_of(self), indent=2)


if TYPE_CHECKING:  # mypy checks that the group is a TopologyHandle (a test checks it at run time too)
    from .._control.handle import TopologyHandle

    _handle: type[TopologyHandle] = RunningTopology
