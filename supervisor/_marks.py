"""The mark every process of a run carries in its environment (descendants inherit it), and the ways a
run can be contained (the mark is the last of them).

Its own module, standard library only: the spawner (``process``) sets it, and the process-table scan
(``proctable``), which the watchdog imports at start, reads it.
"""

from __future__ import annotations

__all__ = ["CONTAINMENT_CHOICES", "CONTAINMENT_ENV", "PROBE_ATTEMPT_ENV", "REPLICA_ENV", "RUN_ID_ENV"]

RUN_ID_ENV = "TOPOVISOR_RUN_ID"  #: the run a process belongs to
REPLICA_ENV = "TOPOVISOR_REPLICA"  #: the replica it was started for
PROBE_ATTEMPT_ENV = "TOPOVISOR_PROBE_ATTEMPT"  #: the exec probe attempt it was started by (its escapees too)

#: how a run's processes are kept together (``_host.containment``): auto picks the best the host allows
CONTAINMENT_CHOICES = ("auto", "cgroup2", "freezer", "marks")
#: the containment of a run whose topology says auto (the CLI's ``--containment`` and the topology's win)
CONTAINMENT_ENV = "TOPOVISOR_CONTAINMENT"
