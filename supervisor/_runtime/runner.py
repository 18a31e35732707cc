"""Entry points: ``launch`` (a context that yields once all is ready) and ``run`` (supervise until stopped)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Generic, NoReturn, TypeVar

import anyio
import anyio.abc
import attrs

from .._errors import SupervisorError
from .._host.signals import STOP_SIGNALS as _SIGNALS
from .._host.signals import hold_signals as hold_signals  # its home before the CLI needed it without anyio

if TYPE_CHECKING:  # the runtime loads on the first launch, not on `import supervisor; supervisor.launch`
    from .._events import Event
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._plan.plan import Plan
    from .._spec.model import Topology
    from .group import RunningTopology
    from .headstart import HeadStart

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Outcome", "launch", "launch_prepared", "run", "supervise", "supervise_prepared"]

T = TypeVar("T")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error worth showing: a SupervisorError if there is one, else the first non-cancellation."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    cancelled = anyio.get_cancelled_exc_class()
    for exc in flat:
        if isinstance(exc, SupervisorError):
            return exc
    for exc in flat:
        if not isinstance(exc, cancelled):
            return exc
    return flat[0] if flat else group


def _reraise(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    error = _first_error(group)
    if error is group:
        raise group
    raise error from None


@asynccontextmanager
async def launch(
    topology: Topology | Plan,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    gpus: GpuInventory | str | None = None,
) -> AsyncIterator[RunningTopology]:
    """Start every service in dependency order and yield once all are ready; always tear down on exit.

    A failure while starting raises one ``ServiceFailed`` naming the replica, the probe and its log tail,
    after everything already started was stopped. A service that dies later cancels the ``async with``
    body and raises the same way. ``on_event`` sees every event as it happens; ``on_output`` every block
    of complete output lines, with the replica's name. ``gpus`` is the node GPUs are assigned on: an
    inventory, a simulated node such as ``"8x80GB"`` (a rehearsal), or None for NVML when a service asks.
    """
    async with launch_prepared(topology, runs_dir=runs_dir, on_event=on_event, on_output=on_output, gpus=gpus) as group:
        yield group


@asynccontextmanager
async def launch_prepared(
    topology: Topology | Plan,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    gpus: GpuInventory | str | None = None,
    on_group: Callable[[RunningTopology], None] | None = None,
    head_start: HeadStart | None = None,
    allocation: SlurmAllocation | None = None,
) -> AsyncIterator[RunningTopology]:
    """``launch`` with what its embedders inside the library prepared: ``on_group`` hears the group before
    it starts (``SyncTopology``, ``supervise``), ``head_start`` holds the replicas the CLI spawned before
    the event loop, ``allocation`` the Slurm allocation the CLI took before planning."""
    from .group import RunningTopology
    from .preflight import open_containment, preflight, warm_cgroup_moves
    from .state import RunState

    if isinstance(gpus, str):
        from .._host.gpu_inventory import SimulatedInventory

        gpus = SimulatedInventory.parse(gpus)
    stop_warming = warm_cgroup_moves(topology) if head_start is None else lambda: None  # the CLI's warmed
    try:
        async with _planned(topology, runs_dir, gpus, allocation) as (plan, allocation):
            if head_start is not None:  # it made the checks before its spawns (ports would now be ours)
                assert plan is head_start.plan
                inventory, gpus_before = head_start.inventory, head_start.gpus_before
                containment = head_start.containment
                assert containment is not None
            else:
                inventory = preflight(plan, gpus)
                gpus_before = None
                if inventory is not None:
                    from .gpu_checks import listed_before

                    gpus_before = listed_before(inventory, plan)
                containment = open_containment(plan)
            try:
                run = RunState(
                    plan,
                    on_event=on_event,
                    on_output=on_output,
                    gpus=inventory,
                    gpus_before=gpus_before,
                    head_start=head_start,
                    allocation=allocation,
                    containment=containment,
                )
                async with RunningTopology.open(run, on_group=on_group) as group:
                    stop_warming()  # the replicas are in their cgroups
                    yield group
            except BaseExceptionGroup as exc:
                _reraise(exc)
            finally:  # the teardown removed it; here for a run that never got that far. A survivor keeps it
                containment.remove()  # (the watchdog's sweep and gc find the survivor by the recorded cgroup)
    finally:
        stop_warming()


@asynccontextmanager
async def _planned(
    topology: Topology | Plan,
    runs_dir: str | os.PathLike[str] | None,
    gpus: GpuInventory | None,
    allocation: SlurmAllocation | None,
) -> AsyncIterator[tuple[Plan, SlurmAllocation | None]]:
    """The plan, and the Slurm allocation it runs in: with ``cluster.slurm`` one is taken (the caller's
    own inside an allocation, else a new one) before planning, since the nodes decide ``{host}``; a new
    one is released on exit (the group already did, after stopping every step: this catches a failure
    before the start)."""
    from .._plan.plan import Plan

    if isinstance(topology, Plan):
        yield topology, allocation
        return
    acquired = None
    if allocation is None and topology.cluster is not None:
        from .._host.slurm_alloc import allocation_for

        allocation = acquired = await anyio.to_thread.run_sync(allocation_for, topology)
    try:
        from .._plan.plan import plan_in

        yield plan_in(topology, allocation, runs_dir=runs_dir, gpus=gpus), allocation
    finally:
        if acquired is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(acquired.release)


async def run(
    topology: Topology | Plan,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    gpus: GpuInventory | str | None = None,
) -> int | None:
    """Start the topology and supervise it until a signal, a fatal failure, or every job completed.

    In the main thread, SIGINT/SIGTERM/SIGHUP start an orderly teardown and the number of the signal is
    returned; a second signal SIGKILLs everything at once. Failures raise ``ServiceFailed``.
    """

    async def until_done(group: RunningTopology) -> None:
        await group.wait()

    outcome = await supervise(
        topology, until_done, runs_dir=runs_dir, on_event=on_event, on_output=on_output, gpus=gpus
    )
    return outcome.signal


@attrs.frozen
class Outcome(Generic[T]):
    """How a supervised run ended: the body's result, or the signal that stopped it."""

    result: T | None
    signal: int | None
    run_dir: Path
    leftovers: tuple[int, ...] = ()  #: pids that survived the teardown; verified empty on every run


async def supervise(
    topology: Topology | Plan,
    body: Callable[[RunningTopology], Awaitable[T]],
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    on_signal: Callable[[int], None] | None = None,
    early_signals: list[int] | None = None,
    gpus: GpuInventory | str | None = None,
) -> Outcome[T]:
    """``launch``, then ``await body(group)``, with signal handling as in ``run``; the CLI's core.
    ``on_signal`` hears each stop signal as it arrives (the CLI gives its ``-- CMD`` a grace)."""
    return await supervise_prepared(
        topology, body, runs_dir=runs_dir, on_event=on_event, on_output=on_output, on_signal=on_signal,
        early_signals=early_signals, gpus=gpus,
    )  # fmt: skip


async def supervise_prepared(
    topology: Topology | Plan,
    body: Callable[[RunningTopology], Awaitable[T]],
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    on_signal: Callable[[int], None] | None = None,
    early_signals: list[int] | None = None,
    gpus: GpuInventory | str | None = None,
    head_start: HeadStart | None = None,
    allocation: SlurmAllocation | None = None,
    on_group: Callable[[RunningTopology], None] | None = None,
) -> Outcome[T]:
    """``supervise`` with what the CLI prepared: ``head_start``, the replicas it started before the event
    loop (``_runtime.headstart``), for the group to adopt; ``allocation``, the Slurm allocation it took
    before planning; ``on_group`` hears the group before anything spawns (the live table follows it)."""
    if isinstance(gpus, str):
        from .._host.gpu_inventory import SimulatedInventory

        gpus = SimulatedInventory.parse(gpus)
    async with _planned(topology, runs_dir, gpus, allocation) as (plan, allocation):
        return await _supervise_plan(
            plan, allocation, body, on_event, on_output, on_signal, early_signals, gpus, head_start, on_group
        )


async def _supervise_plan(
    plan: Plan,
    allocation: SlurmAllocation | None,
    body: Callable[[RunningTopology], Awaitable[T]],
    on_event: Callable[[Event], None] | None,
    on_output: Callable[[str, bytes], None] | None,
    on_signal: Callable[[int], None] | None,
    early_signals: list[int] | None,
    gpus: GpuInventory | None,
    head_start: HeadStart | None,
    on_group: Callable[[RunningTopology], None] | None = None,
) -> Outcome[T]:
    handle_signals = threading.current_thread() is threading.main_thread()
    received: list[int] = []
    group_box: list[RunningTopology] = []

    def heard(group: RunningTopology) -> None:
        group_box.append(group)
        if on_group is not None:
            on_group(group)

    result: list[T] = []
    try:
        async with anyio.create_task_group() as outer:
            with anyio.CancelScope() as main_scope:
                if handle_signals:
                    # handlers in place before anything spawns: until then, asyncio's own SIGINT handling
                    # cancels the main task, which a shielded start-up step could absorb (a lost Ctrl-C)
                    await outer.start(_on_signals, main_scope, received, group_box, on_signal, early_signals or [])
                async with launch_prepared(
                    plan,
                    on_event=on_event,
                    on_output=on_output,
                    gpus=gpus,
                    on_group=heard,
                    head_start=head_start,
                    allocation=allocation,
                ) as group:
                    result.append(await body(group))
            outer.cancel_scope.cancel()
    except BaseExceptionGroup as exc:
        _reraise(exc)
    leftovers = tuple(group_box[0].leftovers) if group_box else ()
    return Outcome(result[0] if result else None, received[0] if received else None, plan.run_dir, leftovers)


async def _on_signals(
    scope: anyio.CancelScope,
    received: list[int],
    group_box: list[RunningTopology],
    on_signal: Callable[[int], None] | None,
    early: list[int],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    def handle(signum: int) -> None:
        received.append(signum)
        if on_signal is not None:
            on_signal(signum)
        if len(received) == 1:
            scope.cancel()
        elif group_box:
            group_box[0].kill_now()

    with anyio.open_signal_receiver(*_SIGNALS) as signals:
        task_status.started()
        for signum in early:  # caught by hold_signals() before the event loop could take them
            handle(signum)
        async for signum in signals:
            handle(signum)
