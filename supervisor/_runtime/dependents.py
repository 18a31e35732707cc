"""After a scale: the services whose templates use the scaled service's endpoints follow its new set.

``endpoints.json`` is rewritten first. Then each other running service is planned again from its spec
(``_plan.replan.refilled``); one whose replicas would now run differently (``{decode.urls}`` in its command,
env or probes), or that depends on the scaled service (it may read ``endpoints.json``), does what its
``on_change`` says: ``none`` keeps what it runs, ``restart`` rolls it (one
replica at a time, a rolling restart with its events) onto the new plan, ``signal`` sends the signal to
each replica's main process. Each is an ``EndpointsChanged`` event.
"""

from __future__ import annotations

import contextlib
import os
import signal

from .._errors import ConfigError
from .._events import EndpointsChanged
from .._plan.replan import refilled, service_spec
from .endpoints import write_endpoints
from .replica import Replica
from .rollout import rollout, rollout_floor
from .state import RunState

__all__ = ["follow_endpoints"]


async def follow_endpoints(run: RunState, changed: str) -> None:
    """(Under the operation lock.) Every service whose templates use ``changed`` follows its new set."""
    write_endpoints(run.plan)
    for planned in run.plan.services:
        handle = run.service(planned.name)
        if planned.name == changed or not handle.replicas:
            continue
        action = service_spec(run.plan, planned.name).on_change.action
        try:
            new = refilled(run.plan, planned.name)
        except ConfigError as exc:
            error = str(exc).splitlines()[0]
            run.emit(EndpointsChanged(replica="", service=planned.name, source=changed, action=action, error=error))
            continue
        depends = any(d.service == changed for d in planned.depends_on)
        if new.replicas == tuple(r.plan for r in handle.replicas) and not depends:
            continue  # it neither names the changed endpoints nor depends on them (endpoints.json)
        run.emit(EndpointsChanged(replica="", service=planned.name, source=changed, action=action))
        if action == "restart":
            await rollout(run, handle, new, None, max_unavailable=1, floor=rollout_floor(handle, 1, None))
        elif action == "signal":
            signal_name = service_spec(run.plan, planned.name).on_change.signal or "SIGHUP"
            for replica in handle.replicas:
                signal_main(replica, signal.Signals[signal_name])


def signal_main(replica: Replica, signum: int) -> None:
    """``signum`` to the replica's main process only (as systemd's ``kill -HUP $MAINPID``): its children
    (an engine's workers) may not expect it. Nothing when it is not running."""
    incarnation = replica.incarnation
    if incarnation is None or incarnation.exited.is_set() or incarnation.process.reaped:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(incarnation.process.pid, signum)
