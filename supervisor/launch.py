"""Entry points: ``launch`` (a context that yields once all is ready) and ``run`` (supervise until stopped)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import anyio

from .errors import SupervisorError
from .group import RunningTopology
from .plan import Plan, make_plan
from .spec import Topology

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["launch", "run"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
    topology: Topology | Plan, *, runs_dir: str | os.PathLike[str] | None = None
) -> AsyncIterator[RunningTopology]:
    """Start every service in dependency order and yield once all are ready; always tear down on exit.

    A failure while starting raises one ``ServiceFailed`` naming the replica, the probe and its log tail,
    after everything already started was stopped. A service that dies later cancels the ``async with``
    body and raises the same way.
    """
    plan = topology if isinstance(topology, Plan) else make_plan(topology, runs_dir=runs_dir)
    group = RunningTopology(plan)
    try:
        async with anyio.create_task_group() as tg:
            try:
                await group._start(tg)
                yield group
            finally:
                with anyio.CancelScope(shield=True):
                    await group._teardown()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as exc:
        _reraise(exc)


async def run(topology: Topology | Plan, *, runs_dir: str | os.PathLike[str] | None = None) -> int | None:
    """Start the topology and supervise it until a signal, a fatal failure, or every job completed.

    In the main thread, SIGINT/SIGTERM/SIGHUP start an orderly teardown and the number of the signal is
    returned; a second signal SIGKILLs everything at once. Failures raise ``ServiceFailed``.
    """
    handle_signals = threading.current_thread() is threading.main_thread()
    received: list[int] = []
    group_box: list[RunningTopology] = []
    try:
        async with anyio.create_task_group() as outer:
            with anyio.CancelScope() as main_scope:
                if handle_signals:
                    outer.start_soon(_on_signals, main_scope, received, group_box)
                async with launch(topology, runs_dir=runs_dir) as group:
                    group_box.append(group)
                    await group.wait()
            outer.cancel_scope.cancel()
    except BaseExceptionGroup as exc:
        _reraise(exc)
    return received[0] if received else None


async def _on_signals(scope: anyio.CancelScope, received: list[int], group_box: list[RunningTopology]) -> None:
    with anyio.open_signal_receiver(*_SIGNALS) as signals:
        async for signum in signals:
            received.append(signum)
            if len(received) == 1:
                scope.cancel()
            elif group_box:
                group_box[0].kill_now()
