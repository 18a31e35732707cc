"""The running topology: spawns replicas in dependency order, probes them, watches them, tears them down.

One task group holds every long-lived task (output pumps, exit watchers). A replica that dies when it
should be running raises ``ServiceFailed`` inside that group, which cancels whatever the caller is doing
and leads to the (shielded) teardown.
"""

from __future__ import annotations

import enum
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import psutil
from anyio.abc import TaskGroup

from .errors import ReadinessTimeout, ServiceFailed
from .events import Completed, Event, EventLog, Exited, Failed, Ready, Spawned, Stopped, Stopping
from .logs import LineStream, RotatingLogFile, pump_pipe
from .plan import Plan, ReplicaPlan, ServicePlan
from .probes import ProbeTarget, ReadinessRunner, describe_check
from .process import (
    REPLICA_ENV,
    RUN_ID_ENV,
    ChildProcess,
    alive,
    describe_exit,
    marked_processes,
    signal_processes,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["Replica", "ReplicaState", "RunningTopology", "ServiceHandle"]

_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE", re.IGNORECASE)
_KILL_WAIT_SECONDS = 30.0  # after SIGKILL; only a process stuck in the kernel (a GPU driver call) takes long


class ReplicaState(str, enum.Enum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Replica:
    """One process of a service, as the caller sees it: ``pid``, ``port``, ``url``, ``state``, ``log_path``."""

    def __init__(self, plan: ReplicaPlan, log_path: Path) -> None:
        self.plan = plan
        self.log_path = log_path
        self.state = ReplicaState.PENDING
        self.process: ChildProcess | None = None
        self.stream: LineStream | None = None
        self.spawned_at: float | None = None
        self.exited = anyio.Event()
        self.returncode: int | None = None
        self.stopping = False

    name = property(lambda self: self.plan.name)
    service = property(lambda self: self.plan.service)
    index = property(lambda self: self.plan.index)
    ports = property(lambda self: dict(self.plan.ports))
    port = property(lambda self: self.plan.port)
    url = property(lambda self: self.plan.url)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def pids(self) -> list[int]:
        return [self.pid] if self.pid is not None else []

    def log_tail(self, lines: int = 20) -> list[str]:
        return self.stream.tail(lines) if self.stream else []

    def __repr__(self) -> str:
        return f"<Replica {self.name} pid={self.pid} port={self.port} {self.state.value}>"


class ServiceHandle:
    """All replicas of one service; ``port``/``url`` are those of replica 0."""

    def __init__(self, plan: ServicePlan, replicas: list[Replica]) -> None:
        self.plan = plan
        self.name = plan.name
        self.replicas = replicas

    @property
    def pids(self) -> list[int]:
        return [pid for r in self.replicas for pid in r.pids]

    @property
    def port(self) -> int | None:
        return self.replicas[0].port if self.replicas else None

    @property
    def ports(self) -> dict[str, int]:
        return self.replicas[0].ports if self.replicas else {}

    @property
    def url(self) -> str | None:
        return self.replicas[0].url if self.replicas else None

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.url]

    def __repr__(self) -> str:
        return f"<Service {self.name} x{len(self.replicas)} pids={self.pids}>"


class RunningTopology:
    """Handle on a launched topology: ``group["svc"]``, ``group["svc.1"]``, ``run_dir``, ``events()``."""

    def __init__(
        self,
        plan: Plan,
        *,
        on_event: Callable[[Event], None] | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.plan = plan
        self._on_output = on_output
        self.run_id = plan.run_id
        self.run_dir = plan.run_dir
        self.logs_dir = plan.run_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run_dir, 0o700)
        self._events = EventLog(self.run_dir / "events.jsonl", hook=on_event)
        self._services: dict[str, ServiceHandle] = {}
        self._replicas: dict[str, Replica] = {}
        for service in plan.services:
            replicas = [Replica(r, self.logs_dir / f"{r.name}.log") for r in service.replicas]
            self._services[service.name] = ServiceHandle(service, replicas)
            self._replicas.update({r.name: r for r in replicas})
            for r in replicas:
                self._replicas.setdefault(f"{service.name}.{r.index}", r)
        self._conditions = {
            s.name: {c: anyio.Event() for c in ("started", "ready", "completed")} for s in plan.services
        }
        self._tg: TaskGroup | None = None
        self._task_scopes: list[anyio.CancelScope] = []
        self._body_scope: anyio.CancelScope | None = None
        self.failure: ServiceFailed | None = None  #: the first fatal failure, once one happened
        self._http: httpx.AsyncClient | None = None
        self._stopping = False
        self._kill_now = False
        self._torn_down = anyio.Event()
        self._all_done = anyio.Event()
        self.started_at = time.monotonic()
        self._started_wall = time.time()
        self.phase = "pending"  #: pending, starting, running, stopping, stopped
        self.ready_at: float | None = None
        self.leftovers: list[int] = []  #: pids still alive after teardown (should always be empty)

    # ----- public surface -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        if name in self._services:
            return self._services[name]
        if name in self._replicas:
            return self._replicas[name]
        raise KeyError(f"no service or replica named {name!r}; services: {', '.join(self._services)}")

    def __iter__(self) -> Iterator[ServiceHandle]:
        return iter(self._services.values())

    @property
    def services(self) -> list[ServiceHandle]:
        return list(self._services.values())

    @property
    def replicas(self) -> list[Replica]:
        return [r for s in self._services.values() for r in s.replicas]

    def events(self, *, history: bool = False) -> AsyncIterator[Event]:
        """Typed events from now on (with ``history``, past ones first); ends when the run is over."""
        return self._events.subscribe(history=history)

    @property
    def event_history(self) -> list[Event]:
        return list(self._events.history)

    async def wait(self) -> None:
        """Until every replica has completed (one-shot jobs); a failure raises in the caller instead."""
        await self._all_done.wait()

    async def stop(self) -> None:
        """Orderly teardown now (the ``launch`` block then has nothing left to do)."""
        with anyio.CancelScope(shield=True):
            await self._teardown()

    def kill_now(self) -> None:
        """SIGKILL every process of the run at once (the second Ctrl-C)."""
        self._kill_now = True
        for replica in self.replicas:
            if replica.process is not None and not replica.exited.is_set():
                replica.process.signal_group(signal.SIGKILL)
        signal_processes([p for _, p in marked_processes(self.run_id).values()], signal.SIGKILL)

    # ----- start ----------------------------------------------------------------------------------
    async def _start(self, tg: TaskGroup) -> None:
        self._tg = tg
        self.phase = "starting"
        self._write_manifest()
        async with anyio.create_task_group() as start_group:
            for service in self.plan.services:
                start_group.start_soon(self._start_service, service, name=f"start {service.name}")
        self.ready_at = time.monotonic()
        self.phase = "running"
        self._write_manifest()

    async def _start_service(self, service: ServicePlan) -> None:
        for dep in service.depends_on:
            await self._conditions[dep.service][dep.condition].wait()
        conditions = self._conditions[service.name]
        replicas = self._services[service.name].replicas
        runners = [self._spawn(r) for r in replicas]
        self._write_manifest()  # pids on disk before anything else can go wrong
        conditions["started"].set()
        async with anyio.create_task_group() as ready_group:
            for replica, runner in zip(replicas, runners, strict=True):
                ready_group.start_soon(self._await_ready, replica, runner, name=f"ready {replica.name}")
        conditions["ready"].set()
        self._check_completed(service.name)

    def _spawn(self, replica: Replica) -> ReadinessRunner | None:
        assert self._tg is not None
        plan = replica.plan
        env = dict(os.environ)
        env.update(plan.env)
        env.update(
            {
                RUN_ID_ENV: self.run_id,
                REPLICA_ENV: plan.name,
                "PYTHONUNBUFFERED": env.get("PYTHONUNBUFFERED", "1"),
            }
        )
        sink = RotatingLogFile(replica.log_path, plan.log.max_bytes, plan.log.backups)
        replica.stream = LineStream(sink)
        if self._on_output is not None:
            on_output, name = self._on_output, plan.name
            replica.stream.subscribe(lambda block: on_output(name, block))
        replica.state = ReplicaState.STARTING
        try:
            process = ChildProcess.spawn(plan.argv, env, plan.cwd)
        except OSError as exc:
            replica.state = ReplicaState.FAILED
            replica.stream.close()
            raise ServiceFailed(plan.name, f"cannot start {plan.argv[0]!r}: {exc.strerror or exc}") from None
        replica.process = process
        replica.spawned_at = time.monotonic()
        runner = None
        if plan.ready is not None:  # subscribe before the first byte is read: no line can be missed
            target = ProbeTarget(plan.name, plan.service, plan.index, process.pid, plan.host, plan.ports)
            runner = ReadinessRunner(
                plan.ready, target=target, stream=replica.stream, env=env, http_client=self._client
            )
        self._tg.start_soon(self._shielded, self._pump, replica, name=f"pump {plan.name}")
        self._tg.start_soon(self._shielded, self._watch, replica, name=f"watch {plan.name}")
        self._events.emit(Spawned(replica=plan.name, service=plan.service, pid=process.pid))
        return runner

    async def _shielded(self, task: Callable[[Replica], Awaitable[None]], replica: Replica) -> None:
        """Pumps and watchers ignore outside cancellation: teardown needs them (to see exits, and to
        keep draining output while children shut down) and ends them itself when it is done."""
        with anyio.CancelScope(shield=True) as scope:
            self._task_scopes.append(scope)
            await task(replica)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)
            )
        return self._http

    async def _await_ready(self, replica: Replica, runner: ReadinessRunner | None) -> None:
        """Probe until ready, racing the process: an exit fails at once with its code and log tail."""
        if runner is not None:
            outcome: list[BaseException] = []
            async with anyio.create_task_group() as race:

                async def probe() -> None:
                    try:
                        await runner.wait_passed()
                    except TimeoutError:
                        outcome.append(self._readiness_timeout(replica, runner))
                    race.cancel_scope.cancel()

                async def exit_watch() -> None:
                    await replica.exited.wait()
                    outcome.append(self._died_before_ready(replica, runner))
                    race.cancel_scope.cancel()

                race.start_soon(probe)
                race.start_soon(exit_watch)
            if outcome:
                replica.state = ReplicaState.FAILED
                self._events.emit(
                    Failed(replica=replica.name, service=replica.service, reason=str(outcome[0]).split("\n")[0])
                )
                raise outcome[0]
        if replica.state is ReplicaState.STARTING:
            replica.state = ReplicaState.READY
        seconds = time.monotonic() - (replica.spawned_at or 0.0)
        self._events.emit(Ready(replica=replica.name, service=replica.service, pid=replica.pid or 0, seconds=seconds))

    def _readiness_timeout(self, replica: Replica, runner: ReadinessRunner) -> ServiceFailed:
        probe = runner.probe
        return ReadinessTimeout(
            replica.name,
            f"not ready after {probe.timeout_seconds:g}s: probe {describe_check(probe.check)} "
            f"failed {runner.attempts} times, last: {runner.last.detail}",
            log_tail=replica.log_tail(),
            log_path=str(replica.log_path),
        )

    def _died_before_ready(self, replica: Replica, runner: ReadinessRunner) -> ServiceFailed:
        code = replica.returncode if replica.returncode is not None else -1
        return ServiceFailed(
            replica.name,
            f"{describe_exit(code)} before it was ready (probe {describe_check(runner.probe.check)}, "
            f"last: {runner.last.detail})",
            log_tail=replica.log_tail(),
            log_path=str(replica.log_path),
            exit_code=code,
        )

    # ----- watch ----------------------------------------------------------------------------------
    async def _pump(self, replica: Replica) -> None:
        assert replica.process is not None and replica.stream is not None
        fd = replica.process.output_fd
        try:
            await pump_pipe(fd, replica.stream)
        finally:
            os.close(fd)

    async def _watch(self, replica: Replica) -> None:
        assert replica.process is not None
        code = await replica.process.wait()
        replica.returncode = code
        replica.process.close()
        asked = self._stopping or replica.stopping
        signame = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None
        self._events.emit(
            Exited(
                replica=replica.name,
                service=replica.service,
                pid=replica.process.pid,
                exit_code=code if code >= 0 else None,
                signal=signame,
                expected=asked or code == 0,
            )
        )
        replica.exited.set()
        if asked:
            return
        if replica.state is ReplicaState.STARTING:
            return  # still starting: _await_ready reports it (or, without a probe, it is handled below)
        if code == 0:
            replica.state = ReplicaState.COMPLETED
            self._events.emit(Completed(replica=replica.name, service=replica.service))
            self._check_completed(replica.service)
            return
        replica.state = ReplicaState.FAILED
        error = ServiceFailed(
            replica.name,
            f"{describe_exit(code)} while running (restart policy: no)",
            log_tail=replica.log_tail(),
            log_path=str(replica.log_path),
            exit_code=code,
        )
        self._events.emit(Failed(replica=replica.name, service=replica.service, reason=error.reason))
        self._fail(error)

    def _fail(self, error: ServiceFailed) -> None:
        """Record the first fatal failure and cancel the start or the caller's body; teardown follows."""
        if self.failure is None:
            self.failure = error
        if self._body_scope is not None:
            self._body_scope.cancel()

    def _check_completed(self, service: str) -> None:
        replicas = self._services[service].replicas
        if all(r.state is ReplicaState.COMPLETED for r in replicas):
            self._conditions[service]["completed"].set()
        if all(r.state is ReplicaState.COMPLETED for r in self.replicas):
            self._all_done.set()

    # ----- teardown -------------------------------------------------------------------------------
    async def _teardown(self) -> None:
        """Reverse dependency order, stop signal, grace, SIGKILL; then verify nothing of the run is left."""
        if self._stopping:
            await self._torn_down.wait()
            return
        self._stopping = True
        self.phase = "stopping"
        self._write_manifest()
        try:
            marked = await anyio.to_thread.run_sync(marked_processes, self.run_id)
            by_replica: dict[str, list[psutil.Process]] = {}
            for replica_name, process in marked.values():
                by_replica.setdefault(replica_name, []).append(process)
            stopped = {s.name: anyio.Event() for s in self.plan.services}
            async with anyio.create_task_group() as tg:
                for service in reversed(self.plan.services):
                    tg.start_soon(self._stop_service, service, by_replica, stopped)
            await self._sweep()
            if self._http is not None:
                await self._http.aclose()
            for replica in self.replicas:  # output ends once every writer is gone; give the pumps a moment
                if replica.stream is not None and not replica.stream.closed:
                    with anyio.move_on_after(0.5):
                        while not replica.stream.closed:
                            await replica.stream.wait_activity()
                    replica.stream.close()
            self.phase = "stopped"
            self._write_manifest()
        finally:
            for scope in self._task_scopes:
                scope.cancel()
            self._events.close()
            self._torn_down.set()

    async def _stop_service(
        self, service: ServicePlan, marked: dict[str, list[psutil.Process]], stopped: dict[str, anyio.Event]
    ) -> None:
        for dependent in self.plan.dependents(service.name):
            await stopped[dependent].wait()
        async with anyio.create_task_group() as tg:
            for replica in self._services[service.name].replicas:
                tg.start_soon(self._stop_replica, replica, marked.get(replica.name, []))
        stopped[service.name].set()

    async def _stop_replica(self, replica: Replica, others: list[psutil.Process]) -> None:
        process = replica.process
        if process is None:
            return
        others = [p for p in others if p.pid != process.pid]
        if replica.exited.is_set() and not any(alive(p) for p in others):
            if replica.state not in (ReplicaState.FAILED, ReplicaState.COMPLETED):
                replica.state = ReplicaState.STOPPED
            return
        replica.stopping = True
        replica.state = ReplicaState.STOPPING
        stop_signal = signal.SIGKILL if self._kill_now else signal.Signals[replica.plan.stop.signal]
        began = time.monotonic()
        self._events.emit(Stopping(replica=replica.name, service=replica.service, signal=stop_signal.name))
        process.signal_group(stop_signal)
        signal_processes(others, stop_signal)
        killed = False
        with anyio.move_on_after(replica.plan.stop.grace_seconds) as grace:
            await self._gone(replica, others)
        if grace.cancelled_caught:
            killed = True
            process.signal_group(signal.SIGKILL)
            signal_processes(others, signal.SIGKILL)
            with anyio.move_on_after(_KILL_WAIT_SECONDS):
                await self._gone(replica, others)
        replica.state = ReplicaState.STOPPED
        self._events.emit(
            Stopped(replica=replica.name, service=replica.service, seconds=time.monotonic() - began, killed=killed)
        )

    async def _gone(self, replica: Replica, others: list[psutil.Process]) -> None:
        await replica.exited.wait()
        await _wait_gone(others)

    async def _sweep(self) -> None:
        """Whatever still carries the run's mark (spawned mid-teardown, re-parented) gets SIGKILL."""
        deadline = time.monotonic() + _KILL_WAIT_SECONDS
        left: list[psutil.Process] = []
        while time.monotonic() < deadline:
            left = [p for _, p in (await anyio.to_thread.run_sync(marked_processes, self.run_id)).values()]
            left = [p for p in left if alive(p)]
            if not left:
                break
            signal_processes(left, signal.SIGKILL)
            with anyio.move_on_after(1.0):
                await _wait_gone(left)
        self.leftovers = [p.pid for p in left if alive(p)]

    # ----- record ---------------------------------------------------------------------------------
    def _write_manifest(self) -> None:
        manifest = {
            "run_id": self.run_id,
            "name": self.plan.name,
            "source": self.plan.source,
            "run_dir": str(self.run_dir),
            "phase": self.phase,
            "supervisor_pid": os.getpid(),
            "supervisor_create_time": _own_create_time(),
            "started_wall_time": self._started_wall,
            "services": {
                s.name: {
                    "depends_on": {d.service: d.condition for d in s.plan.depends_on},
                    "replicas": [_replica_record(r) for r in s.replicas],
                }
                for s in self.services
            },
            "leftovers": self.leftovers,
        }
        path = self.run_dir / "manifest.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(manifest, indent=2))
        os.replace(temporary, path)


def _replica_record(replica: Replica) -> dict[str, Any]:
    process = replica.process
    return {
        "name": replica.name,
        "state": replica.state.value,
        "pid": replica.pid,
        "pgid": replica.pid,
        "create_time": process.create_time if process else None,
        "returncode": replica.returncode,
        "command": list(replica.plan.argv),
        "env": {k: ("<redacted>" if _SECRET.search(k) else v) for k, v in replica.plan.env.items()},
        "ports": replica.ports,
        "url": replica.url,
        "log": str(replica.log_path),
        "stop": {"signal": replica.plan.stop.signal, "grace_seconds": replica.plan.stop.grace_seconds},
    }


def _own_create_time() -> float:
    return psutil.Process().create_time()


async def _wait_gone(processes: list[psutil.Process]) -> None:
    delay = 0.001
    while any(alive(p) for p in processes):
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.02)
