"""One replica of a service: its incarnations (one OS process tree each), their output, exits, and stop.

The group decides *when* (start order, restarts, strategies, teardown); this module knows *how*.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import psutil

from .._control.service_view import ServiceAddresses
from .._errors import ServiceFailed
from .._events import Event, Exited, Ready, Spawned, Stopped, Stopping, Unready
from .._host.launcher import LaunchedProcess, Launcher
from .._host.limits import describe_oom, oom_kills
from .._host.logs import LineStream, RotatingLogFile, pump_pipe
from .._host.phases import PhaseWatch, compile_phases
from .._host.probes import PollBudget, ProbeTarget, ReadinessRunner, describe_check
from .._host.process import REPLICA_ENV, RUN_ID_ENV, alive, signal_processes
from .._host.teardown import wait_gone
from .._plan.plan import ReplicaPlan, ServicePlan
from .._records.schema import ACTIVE_STATES as RECORDED_ACTIVE_STATES
from .policy import RestartBudget, compile_fatal

if TYPE_CHECKING:
    import httpx

    from .._host.containment import ReplicaCgroup
    from .._host.resources import ResourceUsage


__all__ = ["ACTIVE_STATES", "Incarnation", "Replica", "ReplicaHost", "ReplicaState", "ServiceHandle"]

KILL_WAIT_SECONDS = 30.0  # after SIGKILL; only a process stuck in the kernel (a GPU driver call) takes long


class ReplicaState(str, enum.Enum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    UNREADY = "unready"  #: missed liveness checks, not yet replaced
    RESTARTING = "restarting"  #: waiting out the backoff
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def active(self) -> bool:
        """Still running or about to: counts for quorum and keeps the run alive."""
        return self in ACTIVE_STATES


#: the records' set (``_records.schema``, the one definition, read by ``ps``/``stop``/``gc`` too), as states
ACTIVE_STATES = frozenset(state for state in ReplicaState if state.value in RECORDED_ACTIVE_STATES)


_FINISHED = frozenset(set(ReplicaState) - ACTIVE_STATES)
#: Allowed state changes. Nothing returns to PENDING; a finished replica (completed, failed, stopped)
#: runs again only through a new start (STARTING, or RESTARTING first), never straight to READY.
_ALLOWED: dict[ReplicaState, frozenset[ReplicaState]] = {
    **{state: frozenset(set(ReplicaState) - {ReplicaState.PENDING}) for state in ACTIVE_STATES},
    **{
        state: frozenset(
            {
                ReplicaState.STARTING,
                ReplicaState.RESTARTING,
                ReplicaState.STOPPING,
                ReplicaState.STOPPED,
                ReplicaState.FAILED,
            }
        )
        for state in _FINISHED
    },
}


class ReplicaHost(Protocol):
    """What a replica needs from the running group."""

    run_id: str
    base_env: dict[str, str]  #: the caller's environment, read once per run
    poll_budget: PollBudget  #: shared by every readiness probe of the run
    launcher: Launcher  #: where processes run on this machine

    def launcher_for(self, plan: ReplicaPlan) -> Launcher: ...  #: this machine, or the replica's nodes

    def relocate(self, replica: Replica) -> None: ...  #: off cluster nodes that went down, before a restart

    def emit(self, event: Event) -> None: ...

    def start_shielded(self, task: Callable[[], Awaitable[None]], name: str) -> None: ...

    def http_client(self) -> httpx.AsyncClient: ...

    #: sees every block of every replica's output (``launch(on_output=...)``); None: nobody asked, so the
    #: replicas' output goes to their files by the fast path once readiness stops reading it
    output_hook: Callable[[str, bytes], None] | None

    def track(self, replica: Replica, incarnation: Incarnation) -> None: ...

    def untrack(self, incarnation: Incarnation) -> None: ...

    def cgroup_of(self, replica: str) -> ReplicaCgroup | None: ...  #: where its processes are, if contained

    def probe_argv(self, argv: Sequence[str], env: Mapping[str, str]) -> Sequence[str]: ...  #: an exec probe's


class Incarnation:
    """One spawn of a replica: the process (leader of its own group), its output stream, how it ended."""

    def __init__(self, number: int, process: LaunchedProcess, stream: LineStream) -> None:
        self.number = number
        self.process = process
        self.stream = stream
        self.spawned_at = time.monotonic()
        self.ready_at: float | None = None
        self.exited = anyio.Event()
        self.returncode: int | None = None
        self.stop_reason: str | None = None  #: set when we asked it to stop (teardown, liveness, strategy)
        self.fatal_line: str | None = None
        self.runner: ReadinessRunner | None = None
        self.phases: PhaseWatch | None = None  #: startup phases, watched from spawn until ready
        self.env: dict[str, str] = {}  #: what the process was started with (exec probes get the same)
        #: its cgroup's OOM kill count at the spawn, when it has a memory limit (a rise is reported)
        self.oom_kills_at_spawn: int | None = None
        self.exit_reason: str | None = None  #: how it ended, when not its own doing (the OOM killer)
        self._exit_scopes: list[anyio.CancelScope] = []

    @contextlib.contextmanager
    def until_exit(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that the process's exit cancels: race a wait against the exit without a task."""
        with anyio.CancelScope() as scope:
            if self.exited.is_set():
                scope.cancel()
            self._exit_scopes.append(scope)
            try:
                yield scope
            finally:
                self._exit_scopes.remove(scope)

    def mark_exited(self, returncode: int) -> None:
        self.returncode = returncode
        self.exited.set()
        for scope in self._exit_scopes:
            scope.cancel()

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - (self.ready_at or self.spawned_at)


class Replica:
    """One process of a service, as the caller sees it: ``pid``, ``port``, ``url``, ``state``, ``log_path``."""

    def __init__(self, plan: ReplicaPlan, service: ServicePlan, log_path: Path) -> None:
        self.plan = plan
        self.service_plan = service  #: restart policy, strategy, quorum and fatal patterns, all resolved
        self.log_path = log_path
        self.state = ReplicaState.PENDING
        self.incarnation: Incarnation | None = None
        self.budget = RestartBudget(service.restart)
        self.failure: ServiceFailed | None = None  #: why it was given up on, once it was
        #: CPU, memory, processes and GPU memory at the latest sample (every few seconds); None before it
        self.resources: ResourceUsage | None = None
        # The side flags below change only through the methods that follow: each says why it changes.
        self._restarts = 0
        self._held = False
        self._restart_pending = False
        self._trial = False
        self._settled = anyio.Event()
        self._loop_scope: anyio.CancelScope | None = None
        self._fatal = compile_fatal(service.fatal)  # the plan added the built-ins
        self._phases = compile_phases(service.phases)

    def respec(self, plan: ReplicaPlan, service: ServicePlan) -> None:
        """A rolling restart's new spec (or the previous one back): its next incarnation runs ``plan``."""
        self.plan = plan
        self.service_plan = service
        self.budget = RestartBudget(service.restart)
        self._fatal = compile_fatal(service.fatal)
        self._phases = compile_phases(service.phases)

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def service(self) -> str:
        return self.plan.service

    @property
    def index(self) -> int:
        return self.plan.index

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.plan.ports)

    @property
    def port(self) -> int | None:
        return self.plan.port

    @property
    def url(self) -> str | None:
        return self.plan.url

    @property
    def api(self) -> dict[str, str]:
        return dict(self.plan.api)

    @property
    def process(self) -> LaunchedProcess | None:
        return self.incarnation.process if self.incarnation else None

    @property
    def pid(self) -> int | None:
        return self.incarnation.process.pid if self.incarnation else None

    @property
    def pids(self) -> list[int]:
        return [self.pid] if self.pid is not None else []

    @property
    def running(self) -> bool:
        return self.incarnation is not None and not self.incarnation.exited.is_set()

    @property
    def returncode(self) -> int | None:
        return self.incarnation.returncode if self.incarnation else None

    @property
    def stream(self) -> LineStream | None:
        return self.incarnation.stream if self.incarnation else None

    @property
    def phases(self) -> dict[str, float]:
        """Seconds the latest start spent in each startup phase it went through, in order (the phase
        under way: so far); e.g. ``{"weights": 41.2, "graphs": 12.0}`` once ready."""
        watch = self.incarnation.phases if self.incarnation else None
        return watch.so_far() if watch is not None else {}

    @property
    def phase(self) -> str | None:
        """The startup phase under way; None before the first one and once the start is over."""
        watch = self.incarnation.phases if self.incarnation else None
        return watch.current if watch is not None else None

    def annotate(self, line: bytes) -> None:
        """Write our own ``line`` into this replica's log (see ``LineStream.annotate``), also when no
        process of it runs (not started yet, stopped)."""
        stream = self.stream
        if stream is not None and not stream.closed:
            stream.annotate(line)
            return
        sink = RotatingLogFile(self.log_path, self.plan.log.max_bytes, self.plan.log.backups)
        try:
            sink.write_lines(line)
        finally:
            sink.close()

    def log_tail(self, lines: int = 20) -> list[str]:
        return self.incarnation.stream.tail(lines) if self.incarnation else []

    def __repr__(self) -> str:
        return f"<Replica {self.name} pid={self.pid} port={self.port} {self.state.value}>"

    # ----- side flags: read freely, changed only here ------------------------------------------------
    @property
    def restarts(self) -> int:
        """Restarts so far: by its policy, by a strategy, by a request, or by a rollout."""
        return self._restarts

    @property
    def held(self) -> bool:
        """Stopped on request: no pending start or restart may spawn it again."""
        return self._held

    @property
    def restart_pending(self) -> bool:
        """Part of a strategy restart already under way."""
        return self._restart_pending

    @property
    def trial(self) -> bool:
        """On trial (added by a scale, or rolled): until it is ready, a failure ends the operation that
        started it, not the run, and it is not restarted."""
        return self._trial

    @property
    def settled(self) -> anyio.Event:
        """Set once it is ready once, completed, or failed for good (this supervision's)."""
        return self._settled

    @property
    def loop_scope(self) -> anyio.CancelScope | None:
        """The cancel scope of its supervision loop, once handed to one."""
        return self._loop_scope

    def begin_supervision(self) -> anyio.CancelScope:
        """A new supervision loop takes it: not settled, no strategy restart pending, a fresh scope."""
        self._settled = anyio.Event()
        self._restart_pending = False
        self._loop_scope = anyio.CancelScope()
        return self._loop_scope

    def settle(self) -> None:
        self._settled.set()

    def count_restart(self) -> None:
        self._restarts += 1

    def hold(self) -> None:
        self._held = True

    def unhold(self) -> None:
        self._held = False

    def join_strategy_restart(self) -> None:
        self._restart_pending = True

    def begin_trial(self) -> None:
        self._trial = True

    def end_trial(self) -> None:
        self._trial = False

    def transition(
        self, state: ReplicaState, event: Event | None = None, emit: Callable[[Event], None] | None = None
    ) -> None:
        """The one way the state changes: refuses a change the life cycle does not allow (a bug), and
        emits ``event`` with it, so the event log and the state never disagree."""
        if state is not self.state and state not in _ALLOWED[self.state]:
            raise RuntimeError(f"replica {self.name}: no transition from {self.state.value} to {state.value}")
        self.state = state
        if event is not None:
            assert emit is not None, "an event needs somewhere to go"
            emit(event)

    # ----- spawn ----------------------------------------------------------------------------------
    def spawn(self, host: ReplicaHost) -> Incarnation:
        """Start a new incarnation; its readiness runner subscribes before the first byte is read."""
        if self.incarnation is not None and self.plan.placement is not None:
            host.relocate(self)  # a node of its step may have gone down with the last incarnation
        plan = self.plan
        env = {**plan.environment(host.base_env), RUN_ID_ENV: host.run_id, REPLICA_ENV: plan.name}
        stream = LineStream(RotatingLogFile(self.log_path, plan.log.max_bytes, plan.log.backups))
        hook = host.output_hook
        if hook is not None:
            stream.subscribe(lambda block: hook(plan.name, block))
        try:
            if plan.profile is not None:  # nsys and py-spy do not create the directory of their output
                if self.incarnation is not None:  # first: rocprof's report is the directory itself
                    plan.profile.keep_previous(self.incarnation.number)
                os.makedirs(plan.profile.directory, mode=0o700, exist_ok=True)
            process = host.launcher_for(plan).launch(plan.argv, env, plan.cwd)
        except OSError as exc:
            stream.close()
            raise ServiceFailed(plan.name, f"cannot start {plan.argv[0]!r}: {exc.strerror or exc}") from None
        if self.incarnation is not None:  # normally released by its stop; this catches a stuck leftover
            _release(host, self.incarnation)
        number = self.incarnation.number + 1 if self.incarnation else 0
        incarnation = Incarnation(number, process, stream)
        spawned_at = getattr(process, "spawned_at", None)  # a local child's own; a head-started one's is earlier
        if spawned_at is not None:
            incarnation.spawned_at = spawned_at
        incarnation.env = env
        if plan.ready is not None and self._phases:  # without a probe it is ready at once: no phases
            incarnation.phases = PhaseWatch(
                self._phases,
                stream,
                replica=plan.name,
                service=plan.service,
                spawned_at=incarnation.spawned_at,
                emit=host.emit,
            )
        if plan.ready is not None:
            target = ProbeTarget(plan.name, plan.service, plan.index, process.pid, plan.host, plan.ports)
            incarnation.runner = ReadinessRunner(
                plan.ready,
                target=target,
                stream=stream,
                env=env,
                http_client=host.http_client,
                budget=host.poll_budget,
                wrap_exec=host.probe_argv,
            )
        self.incarnation = incarnation
        cgroup = host.cgroup_of(plan.name)
        if cgroup is not None and cgroup.limits is not None and cgroup.limits.memory_max_bytes is not None:
            incarnation.oom_kills_at_spawn = oom_kills(cgroup.path, cgroup.extras)
        host.track(self, incarnation)
        host.start_shielded(lambda: self._pump(incarnation), name=f"pump {plan.name}")
        host.start_shielded(lambda: self._watch(incarnation, host), name=f"watch {plan.name}")
        now, when = time.monotonic(), time.time()
        spawned = Spawned(
            replica=plan.name,
            service=plan.service,
            pid=process.pid,
            monotonic=incarnation.spawned_at,
            wall_time=when - (now - incarnation.spawned_at),
        )
        self.transition(ReplicaState.STARTING, spawned, host.emit)
        return incarnation

    def liveness_runner(self, host: ReplicaHost, incarnation: Incarnation) -> ReadinessRunner | None:
        plan = self.plan
        if plan.alive is None:
            return None
        target = ProbeTarget(plan.name, plan.service, plan.index, incarnation.process.pid, plan.host, plan.ports)
        return ReadinessRunner(
            plan.alive,
            target=target,
            stream=incarnation.stream,
            env=incarnation.env,
            http_client=host.http_client,
            liveness=True,
            wrap_exec=host.probe_argv,
        )

    def find_fatal_line(self, incarnation: Incarnation) -> str | None:
        """The line of the last 64 KiB of output that says a restart cannot help, if any.

        Only the end is read: that is where a process says why it died, it costs nothing while the
        service runs, and an old recovered error (an OOM in one request hours ago) does not count.
        """
        if self._fatal is None:
            return None
        text = incarnation.stream.tail_text()
        match = self._fatal.search(text)
        if match is None:
            return None
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        return text[start : end if end >= 0 else len(text)]

    async def _pump(self, incarnation: Incarnation) -> None:
        fd = incarnation.process.output_fd
        try:
            await pump_pipe(fd, incarnation.stream)
        finally:
            os.close(fd)

    async def _watch(self, incarnation: Incarnation, host: ReplicaHost) -> None:
        code = await incarnation.process.wait()  # the leader stays unreaped: its group is still ours
        signame = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None
        incarnation.exit_reason = _oom_reason(host.cgroup_of(self.name), incarnation, code)
        host.emit(
            Exited(
                replica=self.name,
                service=self.service,
                pid=incarnation.process.pid,
                exit_code=code if code >= 0 else None,
                signal=signame,
                expected=incarnation.stop_reason is not None,
                reason=incarnation.exit_reason,
            )
        )
        incarnation.mark_exited(code)  # the watchdog keeps its group until the leader is reaped (``stop``)

    async def watch_liveness(self, host: ReplicaHost, incarnation: Incarnation, runner: ReadinessRunner) -> str | None:
        """Check every period; a miss makes the replica unready, ``failures`` misses in a row replace it.
        Returns the reason to replace it, or None once the incarnation exited by itself."""
        probe = runner.probe
        misses = 0
        with incarnation.until_exit():
            await anyio.sleep(probe.initial_delay_seconds)
            while True:
                await anyio.sleep(probe.alive_period)
                check = await runner.check_once()
                if check.ok:
                    if misses and self.state is ReplicaState.UNREADY:
                        ready = Ready(replica=self.name, service=self.service, pid=incarnation.process.pid, seconds=0.0)
                        self.transition(ReplicaState.READY, ready, host.emit)
                    misses = 0
                    continue
                misses += 1
                if misses == 1 and self.state is ReplicaState.READY:
                    unready = Unready(replica=self.name, service=self.service, reason=check.detail)
                    self.transition(ReplicaState.UNREADY, unready, host.emit)
                if misses >= probe.failures:
                    return (
                        f"liveness probe {describe_check(probe.check)} failed {misses} times in a row, "
                        f"last: {check.detail}"
                    )
        return None

    # ----- stop -----------------------------------------------------------------------------------
    async def stop(
        self, host: ReplicaHost, others: list[psutil.Process], *, reason: str, kill_now: bool = False
    ) -> None:
        """Stop signal to the process group and every other process of this replica; SIGKILL after the
        grace; return once all of them are gone, then release the leader's pid. ``others`` come from the
        scan for the run's mark and for members of the replica's process group: an env-scrubbed child
        (``env -i``) carries no mark but is still in the group after its leader exited."""
        incarnation = self.incarnation
        if incarnation is None:
            return
        process = incarnation.process
        others = [p for p in others if p.pid != process.pid]
        if incarnation.exited.is_set() and not any(alive(p) for p in others):
            _release(host, incarnation)
            return
        incarnation.stop_reason = incarnation.stop_reason or reason
        stop_signal = signal.SIGKILL if kill_now else signal.Signals[self.plan.stop.signal]
        began = time.monotonic()
        stopping = Stopping(replica=self.name, service=self.service, signal=stop_signal.name, reason=reason)
        self.transition(ReplicaState.STOPPING, stopping, host.emit)
        if stop_signal is signal.SIGKILL or not (self.plan.profile and self.plan.profile.wraps):
            process.signal_group(stop_signal)
        # else the leader is a profiler: it writes its report once the program (one of ``others``, a member
        # of its group) exited; py-spy would die on SIGTERM without writing it. SIGKILL after the grace.
        signal_processes(others, stop_signal)
        cgroup = host.cgroup_of(self.name)
        killed = False
        with anyio.move_on_after(self.plan.stop.grace_seconds) as grace:
            await _gone(incarnation, others, cgroup)
        if grace.cancelled_caught:
            killed = True
            process.signal_group(signal.SIGKILL)
            signal_processes(others, signal.SIGKILL)
            if cgroup is not None:  # and whatever it forked meanwhile, in any session or group
                cgroup.kill()
            with anyio.move_on_after(KILL_WAIT_SECONDS):
                await _gone(incarnation, others, cgroup)
        if incarnation.exited.is_set() and not any(alive(p) for p in others) and not _populated(cgroup):
            _release(host, incarnation)  # else the teardown's sweep still needs the group pinned
        host.emit(Stopped(replica=self.name, service=self.service, seconds=time.monotonic() - began, killed=killed))

    def kill_now(self) -> None:
        if self.incarnation is not None and not self.incarnation.process.reaped:
            self.incarnation.stop_reason = self.incarnation.stop_reason or "killed"
            self.incarnation.process.signal_group(signal.SIGKILL)


class ServiceHandle(ServiceAddresses):
    """All replicas of one service; ``port``/``url`` are those of replica 0."""

    replicas: list[Replica]

    def __init__(self, plan: ServicePlan, replicas: list[Replica]) -> None:
        self.plan = plan
        self.name = plan.name
        self.replicas = replicas

    @property
    def ready_count(self) -> int:
        return sum(r.state is ReplicaState.READY for r in self.replicas)

    def __repr__(self) -> str:
        return f"<Service {self.name} x{len(self.replicas)} pids={self.pids}>"


async def _gone(incarnation: Incarnation, others: list[psutil.Process], cgroup: ReplicaCgroup | None = None) -> None:
    await incarnation.exited.wait()
    await wait_gone(others)
    delay = 0.001
    while _populated(cgroup):  # a fork made after the stop signal is in no list, but in the cgroup
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.02)


def _populated(cgroup: ReplicaCgroup | None) -> bool:
    return cgroup is not None and cgroup.populated()


def _oom_reason(cgroup: ReplicaCgroup | None, incarnation: Incarnation, code: int) -> str | None:
    """``killed by the OOM killer (memory_max 64MB)`` when its cgroup's OOM kill count rose since the spawn."""
    before = incarnation.oom_kills_at_spawn
    limit = cgroup.limits.memory_max_bytes if cgroup is not None and cgroup.limits is not None else None
    if before is None or cgroup is None or limit is None or oom_kills(cgroup.path, cgroup.extras) <= before:
        return None
    return describe_oom(code, limit)


def _release(host: ReplicaHost, incarnation: Incarnation) -> None:
    """The leader exited and nothing of its group is left: reap it (its pid may be reused from now on), so
    the watchdog forgets it. Not before: a leader that exited while a member of its group lives on (an
    ``env -i`` child that ignores SIGTERM) keeps the group tracked, and a SIGKILLed supervisor's watchdog
    still sweeps it."""
    incarnation.process.reap()
    host.untrack(incarnation)
