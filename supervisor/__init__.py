"""topovisor: launch, probe, log, supervise and tear down multi-process LLM-serving topologies."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: the release: the one place it is written (the build reads it from here: pyproject's dynamic version)
__version__ = "0.1.0"


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
    from ._control.attach import AttachedTopology as AttachedTopology
    from ._control.attach import attach as attach
    from ._control.handle import SyncTopologyHandle as SyncTopologyHandle
    from ._control.handle import TopologyHandle as TopologyHandle
    from ._errors import ConfigError as ConfigError
    from ._errors import ControlError as ControlError
    from ._errors import IncompatibleVersion as IncompatibleVersion
    from ._errors import NotRunning as NotRunning
    from ._errors import ReadinessTimeout as ReadinessTimeout
    from ._errors import ServiceFailed as ServiceFailed
    from ._errors import SupervisorError as SupervisorError
    from ._errors import UnknownRun as UnknownRun
    from ._events import AutoscaleDecided as AutoscaleDecided
    from ._events import AutoscaleSwitched as AutoscaleSwitched
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
    from ._events import PlannerDecided as PlannerDecided
    from ._events import PlannerDone as PlannerDone
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
    from ._experiment.sweep import SweepResult as SweepResult
    from ._experiment.sweep import ab as ab
    from ._experiment.sweep import read_sweep as read_sweep
    from ._experiment.sweep import sweep as sweep
    from ._host.gpu_inventory import FakeInventory as FakeInventory
    from ._host.gpu_inventory import GpuDevice as GpuDevice
    from ._host.gpu_inventory import GpuInventory as GpuInventory
    from ._host.gpu_inventory import GpuProcess as GpuProcess
    from ._host.gpu_inventory import GpuUnavailable as GpuUnavailable
    from ._host.gpu_inventory import NvmlInventory as NvmlInventory
    from ._host.gpu_inventory import SimulatedInventory as SimulatedInventory
    from ._host.resources import ResourceUsage as ResourceUsage
    from ._plan.plan import Plan as Plan
    from ._plan.plan import make_plan as make_plan
    from ._records.reclaim import StopReport as StopReport
    from ._records.reclaim import stop_run as stop_run
    from ._records.record import RunRecord as RunRecord
    from ._records.record import list_runs as list_runs
    from ._records.summary import RunSummary as RunSummary
    from ._records.summary import read_summary as read_summary
    from ._runtime.group import RunningTopology as RunningTopology
    from ._runtime.group import ServiceHandle as ServiceHandle
    from ._runtime.metrics import MetricsEndpoint as MetricsEndpoint
    from ._runtime.metrics import MetricsSnapshot as MetricsSnapshot
    from ._runtime.replica import Replica as Replica
    from ._runtime.replica import ReplicaState as ReplicaState
    from ._runtime.runner import Outcome as Outcome
    from ._runtime.runner import launch as launch
    from ._runtime.runner import run as run
    from ._runtime.runner import supervise as supervise
    from ._runtime.sync import SyncTopology as SyncTopology
    from ._runtime.sync import launch_sync as launch_sync
    from ._spec.load import load as load
    from ._spec.load import topology_from_dict as topology_from_dict
    from ._spec.model import AllOf as AllOf
    from ._spec.model import AnyOf as AnyOf
    from ._spec.model import Autoscale as Autoscale
    from ._spec.model import Backoff as Backoff
    from ._spec.model import CallableCheck as CallableCheck
    from ._spec.model import Check as Check
    from ._spec.model import Cluster as Cluster
    from ._spec.model import Dependency as Dependency
    from ._spec.model import ExecCheck as ExecCheck
    from ._spec.model import GpuRequest as GpuRequest
    from ._spec.model import HttpCheck as HttpCheck
    from ._spec.model import LogCheck as LogCheck
    from ._spec.model import LogPolicy as LogPolicy
    from ._spec.model import OnChange as OnChange
    from ._spec.model import Phase as Phase
    from ._spec.model import Placement as Placement
    from ._spec.model import PortSpec as PortSpec
    from ._spec.model import Probe as Probe
    from ._spec.model import ProbeTarget as ProbeTarget
    from ._spec.model import Profile as Profile
    from ._spec.model import ResourceLimits as ResourceLimits
    from ._spec.model import RestartPolicy as RestartPolicy
    from ._spec.model import Service as Service
    from ._spec.model import SlurmCluster as SlurmCluster
    from ._spec.model import StopPolicy as StopPolicy
    from ._spec.model import TcpCheck as TcpCheck
    from ._spec.model import Topology as Topology


#: every public name and the module that defines it: the one table of the public surface
_LAZY = {
    "AllOf": "_spec.model",
    "AnyOf": "_spec.model",
    "AttachedTopology": "_control.attach",
    "Autoscale": "_spec.model",
    "AutoscaleDecided": "_events",
    "AutoscaleSwitched": "_events",
    "Backoff": "_spec.model",
    "CallableCheck": "_spec.model",
    "Check": "_spec.model",
    "Cluster": "_spec.model",
    "Completed": "_events",
    "ConfigError": "_errors",
    "ControlError": "_errors",
    "ControlRequest": "_events",
    "Degraded": "_events",
    "Dependency": "_spec.model",
    "EndpointsChanged": "_events",
    "Event": "_events",
    "ExecCheck": "_spec.model",
    "Exited": "_events",
    "Failed": "_events",
    "FakeInventory": "_host.gpu_inventory",
    "GpuDevice": "_host.gpu_inventory",
    "GpuInventory": "_host.gpu_inventory",
    "GpuNotReleased": "_events",
    "GpuProcess": "_host.gpu_inventory",
    "GpuUnavailable": "_host.gpu_inventory",
    "NotRunning": "_errors",
    "NvmlInventory": "_host.gpu_inventory",
    "SimulatedInventory": "_host.gpu_inventory",
    "HttpCheck": "_spec.model",
    "IncompatibleVersion": "_errors",
    "LogCheck": "_spec.model",
    "GpuRequest": "_spec.model",
    "LogPolicy": "_spec.model",
    "Marked": "_events",
    "MetricsEndpoint": "_runtime.metrics",
    "MetricsSnapshot": "_runtime.metrics",
    "Phase": "_spec.model",
    "PhaseEnded": "_events",
    "PhaseStarted": "_events",
    "PlannerDecided": "_events",
    "PlannerDone": "_events",
    "OnChange": "_spec.model",
    "Outcome": "_runtime.runner",
    "Plan": "_plan.plan",
    "Placement": "_spec.model",
    "PortSpec": "_spec.model",
    "Probe": "_spec.model",
    "ProbeTarget": "_spec.model",
    "Profile": "_spec.model",
    "ReadinessTimeout": "_errors",
    "Ready": "_events",
    "Replica": "_runtime.replica",
    "ReplicaState": "_runtime.replica",
    "ResourceLimits": "_spec.model",
    "ResourceUsage": "_host.resources",
    "RestartPolicy": "_spec.model",
    "Restarting": "_events",
    "RolloutEnded": "_events",
    "RolloutStarted": "_events",
    "RolloutStepped": "_events",
    "ReplicaAdded": "_events",
    "ReplicaRemoved": "_events",
    "ScaleEnded": "_events",
    "ScaleStarted": "_events",
    "RunRecord": "_records.record",
    "RunSummary": "_records.summary",
    "RunningTopology": "_runtime.group",
    "Service": "_spec.model",
    "ServiceFailed": "_errors",
    "ServiceHandle": "_runtime.group",
    "Spawned": "_events",
    "SlurmCluster": "_spec.model",
    "StopPolicy": "_spec.model",
    "StopReport": "_records.reclaim",
    "Stopped": "_events",
    "Stopping": "_events",
    "SyncTopology": "_runtime.sync",
    "SyncTopologyHandle": "_control.handle",
    "SupervisorError": "_errors",
    "SweepResult": "_experiment.sweep",
    "TcpCheck": "_spec.model",
    "TopologyHandle": "_control.handle",
    "Topology": "_spec.model",
    "UnknownRun": "_errors",
    "Unready": "_events",
    "ab": "_experiment.sweep",
    "attach": "_control.attach",
    "launch": "_runtime.runner",
    "launch_sync": "_runtime.sync",
    "list_runs": "_records.record",
    "load": "_spec.load",
    "make_plan": "_plan.plan",
    "read_summary": "_records.summary",
    "read_sweep": "_experiment.sweep",
    "run": "_runtime.runner",
    "stop_run": "_records.reclaim",
    "supervise": "_runtime.runner",
    "sweep": "_experiment.sweep",
    "topology_from_dict": "_spec.load",
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
