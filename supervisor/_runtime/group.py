"""The running topology: the public handle (``RunningTopology``) and its lifecycle (``open``): start in
dependency order, hand each replica to supervision, tear everything down.

The handle owns one ``RunState`` (``_runtime.state``): the run's state with public fields, which the
modules that do the work take as their argument: starting (the watchdog, then each service in dependency
order) in ``_runtime.group_start``, each service's start and each replica's supervision (restart policy,
strategies, liveness, quorum) in ``_runtime.supervision``, stopping (a replica, a set, the whole run) in
``_runtime.group_stop``, scaling and rolling restarts in ``_runtime.scaling`` and ``_runtime.rollout``.
They call one another downward only (``group_stop`` < ``supervision`` < ``group_start``, ``scaling``,
``rollout`` < ``dependents``); what is public here is read-only views of that state and the operations.

Long-lived tasks live in one task group. Output pumps and exit watchers are shielded (teardown needs them
and ends them); each replica's supervision loop has its own cancel scope so a strategy can restart a set
of replicas. A failure that cannot be absorbed cancels the start or the caller's body, and the shielded
teardown follows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import ServiceFailed, SupervisorError
from .._events import Event, EventSubscription, Marked
from .._host.logs import mark_line
from .._plan.plan import Plan
from . import group_start as _group_start
from . import group_stop as _group_stop
from . import supervision as _supervision
from .metrics import METRICS_TIMEOUT_SECONDS, MetricsSnapshot, take_snapshot
from .replica import Replica, ReplicaState, ServiceHandle
from .run_phase import RunPhase
from .state import RunState

if TYPE_CHECKING:  # the summary, snapshot and GPU-release code loads when used, after the first spawn
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._records.summary import RunSummary
    from .._redact import Redactor
    from .._spec.model import Service

__all__ = ["Replica", "ReplicaState", "RunningTopology", "ServiceHandle"]


class RunningTopology:
    """Handle on a launched topology: ``group["svc"]``, ``group["svc.1"]``, ``run_dir``, ``events()``."""

    def __init__(self, run: RunState) -> None:
        self._run = run
        run.on_moved = self._follow_moved_soon

    # ----- what the run is, read-only (the state is the runtime's: ``_runtime.state``) ---------------
    @property
    def plan(self) -> Plan:
        """The run's plan as it is now (a scale or rolling restart makes a new one)."""
        return self._run.plan

    @property
    def run_id(self) -> str:
        return self._run.run_id

    @property
    def run_dir(self) -> Path:
        return self._run.run_dir

    @property
    def logs_dir(self) -> Path:
        return self._run.logs_dir

    @property
    def base_env(self) -> dict[str, str]:
        """The environment every replica starts from (the caller's, read once)."""
        return self._run.base_env

    @property
    def gpus(self) -> GpuInventory | None:
        return self._run.gpus

    @property
    def allocation(self) -> SlurmAllocation | None:
        """The Slurm job that placed replicas run in, if any."""
        return self._run.allocation

    @property
    def failure(self) -> ServiceFailed | None:
        """The first fatal failure, once one happened."""
        return self._run.failure

    @property
    def started_at(self) -> float:
        return self._run.started_at

    @property
    def started_wall_time(self) -> float:
        return self._run.started_wall_time

    @property
    def ready_at(self) -> float | None:
        return self._run.ready_at

    @property
    def teardown_started_at(self) -> float | None:
        return self._run.teardown_started_at

    @property
    def leftovers(self) -> list[int]:
        """Pids still alive after the teardown (always empty, unless something escaped)."""
        return self._run.leftovers

    @property
    def control_socket(self) -> Path | None:
        """Where the run's control socket listens, once it does."""
        return self._run.control_socket

    def redactor(self) -> Redactor:
        """What hides this run's secrets (the values of its services' and the caller's secret env vars) in
        text and in data, as the run's records and the control socket hide them."""
        from .._records.snapshot import redactor_of

        return redactor_of(self._run)

    # ----- public surface -------------------------------------------------------------------------
    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, run: RunState, *, on_group: Callable[[RunningTopology], None] | None = None
    ) -> AsyncIterator[RunningTopology]:
        """The one lifecycle of ``run`` (made by ``_runtime.runner``): start everything, yield once all is
        ready, always tear down (shielded).

        The outer task group holds pumps and exit watchers: it must outlive the teardown, which relies on
        them. A failure cancels only the inner scope (the start, or the caller's body), never them. The
        first fatal failure is raised after the teardown. ``on_group`` sees the group before anything
        spawns (a second Ctrl-C during startup can kill at once). A ``head_start`` of the state: the
        watchdog and first processes that ``supervisor run`` started before the event loop
        (``_runtime.headstart``), adopted here.
        """
        group = cls(run)
        if on_group is not None:
            on_group(group)
        started = False
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as body_scope:
                run.body_scope = body_scope
                try:
                    tg.start_soon(group._serve_control, name="control socket")
                    await _group_start.start(run, tg)
                    if run.plan.topology is not None and any(s.autoscale for s in run.plan.topology.services):
                        from .autoscale import follow_all

                        tg.start_soon(follow_all, run, name="autoscale")
                    started = True
                    yield group
                finally:
                    with anyio.CancelScope(shield=True):
                        await _group_stop.teardown(run)
            tg.cancel_scope.cancel()
        if run.failure is not None:
            raise run.failure
        if not started:  # ``cancel()`` (a stop through the control socket) came before all was ready
            raise SupervisorError(f"run {run.run_id}: stopped on request while starting; everything is down")

    def __getitem__(self, name: str) -> ServiceHandle | Replica:
        """A service (``"decode"``) or one replica (``"decode.1"``); see ``service()`` and ``replica()``."""
        if name in self._run.service_map:
            return self._run.service_map[name]
        if name in self._run.replica_map:
            return self._run.replica_map[name]
        raise KeyError(f"no service or replica named {name!r}; services: {', '.join(self._run.service_map)}")

    def service(self, name: str) -> ServiceHandle:
        """The service ``name`` (every replica of it)."""
        return self._run.service(name)

    def replica(self, name: str) -> Replica:
        """One replica: ``"decode.1"``, or a single-replica service's name."""
        if name not in self._run.replica_map:
            raise KeyError(f"no replica named {name!r}; replicas: {', '.join(r.name for r in self.replicas)}")
        return self._run.replica_map[name]

    def __iter__(self) -> Iterator[ServiceHandle]:
        return iter(self._run.services)

    @property
    def services(self) -> list[ServiceHandle]:
        return self._run.services

    @property
    def phase(self) -> RunPhase:
        """pending, starting, running, stopping, stopped."""
        return self._run.phase

    @property
    def containment(self) -> str:
        """How the run's processes are kept together: cgroup2, freezer (a cgroup per replica) or marks."""
        return self._run.containment.mode

    @property
    def cgroup(self) -> Path | None:
        """The run's cgroup (each replica's is a child named after it); None in mode marks."""
        return self._run.containment.path

    @property
    def replicas(self) -> list[Replica]:
        return self._run.replicas

    def events(self, *, history: bool = False) -> EventSubscription:
        """Typed events from this call on, and only those: a first loop after ``launch`` sees no
        ``Spawned`` or ``Ready`` (they are over) and waits for the next event. ``history=True`` yields the
        past ones first, then goes on (``event_history`` is the list so far). Ends when the run is over."""
        return self._run.event_log.subscribe(history=history)

    @property
    def event_history(self) -> list[Event]:
        return self._run.event_history

    def emit(self, event: Event) -> None:
        """Record ``event`` in the run's event log (``events.jsonl``, subscribers)."""
        self._run.emit(event)

    def summary(self) -> RunSummary:
        """The run summary so far (at the end, what ``summary.json`` holds): time to ready per replica and
        phase, restarts, exits, teardown times, and the critical chain that set the all-ready time."""
        from .._records.snapshot import summary_of

        return summary_of(self._run)

    def mark(self, label: str) -> Marked:
        """A bookmark ("warmup done", "load 2x"): a ``Marked`` event in ``events.jsonl`` and the line
        ``--- topovisor mark: <label> <UTC time> ---`` in every replica's log, to find a moment of a long
        benchmark in all of them. Probes and fatal-output checks never see it; ``ValueError`` for a label
        that is not one line of printable text (no control characters, escapes or line separators)."""
        event = Marked(replica="", service="", label=label)
        line = mark_line(label, event.wall_time)  # checks the label before anything is written
        self._run.emit(event)
        for replica in self.replicas:
            replica.annotate(line)
        return event

    async def snapshot_metrics(
        self, label: str, *, timeout_seconds: float = METRICS_TIMEOUT_SECONDS
    ) -> MetricsSnapshot:
        """Save the ``metrics:`` endpoint of every running replica under ``<run_dir>/metrics/<label>/``
        (``<replica>.prom`` and ``index.json``), fetched concurrently, each within ``timeout_seconds``. An
        endpoint that fails is recorded in the index, never raised; ``ValueError`` for a label that is not
        a plain name (letters, digits, ``._-``) or was used before in this run. The index is redacted as
        every record is (a URL's password); the returned snapshot, the caller's own, is not."""
        client, redact = self._run.http_client(), self.redactor().data
        return await take_snapshot(
            client, self.replicas, self.run_dir, label, redact=redact, timeout_seconds=timeout_seconds
        )

    def environment(self) -> dict[str, str]:
        """``TOPOVISOR_<SERVICE>_URL``/``_URLS``/``_PORT`` and ``TOPOVISOR_RUN_DIR``: what ``supervisor run
        FILE -- CMD`` gives CMD, for a client started some other way (``subprocess.run(..., env=...)``).
        Without ``TOPOVISOR_RUN_ID``: a process carrying that is taken for part of the run and swept."""
        return self.plan.client_env()

    async def wait(self) -> None:
        """Until no replica is active any more (jobs completed, or all stopped: also by ``stop()``); a failure
        raises in the caller instead."""
        await self._run.all_done.wait()

    async def wait_torn_down(self) -> None:
        """Until the teardown is over (by the end of ``launch``, a ``stop()``, or a failure)."""
        await self._run.torn_down.wait()

    def cancel(self) -> bool:
        """End the run as a stop signal would (``supervisor stop``, ``stop`` on the control socket): the
        body of ``launch`` is cancelled, so its own cleanup runs first (``run``'s final metrics snapshot,
        ``-- CMD``'s grace), then everything is torn down. Returns at once (``wait_torn_down()`` waits);
        False when the group was not opened by ``launch``/``open`` (then ``stop()`` does it)."""
        if self._run.body_scope is None:
            return False
        self._run.body_scope.cancel()
        return True

    async def stop(self, name: str | None = None) -> None:
        """Stop one service or replica (no restart follows), or, without a name, tear everything down."""
        if name is None:
            with anyio.CancelScope(shield=True):
                await _group_stop.teardown(self._run)
            return
        await _group_stop.stop_named(self._run, name)

    async def restart(self, name: str) -> None:
        """Restart a service (every replica) or one replica; returns once it is ready again. Dependents
        keep running unless the service's strategy says otherwise. A scale or rolling restart under way
        finishes first (operations on the run go one at a time, as a Kubernetes rollout queues edits), so
        a restart never takes down what a rollout counts on to stay above ``min_ready``."""
        await _supervision.restart_named(self._run, name)

    async def scale(self, service: str, replicas: int) -> None:
        """Run ``replicas`` replicas of ``service``: new ones get their own ports and GPUs and count once
        ready (returns then); scaling down stops the highest-numbered ones, one after another, with their
        grace. ``ConfigError`` when it cannot be done (GPUs, the plan shown; a fixed port; below
        ``min_ready``): nothing started. A new replica that fails its start undoes the whole scale and
        raises its ``ServiceFailed``; the run goes on. See ``_runtime.scaling``."""
        from .scaling import scale

        await scale(self._run, service, replicas)

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
            self._run,
            service,
            max_unavailable=max_unavailable,
            min_ready=min_ready,
            overrides=overrides,
            service_spec=service_spec,
        )

    async def autoscale(self, service: str, enabled: bool) -> dict[str, Any]:
        """Pause (``enabled=False``: the count stays as it is) or resume the ``autoscale:`` of ``service``;
        returns its state as ``autoscale_status`` shows it. ``KeyError`` for a service without one."""
        from .autoscale import switch

        return switch(self._run, service, enabled)

    def autoscale_status(self) -> dict[str, dict[str, Any]]:
        """Per service with ``autoscale:``: on or off, bounds, the metric's last value and count wanted, the
        last decision, and a count refused (the GPUs did not fit), if any."""
        from .autoscale import autoscale_status

        return autoscale_status(self._run)

    async def planner_decision(
        self,
        *,
        decision: str | int,
        replicas: Mapping[str, int],
        asked: Mapping[str, int] | None = None,
        bounds: Mapping[str, str] | None = None,
        source: str = "planner",
    ) -> dict[str, Any]:
        """Carry out an outside planner's decision (Dynamo's, through the preset's follower): each service
        of ``replicas`` scaled to its count, one after another; returns the counts now and the shortfall
        per service (``asked`` beyond ``bounds``, a scale refused or undone), once it is over. Recorded as
        ``PlannerDecided``/``PlannerDone``; decisions go one at a time. See ``_runtime.decisions``."""
        from .decisions import carry_out

        return await carry_out(
            self._run, decision=decision, replicas=replicas, asked=asked, bounds=bounds, source=source
        )

    def planner_status(self) -> dict[str, Any]:
        """The last planner decision and its outcome (``under_way`` until it is over); empty before any."""
        return self._run.planner_decisions.to_json()

    def kill_now(self) -> None:
        """SIGKILL every process of the run at once (the second Ctrl-C)."""
        _group_stop.kill_now(self._run)

    # ----- what the state cannot do itself -------------------------------------------------------
    def _follow_moved_soon(self, service: str) -> None:
        """A replica of ``service`` moved to other cluster nodes: the services whose templates name it
        follow, after any operation under way."""
        if self._run.tg is not None:
            self._run.tg.start_soon(self._follow_moved, service, name=f"follow {service}'s move")

    async def _follow_moved(self, service: str) -> None:
        from .dependents import follow_endpoints

        async with self._run.operation_lock:  # after a scale or rollout under way, as any operation
            if not self._run.stopping:
                await follow_endpoints(self._run, service)

    async def _serve_control(self) -> None:
        """The control socket (``supervisor status/restart/stop``, ``attach``): opened once the first
        replica has spawned, so it never delays the start; closed when the teardown begins."""
        run = self._run
        if run.plan.services:
            await run.conditions.wait(run.plan.services[0].name, "started")
        if run.stopping:
            return
        from .._control.protocol import socket_path
        from .._control.server import ControlServer

        run.control = ControlServer(self, socket_path(run.run_dir))
        await run.control.serve(on_listening=self._control_listening)

    def _control_listening(self, path: Path) -> None:
        if not self._run.stopping:
            self._run.control_socket = path


if TYPE_CHECKING:  # mypy checks that the group is a TopologyHandle (a test checks it at run time too)
    from .._control.handle import TopologyHandle

    _handle: type[TopologyHandle] = RunningTopology
