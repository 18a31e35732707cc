"""``summary.json`` for a run whose supervisor died, built from the records on disk alone (the watchdog's
after its sweep, gc's when the watchdog died too): last known states, restarts, what had to be killed."""

from __future__ import annotations

import json
from pathlib import Path

from supervisor import read_summary
from supervisor._records.died import DIED_OUTCOME, summary_of_dead_run, write_dead_run_summary
from supervisor._records.schema import summary_from_json, to_json
from supervisor._records.summary_text import render_summary


def write_records(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    replica = {"name": "engine", "state": "starting", "pid": 10, "restarts": 0}
    manifest = {"run_id": "r1", "supervisor_pid": 4242, "started_wall_time": 1.0,
                "services": {"engine": {"replicas": [replica]},
                             "web": {"depends_on": {"engine": "ready"}, "replicas": [{"name": "web.0"}, {"name": "web.1"}]}}}  # fmt: skip
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    events = [
        {"event": "spawned", "replica": "engine", "service": "engine", "pid": 10},
        {"event": "exited", "replica": "engine", "service": "engine", "pid": 10, "exit_code": 3},
        {"event": "restarting", "replica": "engine", "service": "engine", "restarts": 1},
        {"event": "spawned", "replica": "engine", "service": "engine", "pid": 11},
        {"event": "ready", "replica": "engine", "service": "engine", "pid": 11},
        {"event": "spawned", "replica": "web.0", "service": "web", "pid": 20},
        {"event": "spawned", "replica": "web.1", "service": "web", "pid": 21},
        {"event": "replica_removed", "replica": "web.1", "service": "web"},
        {"event": "spawned", "replica": "web.2", "service": "web", "pid": 22},
        {"event": "watchdog_sweep", "run_id": "r1", "killed": [11]},
    ]
    text = "".join(json.dumps(e) + "\n" for e in events) + '{"event": "ready", "repl'  # cut short by the death
    (run_dir / "events.jsonl").write_text(text)


def test_the_summary_tells_each_replicas_last_known_state_and_what_was_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    write_records(run_dir)
    summary = summary_of_dead_run(run_dir, killed=[11, 20, 99], survivors=[22], by="gc")
    assert (summary.run_id, summary.outcome, summary.ended_by) == ("r1", DIED_OUTCOME, "gc")
    assert summary.failure is not None and "pid 4242" in summary.failure and "22" in summary.failure
    engine = summary.replicas["engine"]
    assert (engine.state, engine.restarts, engine.returncode, engine.killed) == ("ready", 1, 3, True)
    assert summary.replicas["web.0"].state == "starting" and summary.replicas["web.0"].killed
    assert summary.replicas["web.1"].state == "removed" and not summary.replicas["web.1"].killed
    assert summary.replicas["web.2"].state == "starting" and not summary.replicas["web.2"].killed  # survived
    assert summary.services["web"].replicas == ["web.0", "web.2"] and summary.services["web"].removed == ["web.1"]
    assert summary.services["web"].depends_on == {"engine": "ready"}
    assert summary.killed == [11, 20, 99] and summary.leftovers == [22] and not summary.verified_no_leftovers
    assert summary_from_json(json.loads(json.dumps(to_json(summary)))) == summary  # the schema reads it back
    text = "\n".join(render_summary(summary))  # the text summary takes it too
    assert "summary (run supervisor-died)" in text and "engine" in text and "killed" in text


def test_a_summary_already_there_is_never_replaced(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    write_records(run_dir)
    assert write_dead_run_summary(run_dir, killed=[11])
    assert read_summary(run_dir).outcome == DIED_OUTCOME
    (run_dir / "summary.json").write_text(json.dumps({"run_id": "r1", "outcome": "stopped"}))
    assert not write_dead_run_summary(run_dir, killed=[11])
    assert read_summary(run_dir).outcome == "stopped"


def test_no_records_at_all_still_give_a_summary(tmp_path: Path) -> None:
    """A supervisor killed before its first manifest: the summary says so, with what was killed."""
    summary = summary_of_dead_run(tmp_path, run_id="early", killed=[5])
    assert (summary.run_id, summary.outcome, summary.replicas, summary.killed) == ("early", DIED_OUTCOME, {}, [5])
