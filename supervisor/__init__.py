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
    from .events import Completed, Event, Exited, Failed, Ready, Spawned, Stopped, Stopping
    from .group import Replica, ReplicaState, RunningTopology, ServiceHandle
    from .launch import launch, run
    from .plan import Plan, make_plan
    from .probes import ProbeTarget
    from .spec import (
        AllOf,
        AnyOf,
        CallableCheck,
        Check,
        Dependency,
        ExecCheck,
        HttpCheck,
        LogCheck,
        LogPolicy,
        PortSpec,
        Probe,
        Service,
        StopPolicy,
        TcpCheck,
        Topology,
    )

__all__ = [
    "AllOf",
    "AnyOf",
    "CallableCheck",
    "Check",
    "Completed",
    "ConfigError",
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
    "RunningTopology",
    "Service",
    "ServiceFailed",
    "ServiceHandle",
    "Spawned",
    "StopPolicy",
    "Stopped",
    "Stopping",
    "SupervisorError",
    "TcpCheck",
    "Topology",
    "launch",
    "load",
    "make_plan",
    "run",
    "topology_from_dict",
]


_LAZY = {
    "AllOf": "spec",
    "AnyOf": "spec",
    "CallableCheck": "spec",
    "Check": "spec",
    "Completed": "events",
    "ConfigError": "errors",
    "Dependency": "spec",
    "Event": "events",
    "ExecCheck": "spec",
    "Exited": "events",
    "Failed": "events",
    "HttpCheck": "spec",
    "LogCheck": "spec",
    "LogPolicy": "spec",
    "Plan": "plan",
    "PortSpec": "spec",
    "Probe": "spec",
    "ProbeTarget": "probes",
    "ReadinessTimeout": "errors",
    "Ready": "events",
    "Replica": "group",
    "ReplicaState": "group",
    "RunningTopology": "group",
    "Service": "spec",
    "ServiceFailed": "errors",
    "ServiceHandle": "group",
    "Spawned": "events",
    "StopPolicy": "spec",
    "Stopped": "events",
    "Stopping": "events",
    "SupervisorError": "errors",
    "TcpCheck": "spec",
    "Topology": "spec",
    "launch": "launch",
    "load": "config",
    "make_plan": "plan",
    "run": "launch",
    "topology_from_dict": "config",
}


def __getattr__(name: str) -> Any:
    """Import on first use: ``python -m supervisor.standin`` and ``import supervisor`` stay fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
