"""``launch_sync``: ``launch`` for code that is not async (a benchmark script, a pytest test).

The supervisor runs on an event loop in a background thread (an anyio blocking portal); the caller gets
a ``SyncTopology`` with the group's interface, every method synchronous. The guarantees are ``launch``'s:
leaving the ``with`` block (normally, by an exception, by Ctrl-C) tears everything down before it returns;
a failure while starting raises ``ServiceFailed`` from ``with``; a service that dies later tears the run
down at once (the background loop does not wait for the caller) and its ``ServiceFailed`` is raised by the
call under way, the next call on the group and the end of the ``with`` block (a thread's code cannot be
cancelled as an async body is).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread

from .metrics import METRICS_TIMEOUT_SECONDS
from .runner import launch_prepared

if TYPE_CHECKING:
    from pathlib import Path

    from typing_extensions import Unpack

    from .._errors import ServiceFailed
    from .._events import Event, Marked
    from .._host.gpu_inventory import GpuInventory
    from .._plan.plan import Plan
    from .._spec.model import Topology
    from .group import RunningTopology
    from .metrics import MetricsSnapshot
    from .replica import Replica, ServiceHandle
    from .rollout import RollingRestartOptions

__all__ = ["SyncTopology", "launch_sync"]

T = TypeVar("T")

#: Ctrl-C presses during a teardown that each turn into "SIGKILL everything now" before we stop listening
_MAX_INTERRUPTS = 5

#: How often the main thread wakes while it waits on the loop thread. CPython runs signal handlers only in
#: the main thread, and only once a blocking call of its returns EINTR: a SIGINT taken by the loop thread,
#: or landing just before the main thread enters its wait, would otherwise be seen only when the wait ends
#: (never, for a run that waits on that Ctrl-C to stop).
_SIGNAL_CHECK_SECONDS = 0.1


def _wait_interruptibly(future: concurrent.futures.Future[Any]) -> None:
    """Wait until ``future`` is done, waking often enough that a Ctrl-C is never lost (see above)."""
    while not concurrent.futures.wait([future], timeout=_SIGNAL_CHECK_SECONDS).done:
        pass


def _call_interruptibly(portal: anyio.from_thread.BlockingPortal, function: Callable[[], Awaitable[T]]) -> T:
    """``portal.call(function)`` that a Ctrl-C interrupts (cancelling the call) whichever thread took it."""
    future = portal.start_task_soon(function)
    try:
        _wait_interruptibly(future)
    except BaseException:
        future.cancel()
        raise
    return future.result()


class _Holder:
    """Lives on the event loop: holds ``launch`` open until the caller's block ends."""

    def __init__(self, topology: Topology | Plan, options: dict[str, Any]) -> None:
        self.topology = topology
        self.options = options
        self.ready: concurrent.futures.Future[RunningTopology] = concurrent.futures.Future()
        self.group: RunningTopology | None = None
        self._exit: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._released = False

    async def hold(self) -> None:
        self._exit = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                if self._released:  # the caller gave up before the loop got here
                    self._scope.cancel()
                async with launch_prepared(self.topology, **self.options, on_group=self._on_group) as group:
                    self.ready.set_result(group)
                    await self._exit.wait()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            raise
        finally:
            if not self.ready.done():
                self.ready.set_exception(RuntimeError("the launch was cancelled before it was ready"))

    def _on_group(self, group: RunningTopology) -> None:
        self.group = group

    def release(self) -> None:
        """(On the loop.) End the block: tear down once ready, or cancel a start still under way."""
        self._released = True
        if self._exit is not None and self.ready.done():
            self._exit.set()
        elif self._scope is not None:
            self._scope.cancel()

    def kill_now(self) -> None:
        """(On the loop.) A second Ctrl-C: SIGKILL every process of the run at once."""
        if self.group is not None:
            self.group.kill_now()


def _not_finished(replicas: list[Replica], timeout_seconds: float, shown: int = 5) -> str:
    """``wait``'s timeout, said: what it waited for, how long, and who still runs."""
    active = [f"{r.name} ({r.state.value})" for r in replicas if r.state.active]
    more = f" and {len(active) - shown} more" if len(active) > shown else ""
    return (
        f"wait(timeout_seconds={timeout_seconds:g}): not every replica finished within {timeout_seconds:g}s; "
        f"{len(active)} still running: {', '.join(active[:shown])}{more} (a server runs until stopped: "
        "stop() ends it, leaving the with block ends the run)"
    )


class SyncTopology:
    """``RunningTopology``'s interface, synchronous. Reads (``group["svc"].url``, ``.port``, ``.pids``,
    ``run_dir``, ``replicas``) are live views of the running group; actions run on its event loop."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, holder: _Holder, group: RunningTopology) -> None:
        self._portal = portal
        self._holder = holder
        self._group = group
        self.plan: Plan = group.plan
        self.run_id: str = group.run_id
        self.run_dir: Path = group.run_dir
        self.failure_raised = False  #: the caller was handed ``failure`` by a call (the pytest fixture asks)

    # ----- reads ----------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> ServiceHandle | Replica:
        """A service (``"decode"``) or one replica (``"decode.1"``)."""
        return self._group[name]

    def service(self, name: str) -> ServiceHandle:
        return self._group.service(name)

    def replica(self, name: str) -> Replica:
        return self._group.replica(name)

    def __iter__(self) -> Iterator[ServiceHandle]:
        return iter(self._group)

    @property
    def services(self) -> list[ServiceHandle]:
        return self._group.services

    @property
    def replicas(self) -> list[Replica]:
        return self._group.replicas

    @property
    def event_history(self) -> list[Event]:
        return self._group.event_history

    @property
    def failure(self) -> ServiceFailed | None:
        """The failure that ended the run, once one did (it is raised by the next call and by ``with``)."""
        return self._group.failure

    def environment(self) -> dict[str, str]:
        """``TOPOVISOR_<SERVICE>_URL``/``_URLS``/``_PORT`` and ``TOPOVISOR_RUN_DIR`` for a client process."""
        return self._group.environment()

    # ----- actions --------------------------------------------------------------------------------
    def mark(self, label: str) -> Marked:
        """A bookmark in ``events.jsonl`` and every replica's log (see ``RunningTopology.mark``)."""
        return self._call(self._group.mark, label)

    def snapshot_metrics(self, label: str, *, timeout_seconds: float = METRICS_TIMEOUT_SECONDS) -> MetricsSnapshot:
        """Save every declared Prometheus endpoint under ``<run_dir>/metrics/<label>/`` (see
        ``RunningTopology.snapshot_metrics``)."""
        return self._call_async(functools.partial(self._group.snapshot_metrics, label, timeout_seconds=timeout_seconds))

    def restart(self, name: str) -> None:
        """Restart a service or one replica; returns once it is ready again."""
        self._call_async(self._group.restart, name)

    def scale(self, service: str, replicas: int) -> None:
        """Run ``replicas`` replicas of ``service``; returns once the new ones are ready or the removed
        ones stopped (see ``RunningTopology.scale``)."""
        self._call_async(self._group.scale, service, replicas)

    def autoscale(self, service: str, enabled: bool) -> dict[str, Any]:
        """Pause or resume the ``autoscale:`` of ``service`` (see ``RunningTopology.autoscale``)."""
        result: dict[str, Any] = self._call_async(self._group.autoscale, service, enabled)
        return result

    def rolling_restart(self, service: str, **options: Unpack[RollingRestartOptions]) -> None:
        """Restart ``service`` replica by replica, keeping ``min_ready`` ready; the options, their defaults
        and meaning are ``RunningTopology.rolling_restart``'s. Returns once every replica is ready again."""
        self._call_async(functools.partial(self._group.rolling_restart, service, **options))

    def stop(self, name: str | None = None) -> None:
        """Stop one service or replica, or, without a name, tear everything down now."""
        self._call_async(self._group.stop, name)

    def wait(self, timeout_seconds: float | None = None) -> None:
        """Until every replica is done (jobs completed, all stopped); a failure raises ``ServiceFailed``.
        ``TimeoutError`` after ``timeout_seconds``, naming the replicas still running (a server runs until
        it is stopped: this is for jobs)."""

        async def bounded() -> None:
            with anyio.move_on_after(timeout_seconds) as bound:
                await self._group.wait()  # returns after a failure too: its teardown ends every replica
            if bound.cancelled_caught and timeout_seconds is not None:  # said on the loop, whose states they are
                raise TimeoutError(_not_finished(self._group.replicas, timeout_seconds))

        # not _call_async: its watch on the teardown could cancel this wait as it returned (trio checkpoints
        # even on an event already set), and a teardown ends every replica, so this wait ends anyway
        self.raise_failure()
        _call_interruptibly(self._portal, bounded)
        self.raise_failure()

    def events(self, *, history: bool = False) -> Iterator[Event]:
        """Typed events from this call on, and only those, blocking for the next one: a first loop after
        ``launch_sync`` sees no ``Spawned`` or ``Ready`` (they are over). ``history=True`` yields the past
        ones first (``event_history`` is the list so far). The iteration ends when the run is over, and
        raises ``ServiceFailed`` if a failure ended it."""
        subscription = self._call(self._group.events, history=history)
        while True:  # the subscription ends with the run, at its teardown
            try:
                event = _call_interruptibly(self._portal, subscription.__anext__)
            except StopAsyncIteration:
                break
            yield event
        self.raise_failure()

    def raise_failure(self) -> None:
        """Raise the ``ServiceFailed`` that ended the run, if one did."""
        if self._group.failure is not None:
            self.failure_raised = True
            raise self._group.failure

    def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.raise_failure()
        return self._portal.call(lambda: function(*args, **kwargs))

    def _call_async(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``function`` on the loop, ended by the run's teardown as the async body would be by a
        failure: a restart waiting for a readiness that will never come must not block the caller."""
        self.raise_failure()
        group = self._group

        async def until_torn_down() -> list[T]:
            result: list[T] = []
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    try:
                        result.append(await function(*args))
                    except Exception as exc:  # as itself, not inside the task group's ExceptionGroup
                        errors.append(exc)
                    tg.cancel_scope.cancel()

                async def watch() -> None:
                    await group.wait_torn_down()
                    tg.cancel_scope.cancel()

                tg.start_soon(call)
                tg.start_soon(watch)
            return result

        errors: list[Exception] = []
        result = _call_interruptibly(self._portal, until_torn_down)
        self.raise_failure()
        if errors:
            raise errors[0]
        if not result:
            raise RuntimeError(f"run {self.run_id} was torn down before {getattr(function, '__name__', 'it')} returned")
        return result[0]

    def __repr__(self) -> str:
        return f"<SyncTopology {self.run_id} {self._group.phase}>"


@contextlib.contextmanager
def launch_sync(
    topology: Topology | Plan,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    gpus: GpuInventory | str | None = None,
    backend: str = "asyncio",
) -> Iterator[SyncTopology]:
    """``with supervisor.launch_sync(topology) as group:`` -- ``launch`` for synchronous code.

    Returns once every service is ready; leaving the block always tears everything down first. The event
    loop (``backend``: asyncio or trio) runs in a background thread, so ``on_event`` and ``on_output`` are
    called there. In the main thread, Ctrl-C while starting or inside the block tears down in order; a
    further Ctrl-C while that runs SIGKILLs every process of the run at once.
    """
    options: dict[str, Any] = {"runs_dir": runs_dir, "on_event": on_event, "on_output": on_output, "gpus": gpus}
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        holder = _Holder(topology, options)
        done = portal.start_task_soon(holder.hold)
        try:
            _wait_interruptibly(holder.ready)
            group = holder.ready.result()
        except BaseException:
            _finish(portal, holder, done, raise_errors=False)
            raise
        try:
            yield SyncTopology(portal, holder, group)
        finally:
            _finish(portal, holder, done, raise_errors=True)


def _finish(
    portal: anyio.from_thread.BlockingPortal,
    holder: _Holder,
    done: concurrent.futures.Future[None],
    *,
    raise_errors: bool,
) -> None:
    """Tear down and wait until it is over; Ctrl-C meanwhile kills at once (and the wait goes on), and is
    raised once the run is down: the program stops as the user asked (it once went on as if nothing had
    happened, a pytest session running every test left and exiting 0)."""
    released = interrupted = False
    for _ in range(_MAX_INTERRUPTS):
        try:
            if not released:
                portal.call(holder.release)  # idempotent: an interrupted call may have run already
                released = True
            _wait_interruptibly(done)
            break
        except KeyboardInterrupt:
            interrupted = True
            with contextlib.suppress(KeyboardInterrupt):
                portal.call(holder.kill_now)
    error = done.exception() if done.done() and not done.cancelled() else None
    if interrupted and error is not None:
        raise KeyboardInterrupt from error  # the failure that ended the run, shown as its cause
    if interrupted:
        raise KeyboardInterrupt
    if raise_errors and error is not None:
        raise error


if TYPE_CHECKING:  # mypy checks that the blocking twin is a SyncTopologyHandle
    from .._control.handle import SyncTopologyHandle

    _handle: type[SyncTopologyHandle] = SyncTopology
