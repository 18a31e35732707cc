"""The run summary computed from constructed events, without processes: time to ready and per phase,
restarts, exits, teardown, and the critical chain (which dependency gated each start); its text and its
place in ``summary.json``'s schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supervisor._events import (
    Completed,
    Event,
    Exited,
    Failed,
    PhaseEnded,
    PlannerDecided,
    PlannerDone,
    Ready,
    ReplicaRemoved,
    RolloutEnded,
    RolloutStarted,
    ScaleEnded,
    ScaleStarted,
    Spawned,
    Stopped,
    Stopping,
)
from supervisor._records.schema import ChainLink, Summary, summary_from_json, to_json
from supervisor._records.summary import ServiceShape, summarize
from supervisor._records.summary_ops import operations_of
from supervisor._records.summary_text import render_chain, render_operations, render_summary

T0 = 1000.0  #: the run's start on the monotonic clock


def shapes(**services: tuple[Mapping[str, str], Sequence[str]]) -> dict[str, ServiceShape]:
    return {name: ServiceShape(depends_on=deps, replicas=list(reps)) for name, (deps, reps) in services.items()}


def spawned(replica: str, at: float, pid: int = 1) -> Spawned:
    return Spawned(replica=replica, service=replica.split(".")[0], pid=pid, monotonic=T0 + at)


def ready(replica: str, at: float, seconds: float) -> Ready:
    return Ready(replica=replica, service=replica.split(".")[0], pid=1, seconds=seconds, monotonic=T0 + at)


def chain_of(summary: Summary) -> list[tuple[str, str | None, str | None]]:
    return [(link.service, link.gated_by, link.condition) for link in summary.critical_chain]


def test_the_chain_follows_the_dependency_met_last_back_to_a_root() -> None:
    """d waits for b and c; b got ready later than c, so the chain is a -> b -> d, and c is not on it."""
    services = shapes(
        a=({}, ["a"]),
        b=({"a": "ready"}, ["b"]),
        c=({"a": "ready"}, ["c"]),
        d=({"b": "ready", "c": "ready"}, ["d"]),
    )
    events: list[Event] = [
        spawned("a", 0.0),
        ready("a", 1.0, 1.0),
        spawned("b", 1.0),
        spawned("c", 1.0),
        ready("c", 2.0, 1.0),
        ready("b", 3.0, 2.0),
        spawned("d", 3.0),
        ready("d", 4.5, 1.5),
    ]
    summary = summarize(services, events, started_at=T0)
    assert chain_of(summary) == [("a", None, None), ("b", "a", "ready"), ("d", "b", "ready")]
    assert summary.ready_seconds == 4.5
    assert [(link.started_at_seconds, link.ready_seconds) for link in summary.critical_chain] == [
        (0.0, 1.0),
        (1.0, 2.0),
        (3.0, 1.5),
    ]
    assert summary.services["d"].started_at_seconds == 3.0 and summary.services["c"].ready_at_seconds == 2.0


def test_a_started_condition_gates_at_the_spawn_not_the_ready() -> None:
    """c waits for a ready and b started; b spawned after a was ready, so b (started) gated c, although
    b itself got ready much later (and so ends the chain)."""
    services = shapes(a=({}, ["a"]), b=({}, ["b"]), c=({"a": "ready", "b": "started"}, ["c"]))
    events: list[Event] = [
        spawned("a", 0.0),
        ready("a", 1.0, 1.0),
        spawned("b", 2.0),  # b has no dependency; say its spawn came late
        spawned("c", 2.0),
        ready("c", 2.5, 0.5),
        ready("b", 9.0, 7.0),
    ]
    summary = summarize(services, events, started_at=T0)
    assert chain_of(summary) == [("b", None, None)]  # b became ready last, and waited for nothing
    events_without_b_late = [e for e in events if not (isinstance(e, Ready) and e.replica == "b")]
    events_without_b_late.append(ready("b", 2.1, 0.1))
    summary = summarize(services, events_without_b_late, started_at=T0)
    assert chain_of(summary) == [("b", None, None), ("c", "b", "started")]


def test_a_completed_condition_gates_at_the_jobs_completion() -> None:
    services = shapes(migrate=({}, ["migrate"]), web=({"migrate": "completed"}, ["web"]))
    events: list[Event] = [
        spawned("migrate", 0.0),
        Exited(replica="migrate", service="migrate", pid=1, exit_code=0, signal=None, expected=True, monotonic=T0 + 2),
        Completed(replica="migrate", service="migrate", monotonic=T0 + 2.0),
        spawned("web", 2.0),
        ready("web", 2.5, 0.5),
    ]
    summary = summarize(services, events, started_at=T0)
    assert chain_of(summary) == [("migrate", None, None), ("web", "migrate", "completed")]
    assert summary.critical_chain[0].ready_seconds == 2.0
    assert summary.replicas["migrate"].returncode == 0


def test_the_replica_that_got_ready_last_sets_its_services_ready_time() -> None:
    services = shapes(kv=({}, ["kv"]), decode=({"kv": "ready"}, ["decode.0", "decode.1"]))
    events: list[Event] = [
        spawned("kv", 0.0),
        ready("kv", 0.5, 0.5),
        spawned("decode.0", 0.5),
        spawned("decode.1", 0.6),
        ready("decode.1", 2.0, 1.4),
        ready("decode.0", 3.0, 2.5),
    ]
    summary = summarize(services, events, started_at=T0)
    link = summary.critical_chain[-1]
    assert (link.service, link.replica, link.started_at_seconds, link.ready_at_seconds) == (
        "decode",
        "decode.0",
        0.5,
        3.0,
    )
    assert summary.services["decode"].ready_at_seconds == 3.0 and summary.replicas["decode.1"].ready_seconds == 1.4


def test_a_replica_given_up_on_or_added_later_does_not_hold_its_services_start_back() -> None:
    """decode.1 failed for good (the service kept its quorum) and decode.2 was added after all were
    ready: decode's ready time, and the chain's, are decode.0's; the teardown still counts decode.2."""
    services = shapes(kv=({}, ["kv"]), decode=({"kv": "ready"}, ["decode.0", "decode.1", "decode.2"]))
    events: list[Event] = [
        spawned("kv", 0.0),
        ready("kv", 0.5, 0.5),
        spawned("decode.0", 0.5),
        spawned("decode.1", 0.5, pid=2),
        Failed(replica="decode.1", service="decode", reason="exited", monotonic=T0 + 1),
        ready("decode.0", 2.0, 1.5),
        spawned("decode.2", 5.0, pid=3),
        ready("decode.2", 6.0, 1.0),
        Stopping(replica="decode.2", service="decode", signal="SIGTERM", reason="teardown", monotonic=T0 + 8),
        Stopped(replica="decode.2", service="decode", seconds=1.0, killed=False, monotonic=T0 + 9),
    ]
    summary = summarize(services, events, started_at=T0, ready_at=T0 + 2.0, teardown_started_at=T0 + 8)
    assert summary.services["decode"].ready_at_seconds == 2.0 and summary.ready_seconds == 2.0
    assert summary.services["decode"].replicas == ["decode.0", "decode.1", "decode.2"]
    assert summary.services["decode"].stop_seconds == 1.0
    link = summary.critical_chain[-1]
    assert (link.service, link.replica, link.ready_seconds) == ("decode", "decode.0", 1.5)
    without_cutoff = summarize(services, events, started_at=T0)  # not told when all were ready
    assert without_cutoff.services["decode"].ready_at_seconds == 6.0


def test_a_restart_before_ready_counts_and_its_phases_start_over() -> None:
    """The first incarnation crashed in its weights phase; the phases are the second one's, the exit is
    kept (unexpected), and time to ready is the second incarnation's."""
    services = shapes(llm=({}, ["llm"]))
    events: list[Event] = [
        spawned("llm", 0.0, pid=10),
        PhaseEnded(replica="llm", service="llm", phase="weights", seconds=3.0, finished=False, monotonic=T0 + 3),
        Exited(replica="llm", service="llm", pid=10, exit_code=1, signal=None, expected=False, monotonic=T0 + 3),
        spawned("llm", 4.0, pid=11),
        PhaseEnded(replica="llm", service="llm", phase="weights", seconds=2.0, finished=True, monotonic=T0 + 6),
        PhaseEnded(replica="llm", service="llm", phase="graphs", seconds=1.0, finished=True, monotonic=T0 + 7),
        ready("llm", 7.0, 3.0),
    ]
    replica = summarize(services, events, started_at=T0).replicas["llm"]
    assert replica.restarts == 1
    assert [(p.name, p.seconds, p.finished) for p in replica.phases] == [("weights", 2.0, True), ("graphs", 1.0, True)]
    assert [(e.exit_code, e.expected, e.at_seconds) for e in replica.exits] == [(1, False, 3.0)]
    assert (replica.spawned_at_seconds, replica.ready_at_seconds, replica.ready_seconds) == (0.0, 7.0, 3.0)


def test_teardown_times_count_only_stops_after_the_teardown_began() -> None:
    """A stop for a restart mid-run is not teardown; per service: first stop signal to its last process
    gone; in all: teardown start to the end."""
    services = shapes(kv=({}, ["kv"]), w=({"kv": "ready"}, ["w.0", "w.1"]))
    events: list[Event] = [
        spawned("kv", 0.0),
        ready("kv", 0.1, 0.1),
        spawned("w.0", 0.1),
        spawned("w.1", 0.1),
        ready("w.0", 0.2, 0.1),
        ready("w.1", 0.2, 0.1),
        Stopping(replica="w.0", service="w", signal="SIGTERM", reason="restart", monotonic=T0 + 5),
        Stopped(replica="w.0", service="w", seconds=0.5, killed=False, monotonic=T0 + 5.5),
        spawned("w.0", 5.6),
        Stopping(replica="w.1", service="w", signal="SIGTERM", reason="teardown", monotonic=T0 + 10),
        Stopping(replica="w.0", service="w", signal="SIGTERM", reason="teardown", monotonic=T0 + 10),
        Stopped(replica="w.1", service="w", seconds=0.25, killed=False, monotonic=T0 + 10.25),
        Stopped(replica="w.0", service="w", seconds=2.0, killed=True, monotonic=T0 + 12),
        Stopping(replica="kv", service="kv", signal="SIGTERM", reason="teardown", monotonic=T0 + 12),
        Stopped(replica="kv", service="kv", seconds=0.5, killed=False, monotonic=T0 + 12.5),
    ]
    summary = summarize(services, events, started_at=T0, teardown_started_at=T0 + 10, ended_at=T0 + 13)
    assert summary.teardown_seconds == 3.0
    assert summary.services["w"].stop_seconds == 2.0 and summary.services["kv"].stop_seconds == 0.5
    assert (summary.replicas["w.0"].stop_seconds, summary.replicas["w.0"].killed) == (2.0, True)
    assert summary.replicas["w.1"].stop_seconds == 0.25 and summary.replicas["w.0"].restarts == 1
    running = summarize(services, events[:9], started_at=T0)  # while it runs: no teardown yet
    assert running.teardown_seconds is None and running.replicas["w.0"].stop_seconds is None


def test_nothing_ready_means_no_all_ready_time_and_no_chain() -> None:
    services = shapes(a=({}, ["a"]), b=({"a": "ready"}, ["b"]))
    summary = summarize(services, [spawned("a", 0.0)], started_at=T0)
    assert summary.ready_seconds is None and summary.critical_chain == []
    partial = summarize(services, [spawned("a", 0.0), ready("a", 1.0, 1.0)], started_at=T0)
    assert partial.ready_seconds is None and chain_of(partial) == [("a", None, None)]


def test_ties_are_broken_by_start_order_and_dependency_order() -> None:
    """Same clock readings: the last link is the later service in start order; its gate the dependency
    listed first."""
    services = shapes(a=({}, ["a"]), b=({}, ["b"]), c=({"b": "ready", "a": "ready"}, ["c"]), d=({}, ["d"]))
    events: list[Event] = [spawned(n, 0.0) for n in "abd"] + [ready(n, 1.0, 1.0) for n in "abd"]
    events += [spawned("c", 1.0), ready("c", 1.0, 0.0)]
    assert chain_of(summarize(services, events, started_at=T0)) == [("d", None, None)]
    del services["d"]
    events = [e for e in events if e.replica != "d"]
    assert chain_of(summarize(services, events, started_at=T0)) == [("b", None, None), ("c", "b", "ready")]


def test_the_text_is_a_short_table_then_the_chain() -> None:
    services = shapes(kv=({}, ["kv"]), llm=({"kv": "ready"}, ["llm"]))
    events: list[Event] = [
        spawned("kv", 0.0),
        ready("kv", 0.25, 0.25),
        spawned("llm", 0.25),
        PhaseEnded(replica="llm", service="llm", phase="weights", seconds=1.5, finished=True, monotonic=T0 + 1.75),
        ready("llm", 2.0, 1.75),
        Stopping(replica="llm", service="llm", signal="SIGTERM", reason="teardown", monotonic=T0 + 3),
        Stopped(replica="llm", service="llm", seconds=0.5, killed=False, monotonic=T0 + 3.5),
        Exited(
            replica="llm", service="llm", pid=1, exit_code=None, signal="SIGTERM", expected=True, monotonic=T0 + 3.5
        ),
    ]
    summary = summarize(services, events, started_at=T0, teardown_started_at=T0 + 3, ended_at=T0 + 4)
    summary.outcome = "stopped"
    summary.replicas["kv"].state = summary.replicas["llm"].state = "stopped"
    assert render_summary(summary) == [
        "summary (run stopped): all ready in 2.00s, teardown 1.00s",
        "  replica  state    ready  restarts  exit     teardown  phases",
        "  kv       stopped  0.25s  0         -        -",
        "  llm      stopped  1.75s  0         SIGTERM  0.50s     weights 1.50s",
        "critical chain:",
        "  kv   @0.00s  +0.25s",
        "  llm  @0.25s  +1.75s  after kv ready",
    ]
    assert render_summary(summary, quiet=True) == []  # nothing went wrong: quiet says nothing


def test_quiet_text_lists_only_the_replicas_with_problems() -> None:
    services = shapes(a=({}, ["a"]), b=({}, ["b"]))
    events: list[Event] = [
        spawned("a", 0.0),
        ready("a", 0.5, 0.5),
        spawned("b", 0.0, pid=2),
        Exited(replica="b", service="b", pid=2, exit_code=3, signal=None, expected=False, monotonic=T0 + 1),
        spawned("b", 1.5, pid=3),
        ready("b", 2.0, 0.5),
    ]
    summary = summarize(services, events, started_at=T0)
    summary.outcome = "stopped"
    lines = render_summary(summary, quiet=True)
    assert lines[0] == "summary (run stopped): all ready in 2.00s, 1 of 2 replicas had problems"
    assert [line.split()[0] for line in lines[1:]] == ["replica", "b"]
    assert "3!" in lines[2] and "critical chain:" not in lines


def test_a_crash_loop_keeps_the_exit_column_narrow() -> None:
    """412 crashes with exit 1 are one entry with a count; many different exits show the first few, how
    many more, and the last: the column is bounded however long the loop ran."""
    services = shapes(loop=({}, ["loop"]), mixed=({}, ["mixed"]))
    events: list[Event] = []
    for i in range(412):
        events += [spawned("loop", i, pid=10 + i)]
        events += [Exited(replica="loop", service="loop", pid=10 + i, exit_code=1, signal=None, expected=False)]
    for i, code in enumerate([*range(2, 3000), 0]):
        events += [spawned("mixed", i, pid=5000 + i)]
        events += [Exited(replica="mixed", service="mixed", pid=5000 + i, exit_code=code, signal=None, expected=False)]
    lines = render_summary(summarize(services, events, started_at=T0))
    loop, mixed = (line.split() for line in lines[2:4])
    assert loop[0] == "loop" and "1! x412" in lines[2]
    assert mixed[0] == "mixed" and "2!,3!,4!,...2995 more,0!" in lines[3]
    assert max(len(line) for line in lines) < 120, lines


def test_the_chain_text_says_when_not_everything_got_ready() -> None:
    assert render_chain([]) == []
    assert render_chain([ChainLink(service="a")]) == ["critical chain:", "  a  @-  +-"]
    services = shapes(a=({}, ["a"]), b=({"a": "ready"}, ["b"]))
    summary = summarize(services, [spawned("a", 0.0), ready("a", 1.0, 1.0), spawned("b", 1.0)], started_at=T0)
    assert render_summary(summary)[-2:] == [
        "critical chain (not all ready; up to the last ready service):",
        "  a  @0.00s  +1.00s",
    ]


def test_summary_json_round_trips_the_new_fields_and_forgives_damage() -> None:
    """What the writer writes is what ``read_summary`` reads; a damaged field reads as its default."""
    services = shapes(a=({}, ["a"]), b=({"a": "ready"}, ["b"]))
    events: list[Event] = [spawned("a", 0.0), ready("a", 1.0, 1.0), spawned("b", 1.0), ready("b", 2.0, 1.0)]
    summary = summarize(services, events, started_at=T0)
    data = to_json(summary)
    assert summary_from_json(data) == summary
    assert data["critical_chain"][1] == {
        "service": "b",
        "replica": "b",
        "started_at_seconds": 1.0,
        "ready_at_seconds": 2.0,
        "ready_seconds": 1.0,
        "gated_by": "a",
        "condition": "ready",
    }
    data["critical_chain"][1]["ready_seconds"] = "soon"
    data["replicas"]["a"]["phases"] = "garbled"
    damaged = summary_from_json(data)
    assert damaged.critical_chain[1].ready_seconds is None and damaged.critical_chain[1].service == "b"
    assert damaged.replicas["a"].phases == []
    assert summary_from_json({"run_id": "x"}).critical_chain == []  # an older summary.json still reads


def test_removed_replicas_and_the_operations_stay_in_the_summary() -> None:
    """w had 2, was scaled to 3, down to 1, up to 2, then a rollout stopped at w.0: every replica that ever
    ran is listed (w.1's first life as ``w.1~1``, marked removed with when; the new w.1 under its name),
    the service names its removed ones, each operation is a record with what it did, and the text shows
    both; a removed replica of the start still counts for the service's ready time."""
    services = shapes(w=({}, ["w.0", "w.1"]))
    removed = [ReplicaRemoved(replica=n, service="w", monotonic=T0 + at) for n, at in (("w.2", 5.0), ("w.1", 5.5))]
    events: list[Event] = [
        spawned("w.0", 0.0),
        spawned("w.1", 0.0),
        ready("w.0", 1.0, 1.0),
        ready("w.1", 2.0, 2.0),
        ScaleStarted(replica="", service="w", replicas_before=2, replicas_after=3, monotonic=T0 + 3),
        spawned("w.2", 3.0),
        ready("w.2", 3.5, 0.5),
        ScaleEnded(replica="", service="w", replicas=3, added=("w.2",), seconds=0.5, monotonic=T0 + 3.5),
        ScaleStarted(replica="", service="w", replicas_before=3, replicas_after=1, monotonic=T0 + 4),
        *removed,
        ScaleEnded(replica="", service="w", replicas=1, removed=("w.2", "w.1"), seconds=1.5, monotonic=T0 + 5.5),
        ScaleStarted(replica="", service="w", replicas_before=1, replicas_after=2, monotonic=T0 + 6),
        spawned("w.1", 6.0),
        ready("w.1", 6.25, 0.25),
        ScaleEnded(replica="", service="w", replicas=2, added=("w.1",), seconds=0.25, monotonic=T0 + 6.25),
        RolloutStarted(
            replica="", service="w", replicas=2, max_unavailable=1, min_ready=1, respecified=True, monotonic=T0 + 7
        ),
        RolloutEnded(
            replica="",
            service="w",
            seconds=1.0,
            error="stopped at w.0: exited with code 3",
            rolled_back=("w.0",),
            monotonic=T0 + 8,
        ),
    ]
    summary = summarize(services, events, started_at=T0, ready_at=T0 + 2.0)
    assert list(summary.replicas) == ["w.0", "w.1", "w.2", "w.1~1"]
    assert summary.services["w"].replicas == ["w.0", "w.1"] and summary.services["w"].removed == ["w.2", "w.1~1"]
    first_life, second_life = summary.replicas["w.1~1"], summary.replicas["w.1"]
    assert (first_life.state, first_life.removed_at_seconds, first_life.ready_seconds) == ("removed", 5.5, 2.0)
    assert (second_life.removed_at_seconds, second_life.spawned_at_seconds, second_life.restarts) == (None, 6.0, 0)
    assert (summary.replicas["w.2"].state, summary.replicas["w.2"].removed_at_seconds) == ("removed", 5.0)
    assert summary.services["w"].ready_at_seconds == 2.0  # set by w.1's first life, removed since
    assert summary.critical_chain[0].replica == "w.1~1"
    summary.operations = operations_of(events, started_at=T0, redact=lambda text: text.replace("code 3", "***"))
    assert [(o.kind, o.at_seconds, o.seconds, o.replicas_before, o.replicas_after) for o in summary.operations] == [
        ("scale", 3.0, 0.5, 2, 3),
        ("scale", 4.0, 1.5, 3, 1),
        ("scale", 6.0, 0.25, 1, 2),
        ("rolling_restart", 7.0, 1.0, None, 2),
    ]
    assert summary.operations[1].removed == ["w.2", "w.1"] and summary.operations[3].rolled_back == ["w.0"]
    assert summary.operations[3].error == "stopped at w.0: exited with ***"
    assert summary_from_json(to_json(summary)) == summary
    summary.outcome = "stopped"
    summary.replicas["w.0"].state = summary.replicas["w.1"].state = "stopped"
    lines = render_summary(summary)
    assert lines[4:6] == [
        "  w.2      removed @5.00s  0.50s  0         -     -",
        "  w.1~1    removed @5.50s  2.00s  0         -     -",
    ]
    assert lines[6:11] == [
        "operations:",
        "  @3.00s  scale w 2 -> 3: added w.2; 0.50s",
        "  @4.00s  scale w 3 -> 1: removed w.2, w.1; 1.50s",
        "  @6.00s  scale w 1 -> 2: added w.1; 0.25s",
        "  @7.00s  rolling restart w: rolled back w.0; 1.00s; failed: stopped at w.0: exited with ***",
    ]
    quiet = render_summary(summary, quiet=True)  # no replica had a problem; the failed rollout is one
    assert quiet == [
        "summary (run stopped): all ready in 2.00s, 0 of 4 replicas had problems",
        "operations:",
        "  @7.00s  rolling restart w: rolled back w.0; 1.00s; failed: stopped at w.0: exited with ***",
    ]


def test_a_rollout_refused_before_it_began_is_an_operation_too() -> None:
    ended = RolloutEnded(replica="", service="w", seconds=0.0, error="min_ready 2 of 2", monotonic=T0 + 4)
    (operation,) = operations_of([ended], started_at=T0)
    assert (operation.kind, operation.at_seconds, operation.error, operation.rolled) == (
        "rolling_restart", 4.0, "min_ready 2 of 2", [],
    )  # fmt: skip
    started = ScaleStarted(replica="", service="w", replicas_before=1, replicas_after=3, monotonic=T0 + 5)
    (under_way,) = operations_of([started], started_at=T0)
    assert under_way.seconds is None and render_operations([under_way]) == [
        "operations:",
        "  @5.00s  scale w 1 -> 3: under way",
    ]


def test_a_planner_decision_is_one_operation_per_service_with_its_shortfall() -> None:
    decided = PlannerDecided(
        replica="", service="prefill,decode", decision="3", source="dynamo-planner", monotonic=T0 + 2,
        replicas_before={"prefill": 1, "decode": 1}, replicas_after={"prefill": 1, "decode": 2},
        asked={"prefill": 1, "decode": 5},
    )  # fmt: skip
    done = PlannerDone(
        replica="", service="prefill,decode", decision="3", seconds=1.5, monotonic=T0 + 3.5,
        replicas={"prefill": 1, "decode": 2}, shortfall={"decode": "asked 5, capped to 2 (bounds 1-2)"},
    )  # fmt: skip
    operations = operations_of([decided, done], started_at=T0)
    assert [(o.kind, o.service, o.decision, o.seconds, o.error) for o in operations] == [
        ("planner", "prefill", "3", 1.5, None),
        ("planner", "decode", "3", 1.5, "asked 5, capped to 2 (bounds 1-2)"),
    ]
    assert render_operations(operations, quiet=True) == [
        "operations:",
        "  @2.00s  planner decode 1 -> 2: decision 3 of dynamo-planner; 1.50s; short: asked 5, capped to 2 (bounds 1-2)",
    ]
