"""topovisor: launch, probe, log, supervise and tear down multi-process LLM-serving topologies."""

from __future__ import annotations


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

from .config import load, topology_from_dict  # noqa: E402
from .errors import ConfigError, ReadinessTimeout, ServiceFailed, SupervisorError  # noqa: E402
from .events import Completed, Event, Exited, Failed, Ready, Spawned, Stopped, Stopping  # noqa: E402
from .group import Replica, ReplicaState, RunningTopology, ServiceHandle  # noqa: E402
from .launch import launch, run  # noqa: E402
from .plan import Plan, make_plan  # noqa: E402
from .probes import ProbeTarget  # noqa: E402
from .spec import (  # noqa: E402
    AllOf,
    AnyOf,
    CallableCheck,
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
    "ServiceFailed",
    "ServiceHandle",
    "Service",
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
