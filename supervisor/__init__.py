"""topovisor: launch, probe, log, supervise and tear down multi-process LLM-serving topologies."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


def _refuse_supervisord_clash() -> None:
    """supervisord's distribution installs the same import name; both in one environment break each other."""
    import os

    here = os.path.dirname(__file__)
    if any(os.path.exists(os.path.join(here, name)) for name in ("supervisord.py", "supervisorctl.py", "xmlrpc.py")):
        raise ImportError(
            f"{here} mixes topovisor with supervisord (both install the 'supervisor' package). "
            "Uninstall one of them (pip uninstall supervisor) or use separate virtual environments."
        )


_refuse_supervisord_clash()

if TYPE_CHECKING:
    from .config import load, topology_from_dict
    from .errors import ConfigError, ReadinessTimeout, ServiceFailed, SupervisorError
    from .events import (
        Completed,
        Degraded,
        Event,
        Exited,
        Failed,
        Ready,
        Restarting,
        Spawned,
        Stopped,
        Stopping,
        Unready,
    )
    from .group import RunningTopology, ServiceHandle
    from .plan import Plan, make_plan
    from .reclaim import StopReport, stop_run
    from .record import RunRecord, UnknownRun, list_runs
    from .replica import Replica, ReplicaState
    from .runner import launch, run
    from .spec import (
        AllOf,
        AnyOf,
        Backoff,
        CallableCheck,
        Check,
        Dependency,
        ExecCheck,
        HttpCheck,
        LogCheck,
        LogPolicy,
        PortSpec,
        Probe,
        ProbeTarget,
        RestartPolicy,
        Service,
        StopPolicy,
        TcpCheck,
        Topology,
    )

__all__ = [
    "AllOf",
    "AnyOf",
    "Backoff",
    "CallableCheck",
    "Check",
    "Completed",
    "ConfigError",
    "Degraded",
    "Dependency",
    "Event",
    "ExecCheck",
    "Exited",
    "Failed",
    "HttpCheck",
    "LogCheck",
    "LogPolicy",
    "Plan",
    "PortSpec",
    "Probe",
    "ProbeTarget",
    "ReadinessTimeout",
    "Ready",
    "Replica",
    "ReplicaState",
    "RestartPolicy",
    "Restarting",
    "RunRecord",
    "RunningTopology",
    "Service",
    "ServiceFailed",
    "ServiceHandle",
    "Spawned",
    "StopPolicy",
    "StopReport",
    "Stopped",
    "Stopping",
    "SupervisorError",
    "TcpCheck",
    "Topology",
    "UnknownRun",
    "Unready",
    "launch",
    "list_runs",
    "load",
    "make_plan",
    "run",
    "stop_run",
    "topology_from_dict",
]

_LAZY = {
    "load": "config",
    "topology_from_dict": "config",
    "ConfigError": "errors",
    "ReadinessTimeout": "errors",
    "ServiceFailed": "errors",
    "SupervisorError": "errors",
    "Completed": "events",
    "Degraded": "events",
    "Event": "events",
    "Exited": "events",
    "Failed": "events",
    "Ready": "events",
    "Restarting": "events",
    "Spawned": "events",
    "Stopped": "events",
    "Stopping": "events",
    "Unready": "events",
    "RunningTopology": "group",
    "ServiceHandle": "group",
    "Replica": "replica",
    "ReplicaState": "replica",
    "launch": "runner",
    "run": "runner",
    "Plan": "plan",
    "make_plan": "plan",
    "ProbeTarget": "spec",
    "StopReport": "reclaim",
    "stop_run": "reclaim",
    "RunRecord": "record",
    "UnknownRun": "record",
    "list_runs": "record",
    "AllOf": "spec",
    "AnyOf": "spec",
    "Backoff": "spec",
    "CallableCheck": "spec",
    "Check": "spec",
    "Dependency": "spec",
    "ExecCheck": "spec",
    "HttpCheck": "spec",
    "LogCheck": "spec",
    "LogPolicy": "spec",
    "PortSpec": "spec",
    "Probe": "spec",
    "RestartPolicy": "spec",
    "Service": "spec",
    "StopPolicy": "spec",
    "TcpCheck": "spec",
    "Topology": "spec",
}


def __getattr__(name: str) -> Any:
    """Import on first use: ``python -m standins`` and ``import supervisor`` stay fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
