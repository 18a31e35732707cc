"""One schema for the records: what the group writes is what the readers, reclaim and fakerun use; reading
forgives damage; the records import nothing of the runtime, and the watchdog stays light."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
from supervisor import _marks
from supervisor._host import process as _process
from supervisor._records import schema
from supervisor._records.record import Manifest, ReplicaEntry, load_run, manifest_from_json, summary_from_json, to_json

from ..helpers import PYTHON

ROOT = Path(__file__).parents[2]


@pytest.mark.anyio
async def test_a_real_runs_records_round_trip_through_the_schema(runs_dir: Path) -> None:
    """manifest.json and summary.json of a real run parse into the schema and serialise back unchanged:
    the writer has no fields of its own."""
    topo = sv.Topology(
        name="schema",
        services=[
            sv.Service(name="a", command=[PYTHON, "-c", "print('up', flush=True); import time; time.sleep(60)"],
                       ports=["port"], ready=sv.LogCheck("up"), replicas=2),
        ],
    )  # fmt: skip
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        pass
    manifest_data = json.loads((group.run_dir / "manifest.json").read_text())
    summary_data = json.loads((group.run_dir / "summary.json").read_text())
    manifest = manifest_from_json(manifest_data)
    assert to_json(manifest) == manifest_data
    assert to_json(summary_from_json(summary_data)) == summary_data
    converter = schema._converter()  # what to_json was before it became attrs.asdict: the same data
    assert converter.unstructure(manifest) == manifest_data
    assert converter.unstructure(summary_from_json(summary_data)) == summary_data
    assert [r.name for _, r in manifest.replicas()] == ["a.0", "a.1"] and manifest.phase == "stopped"
    record = load_run(group.run_dir)
    assert [r.ports["port"] for r in record.replicas()] == [r.port for r in group["a"].replicas]


@pytest.mark.parametrize(
    "damaged",
    [
        None,
        [],
        {"services": 3},
        {"services": {"a": 3, "b": {"replicas": [5, {"pid": "x", "ports": {"p": "q", "r": 1}, "stop": None}]}}},
        {"phase": 3, "leftovers": ["1", 2], "supervisor_pid": True, "started_wall_time": "yesterday"},
    ],
)
def test_a_damaged_manifest_reads_as_defaults_never_an_error(damaged: object) -> None:
    """A crash or an old version may leave anything: the wrong type of a field reads as its default."""
    manifest = manifest_from_json(damaged)
    assert isinstance(manifest, Manifest)
    for _, replica in manifest.replicas():
        assert replica.pid is None and replica.ports == {"r": 1} and replica.stop.signal == "SIGTERM"
    if isinstance(damaged, dict) and "phase" in damaged:
        assert manifest.phase == "unknown" and manifest.leftovers == [2] and manifest.supervisor_pid is None
        assert manifest.started_wall_time is None


def test_replica_entry_defaults_match_what_readers_assume() -> None:
    """A bare entry: no pid (never signalled), SIGTERM with a 10 s grace, no restarts."""
    entry = ReplicaEntry()
    assert (entry.pid, entry.create_time, entry.stop.signal, entry.stop.grace_seconds, entry.restarts) == (
        None, None, "SIGTERM", 10.0, 0,
    )  # fmt: skip


def run_python(code: str) -> None:
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_records_import_nothing_of_the_runtime() -> None:
    """record and every module of _records load without the group, the replicas or anyio."""
    run_python(
        "import sys, supervisor._records.record, supervisor._records.index, supervisor._records.leftovers, "
        "supervisor._records.ports, supervisor._records.paths\n"
        "bad = [m for m in ('supervisor._runtime.group', 'supervisor._runtime.replica', 'supervisor._runtime.runner', 'anyio') if m in sys.modules]\n"
        "assert not bad, bad"
    )


def test_the_watchdog_imports_no_anyio() -> None:
    """The watchdog is a small separate process: the standard library, psutil and the process table."""
    run_python(
        "import sys, supervisor._host.watchdog\nassert 'anyio' not in sys.modules and 'attrs' not in sys.modules"
    )


def test_the_mark_names_are_the_ones_the_spawner_sets() -> None:
    assert (_marks.RUN_ID_ENV, _marks.REPLICA_ENV) == (_process.RUN_ID_ENV, _process.REPLICA_ENV)  # one definition


def test_every_event_kind_is_distinct_and_its_line_is_json() -> None:
    """events.jsonl tells events apart by ``event``: one kind per class; the live operations' events (tuples,
    mappings) serialise as JSON lines too."""
    from supervisor import _events

    classes = [getattr(_events, name) for name in _events.__all__]
    kinds = [cls.kind for cls in classes if isinstance(cls, type) and issubclass(cls, sv.Event) and cls is not sv.Event]
    assert len(kinds) == len(set(kinds)) and {"scale_started", "rollout_stepped", "endpoints_changed"} <= set(kinds)
    samples = [
        sv.ReplicaAdded(replica="w.2", service="w", ports={"port": 1}, gpus=(0, 1), url="http://127.0.0.1:1"),
        sv.ScaleEnded(replica="", service="w", replicas=3, added=("w.2",), seconds=0.1),
        sv.RolloutEnded(replica="", service="w", seconds=1.0, error="x", rolled_back=("w.0",)),
        sv.EndpointsChanged(replica="", service="r", source="w", action="restart"),
    ]
    for event in samples:
        line = json.loads(json.dumps(event.to_json()))
        assert line["event"] == event.kind and line["service"] == event.service
    assert json.loads(json.dumps(samples[0].to_json()))["gpus"] == [0, 1]
