"""What the control socket can be asked: one table, ``OPERATIONS``, from op name to its parameters and the
coroutine that carries it out on the running group.

Adding an op is one entry. ``_method("scale", "service", replicas=Param(int))`` calls ``group.scale(service,
replicas=...)`` when the group has such a method and answers "not supported by this run" otherwise, so a
client may ask a run of an older version. Parameters are checked here (types, required, unknown names)
before anything runs; an error raised by the operation becomes the error reply.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .protocol import ProtocolError, is_request_id

if TYPE_CHECKING:
    from .._events import Event, EventSubscription, Marked
    from .._redact import Redactor

__all__ = [
    "OPERATIONS",
    "ControlledRun",
    "Operation",
    "Param",
    "ReplicaStatusView",
    "ServiceStatusView",
    "Unsupported",
    "parse_request",
    "status_of",
]


class ReplicaStatusView(Protocol):
    """What ``status`` reports of a replica (``Replica``: the runtime sits above this layer)."""

    @property
    def name(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def state(self) -> Any: ...  #: a ``ReplicaState``: its ``value``
    @property
    def pid(self) -> int | None: ...
    @property
    def running(self) -> bool: ...
    @property
    def ports(self) -> dict[str, int]: ...
    @property
    def url(self) -> str | None: ...
    @property
    def api(self) -> dict[str, str]: ...
    @property
    def restarts(self) -> int: ...
    @property
    def incarnation(self) -> Any: ...  #: its ``ready_at`` and ``spawned_at``, or None before the first spawn
    @property
    def plan(self) -> Any: ...  #: the ``ReplicaPlan``: its ``gpus``
    @property
    def log_path(self) -> Path: ...
    @property
    def resources(self) -> Any: ...  #: a ``ResourceUsage`` (its ``to_json``), or None before the first sample


class ServiceStatusView(Protocol):
    """What ``status`` reports of a service (``ServiceHandle``)."""

    @property
    def name(self) -> str: ...
    @property
    def plan(self) -> Any: ...  #: the ``ServicePlan``: its ``depends_on`` and ``min_ready``
    @property
    def ready_count(self) -> int: ...
    @property
    def urls(self) -> list[str]: ...
    @property
    def api(self) -> dict[str, str]: ...
    @property
    def replicas(self) -> Sequence[ReplicaStatusView]: ...


class ControlledRun(Protocol):
    """What the control socket uses of the running group (``RunningTopology``; typed here, not imported:
    the group starts the server)."""

    @property
    def run_id(self) -> str: ...
    @property
    def run_dir(self) -> Path: ...
    @property
    def plan(self) -> Any: ...  #: the ``Plan``: name
    @property
    def phase(self) -> str: ...  #: pending, starting, running, stopping, stopped
    @property
    def started_wall_time(self) -> float: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ready_at(self) -> float | None: ...
    @property
    def containment(self) -> str: ...  #: cgroup2, freezer or marks
    @property
    def cgroup(self) -> Path | None: ...
    def redactor(self) -> Redactor: ...  #: hides the run's secrets in what the socket answers

    @property
    def services(self) -> Sequence[ServiceStatusView]: ...
    def events(self, *, history: bool = False) -> EventSubscription: ...
    def emit(self, event: Event) -> None: ...
    def mark(self, label: str) -> Marked: ...
    async def stop(self, name: str | None = None) -> None: ...
    def cancel(self) -> bool: ...
    async def wait_torn_down(self) -> None: ...


_JSON_SCALARS = (str, int, float, bool)


class Unsupported(Exception):
    """The run has no such operation (an older or newer version of the group)."""


@attrs.frozen
class Param:
    """One request field: its accepted JSON types, and whether a request must carry it."""

    types: tuple[type, ...] | type
    required: bool = True

    def check(self, op: str, name: str, value: object) -> None:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if value is None and not self.required:
            return
        # JSON true is not a number of replicas, though Python's bool is an int
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            wanted = _JSON_NAMES_TOGETHER.get(types) or " or ".join(_JSON_NAMES.get(t, t.__name__) for t in types)
            raise ProtocolError(f"op {op!r}: field {name!r} must be {wanted}, got {_json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # Python's JSON reads NaN and 1e999
            raise ProtocolError(f"op {op!r}: field {name!r} must be a finite number, got {value}")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, _JSON_SCALARS):
                    raise ProtocolError(f"op {op!r}: field {name!r}: value of {key!r} must be a string or a number")


_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object"}
_JSON_NAMES_TOGETHER: dict[tuple[type, ...], str] = {(int, float): "a number"}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a number", dict: "an object"}.get(
        type(value), "a list" if isinstance(value, list) else type(value).__name__
    )


Handler = Callable[["ControlledRun", dict[str, Any]], Awaitable[dict[str, Any]]]


@attrs.frozen
class Operation:
    """One op: its parameters, and what it does. ``stream`` ops (``events``) are run by the server itself;
    ``recorded`` ops become a ``ControlRequest`` event (a query such as ``status`` does not, so a monitor
    polling it cannot grow the run's history without bound)."""

    handler: Handler | None
    params: Mapping[str, Param] = attrs.field(factory=dict)
    recorded: bool = True
    stream: bool = False
    shielded: bool = False  #: runs to its end (and its reply goes out) even as the run shuts down


def _method(name: str, *positional: str, **params: Param) -> Operation:
    """An op that calls ``group.<name>(*positional fields, **other fields given)``; its result (attrs
    class, mapping, or anything with ``to_json``) is the reply's ``result``."""

    async def call(group: ControlledRun, args: dict[str, Any]) -> dict[str, Any]:
        method = getattr(group, name, None)
        if method is None:
            raise Unsupported(f"{name!r} is not supported by this run")
        kwargs = {k: v for k, v in args.items() if k not in positional}
        result = await method(*(args[p] for p in positional), **kwargs)
        return {} if result is None else {"result": _jsonable(result)}

    return Operation(call, {**{p: Param(str) for p in positional}, **params})


def _jsonable(value: object) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value)  # type: ignore[arg-type]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    if isinstance(value, (dict, list, *_JSON_SCALARS)):
        return value
    return str(value)


async def _status(group: ControlledRun, args: dict[str, Any]) -> dict[str, Any]:
    return {"status": status_of(group)}


async def _mark(group: ControlledRun, args: dict[str, Any]) -> dict[str, Any]:
    return {"event": group.mark(args["label"]).to_json()}


async def _stop(group: ControlledRun, args: dict[str, Any]) -> dict[str, Any]:
    """One service or replica; or the whole run as a stop signal ends it (the owner's cleanup first), and
    the answer once it is torn down."""
    name = args.get("name")
    if name is not None or not group.cancel():
        await group.stop(name)
    if name is None:
        await group.wait_torn_down()
    return {}


#: every op the socket takes; docs/control.md describes each
OPERATIONS: dict[str, Operation] = {
    "status": Operation(_status, recorded=False),
    "events": Operation(
        None, {"history": Param(bool, required=False), "since": Param((int, float), required=False)}, stream=True
    ),
    "mark": Operation(_mark, {"label": Param(str)}),
    "restart": _method("restart", "name"),
    "stop": Operation(_stop, {"name": Param(str, required=False)}, shielded=True),
    "scale": _method("scale", "service", replicas=Param(int)),
    "autoscale": _method("autoscale", "service", enabled=Param(bool)),
    "planner_decision": _method(
        "planner_decision",
        decision=Param((str, int)),
        replicas=Param(dict),
        asked=Param(dict, required=False),
        bounds=Param(dict, required=False),
        source=Param(str, required=False),
    ),
    "rolling_restart": _method(
        "rolling_restart",
        "service",
        max_unavailable=Param(int, required=False),
        min_ready=Param(int, required=False),
        overrides=Param(dict, required=False),
    ),
}

_ENVELOPE = frozenset({"v", "id", "op"})


def parse_request(request: dict[str, Any]) -> tuple[str, Operation, dict[str, Any]]:
    """The op name, its table entry and its arguments (only those given); ``ProtocolError`` naming what
    is wrong otherwise."""
    from .protocol import OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, UnsupportedVersion

    version = request.get("v")
    # ``true == 1`` and ``1.0 == 1`` in Python: only an int is a version
    if type(version) is not int or not OLDEST_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
        shown = repr(version) if isinstance(version, (str, int, float)) or version is None else _json_type(version)
        raise UnsupportedVersion(f"unsupported protocol version {shown}; this run speaks v{PROTOCOL_VERSION}")
    if not is_request_id(request.get("id")):
        raise ProtocolError("'id' must be a string, a finite number or null")
    op = request.get("op")
    if not isinstance(op, str):
        raise ProtocolError(f"'op' must be a string, one of: {', '.join(OPERATIONS)}")
    operation = OPERATIONS.get(op)
    if operation is None:
        raise ProtocolError(f"unknown op {op!r}; ops: {', '.join(OPERATIONS)}")
    args = {k: v for k, v in request.items() if k not in _ENVELOPE}
    unknown = sorted(set(args) - set(operation.params))
    if unknown:
        allowed = ", ".join(operation.params) or "none"
        raise ProtocolError(f"op {op!r}: unknown field {unknown[0]!r}; its fields: {allowed}")
    for name, param in operation.params.items():
        if name not in args:
            if param.required:
                raise ProtocolError(f"op {op!r}: missing field {name!r}")
            continue
        param.check(op, name, args[name])
    return op, operation, {k: v for k, v in args.items() if v is not None}


# ----- status ------------------------------------------------------------------------------------------
def status_of(group: ControlledRun) -> dict[str, Any]:
    """The run as its owner sees it now: every service and replica with state, pid, ports, urls,
    restarts, time to ready and GPUs (what ``supervisor status`` shows and ``attach`` reads)."""
    redact = group.redactor().text
    now, wall = time.monotonic(), time.time()
    return {
        "run_id": group.run_id,
        "name": group.plan.name,
        "run_dir": str(group.run_dir),
        "phase": group.phase,
        "containment": group.containment,
        "cgroup": None if group.cgroup is None else str(group.cgroup),
        "supervisor_pid": os.getpid(),
        "started_wall_time": group.started_wall_time,
        "ready_seconds": None if group.ready_at is None else group.ready_at - group.started_at,
        "services": {s.name: _service_status(s, redact, now, wall) for s in group.services},
        "autoscale": _autoscale_status(group),
        "planner": _planner_status(group),
    }


def _autoscale_status(group: ControlledRun) -> dict[str, Any]:
    """Per autoscaled service, its autoscaler's state; empty from a group that has none."""
    status = getattr(group, "autoscale_status", None)
    return status() if callable(status) else {}


def _planner_status(group: ControlledRun) -> dict[str, Any]:
    """The last outside planner decision and its outcome; empty before any, or from a group that has none."""
    status = getattr(group, "planner_status", None)
    return status() if callable(status) else {}


def _service_status(
    service: ServiceStatusView, redact: Callable[[str], str], now: float, wall: float
) -> dict[str, Any]:
    return {
        "depends_on": {d.service: d.condition for d in service.plan.depends_on},
        "min_ready": service.plan.min_ready,
        "ready": service.ready_count,
        "urls": [redact(u) for u in service.urls],
        "api": {name: redact(url) for name, url in service.api.items()},  #: replica 0's routes
        "replicas": [_replica_status(r, redact, now, wall) for r in service.replicas],
    }


def _replica_status(
    replica: ReplicaStatusView, redact: Callable[[str], str], now: float, wall: float
) -> dict[str, Any]:
    incarnation = replica.incarnation
    ready_at = incarnation.ready_at if incarnation is not None else None
    return {
        "name": replica.name,
        "service": replica.service,
        "index": replica.index,
        "state": replica.state.value,
        "pid": replica.pid,
        "running": replica.running,
        "ports": replica.ports,
        "url": None if replica.url is None else redact(replica.url),
        "api": {name: redact(url) for name, url in replica.api.items()},
        "restarts": replica.restarts,
        "ready_seconds": None if ready_at is None or incarnation is None else ready_at - incarnation.spawned_at,
        "ready_wall_time": None if ready_at is None else wall - (now - ready_at),
        "gpus": list(replica.plan.gpus),
        "log": str(replica.log_path),
        "resources": None if replica.resources is None else replica.resources.to_json(),
    }
