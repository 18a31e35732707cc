"""Run records: the per-user index of live runs, what each run wrote on disk, and what it left behind.

The implementation lives in ``supervisor._records`` (paths, schema, index, leftovers, ports; see its
docstring); this module is the one place the rest of the library and ``supervisor ps/stop/gc/logs``
import it from. Pure library: no printing, and nothing here imports the running group: the group hands
the records plain ``Manifest``/``Summary`` objects (``supervisor._records.snapshot``).
"""

from __future__ import annotations

from .index import (
    ReplicaRecord,
    RunRecord,
    UnknownRun,
    list_runs,
    load_run,
    read_manifest,
    register_run,
    resolve_run,
    unregister_run,
    write_manifest,
)
from .leftovers import gc_candidates, leftover_members, leftovers, protected_pids, unrecorded_marks
from .paths import runs_dir, save_record, state_dir, warn_record_failure
from .ports import PortOwner, port_owner, port_owners
from .schema import (
    ACTIVE_STATES,
    IndexEntry,
    Manifest,
    ReplicaEntry,
    ReplicaOutcome,
    ServiceEntry,
    StopEntry,
    Summary,
    manifest_from_json,
    summary_from_json,
    to_json,
)

__all__ = [
    "ACTIVE_STATES",
    "IndexEntry",
    "Manifest",
    "PortOwner",
    "ReplicaEntry",
    "ReplicaOutcome",
    "ReplicaRecord",
    "RunRecord",
    "ServiceEntry",
    "StopEntry",
    "Summary",
    "UnknownRun",
    "gc_candidates",
    "leftover_members",
    "leftovers",
    "list_runs",
    "load_run",
    "manifest_from_json",
    "port_owner",
    "port_owners",
    "protected_pids",
    "read_manifest",
    "register_run",
    "resolve_run",
    "runs_dir",
    "save_record",
    "state_dir",
    "summary_from_json",
    "to_json",
    "unrecorded_marks",
    "unregister_run",
    "warn_record_failure",
    "write_manifest",
]
