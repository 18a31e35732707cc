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

if TYPE_CHECKING:  # the same table as _LAZY, for type checkers (a test keeps the two equal)
    from ._attach import AttachedTopology as AttachedTopology
    from ._attach import attach as attach
    from ._config import load as load
    from ._config import topology_from_dict as topology_from_dict
    from ._errors import ConfigError as ConfigError
    from ._errors import ControlError as ControlError
    from ._errors import NotRunning as NotRunning
    from ._errors import ReadinessTimeout as ReadinessTimeout
    from ._errors import ServiceFailed as ServiceFailed
    from ._errors import SupervisorError as SupervisorError
    from ._errors import UnknownRun as UnknownRun
    from ._events import Completed as Completed
    from ._events import ControlRequest as ControlRequest
    from ._events import Degraded as Degraded
    from ._events import EndpointsChanged as EndpointsChanged
    from ._events import Event as Event
    from ._events import Exited as Exited
    from ._events import Failed as Failed
    from ._events import GpuNotReleased as GpuNotReleased
    from ._events import Marked as Marked
    from ._events import PhaseEnded as PhaseEnded
    from ._events import PhaseStarted as PhaseStarted
    from ._events import Ready as Ready
    from ._events import ReplicaAdded as ReplicaAdded
    from ._events import ReplicaRemoved as ReplicaRemoved
    from ._events import Restarting as Restarting
    from ._events import RolloutEnded as RolloutEnded
    from ._events import RolloutStarted as RolloutStarted
    from ._events import RolloutStepped as RolloutStepped
    from ._events import ScaleEnded as ScaleEnded
    from ._events import ScaleStarted as ScaleStarted
    from ._events import Spawned as Spawned
    from ._events import Stopped as Stopped
    from ._events import Stopping as Stopping
    from ._events import Unready as Unready
    from ._gpu_inventory import FakeInventory as FakeInventory
    from ._gpu_inventory import GpuDevice as GpuDevice
    from ._gpu_inventory import GpuInventory as GpuInventory
    from ._gpu_inventory import GpuProcess as GpuProcess
    from ._gpu_inventory import GpuUnavailable as GpuUnavailable
    from ._gpu_inventory import NvmlInventory as NvmlInventory
    from ._gpu_inventory import SimulatedInventory as SimulatedInventory
    from ._group import RunningTopology as RunningTopology
    from ._group import ServiceHandle as ServiceHandle
    from ._metrics import MetricsEndpoint as MetricsEndpoint
    from ._metrics import MetricsSnapshot as MetricsSnapshot
    from ._plan import Plan as Plan
    from ._plan import make_plan as make_plan
    from ._reclaim import StopReport as StopReport
    from ._reclaim import stop_run as stop_run
    from ._record import RunRecord as RunRecord
    from ._record import list_runs as list_runs
    from ._replica import Replica as Replica
    from ._replica import ReplicaState as ReplicaState
    from ._runner import Outcome as Outcome
    from ._runner import launch as launch
    from ._runner import run as run
    from ._runner import supervise as supervise
    from ._spec import AllOf as AllOf
    from ._spec import AnyOf as AnyOf
    from ._spec import Backoff as Backoff
    from ._spec import CallableCheck as CallableCheck
    from ._spec import Check as Check
    from ._spec import Cluster as Cluster
    from ._spec import Dependency as Dependency
    from ._spec import ExecCheck as ExecCheck
    from ._spec import GpuRequest as GpuRequest
    from ._spec import HttpCheck as HttpCheck
    from ._spec import LogCheck as LogCheck
    from ._spec import LogPolicy as LogPolicy
    from ._spec import OnChange as OnChange
    from ._spec import Phase as Phase
    from ._spec import Placement as Placement
    from ._spec import PortSpec as PortSpec
    from ._spec import Probe as Probe
    from ._spec import ProbeTarget as ProbeTarget
    from ._spec import Profile as Profile
    from ._spec import RestartPolicy as RestartPolicy
    from ._spec import Service as Service
    from ._spec import SlurmCluster as SlurmCluster
    from ._spec import StopPolicy as StopPolicy
    from ._spec import TcpCheck as TcpCheck
    from ._spec import Topology as Topology
    from ._summary import RunSummary as RunSummary
    from ._summary import read_summary as read_summary
    from ._sync import SyncTopology as SyncTopology
    from ._sync import launch_sync as launch_sync


#: every public name and the module that defines it: the one table of the public surface
_LAZY = {
    "AllOf": "_spec",
    "AnyOf": "_spec",
    "AttachedTopology": "_attach",
    "Backoff": "_spec",
    "CallableCheck": "_spec",
    "Check": "_spec",
    "Cluster": "_spec",
    "Completed": "_events",
    "ConfigError": "_errors",
    "ControlError": "_errors",
    "ControlRequest": "_events",
    "Degraded": "_events",
    "Dependency": "_spec",
    "EndpointsChanged": "_events",
    "Event": "_events",
    "ExecCheck": "_spec",
    "Exited": "_events",
    "Failed": "_events",
    "FakeInventory": "_gpu_inventory",
    "GpuDevice": "_gpu_inventory",
    "GpuInventory": "_gpu_inventory",
    "GpuNotReleased": "_events",
    "GpuProcess": "_gpu_inventory",
    "GpuUnavailable": "_gpu_inventory",
    "NotRunning": "_errors",
    "NvmlInventory": "_gpu_inventory",
    "SimulatedInventory": "_gpu_inventory",
    "HttpCheck": "_spec",
    "LogCheck": "_spec",
    "GpuRequest": "_spec",
    "LogPolicy": "_spec",
    "Marked": "_events",
    "MetricsEndpoint": "_metrics",
    "MetricsSnapshot": "_metrics",
    "Phase": "_spec",
    "PhaseEnded": "_events",
    "PhaseStarted": "_events",
    "OnChange": "_spec",
    "Outcome": "_runner",
    "Plan": "_plan",
    "Placement": "_spec",
    "PortSpec": "_spec",
    "Probe": "_spec",
    "ProbeTarget": "_spec",
    "Profile": "_spec",
    "ReadinessTimeout": "_errors",
    "Ready": "_events",
    "Replica": "_replica",
    "ReplicaState": "_replica",
    "RestartPolicy": "_spec",
    "Restarting": "_events",
    "RolloutEnded": "_events",
    "RolloutStarted": "_events",
    "RolloutStepped": "_events",
    "ReplicaAdded": "_events",
    "ReplicaRemoved": "_events",
    "ScaleEnded": "_events",
    "ScaleStarted": "_events",
    "RunRecord": "_record",
    "RunSummary": "_summary",
    "RunningTopology": "_group",
    "Service": "_spec",
    "ServiceFailed": "_errors",
    "ServiceHandle": "_group",
    "Spawned": "_events",
    "SlurmCluster": "_spec",
    "StopPolicy": "_spec",
    "StopReport": "_reclaim",
    "Stopped": "_events",
    "Stopping": "_events",
    "SyncTopology": "_sync",
    "SupervisorError": "_errors",
    "TcpCheck": "_spec",
    "Topology": "_spec",
    "UnknownRun": "_errors",
    "Unready": "_events",
    "attach": "_attach",
    "launch": "_runner",
    "launch_sync": "_sync",
    "list_runs": "_record",
    "load": "_config",
    "make_plan": "_plan",
    "read_summary": "_summary",
    "run": "_runner",
    "stop_run": "_reclaim",
    "supervise": "_runner",
    "topology_from_dict": "_config",
}

__all__ = sorted(_LAZY)


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
