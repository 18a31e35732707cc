"""The mark every process of a run carries in its environment (descendants inherit it).

Its own module, standard library only: the spawner (``process``) sets it, and the process-table scan
(``proctable``), which the watchdog imports at start, reads it.
"""

from __future__ import annotations

__all__ = ["PROBE_ATTEMPT_ENV", "REPLICA_ENV", "RUN_ID_ENV"]

RUN_ID_ENV = "TOPOVISOR_RUN_ID"  #: the run a process belongs to
REPLICA_ENV = "TOPOVISOR_REPLICA"  #: the replica it was started for
PROBE_ATTEMPT_ENV = "TOPOVISOR_PROBE_ATTEMPT"  #: the exec probe attempt it was started by (its escapees too)
