"""Startup phases at runtime: events in order with their durations, forward only, closed at ready or at the
end, named in readiness failures, and no reading of output once the replica is ready.

The child (``programs/phased.py``) prints each phase line only once the test has created a file, so a
phase lasts at least the gap the test waits before creating the next one (a deliberate, measured gap,
not a wait for things to settle).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._cli.console import PlainReporter
from supervisor._host.logs import LineStream
from supervisor._host.phases import PhaseWatch, compile_phases

from ..helpers import PROGRAMS, PYTHON

pytestmark = pytest.mark.anyio

GAP_SECONDS = 0.3
VLLM_LIKE = {"weights": "Loading weights", "graphs": "Capturing CUDA graph", "api": "Application startup complete"}


def phased(name: str, steps: list[str], *, phases: dict[str, str], timeout: float = 30.0) -> sv.Service:
    return sv.Service(
        name=name,
        command=[PYTHON, str(PROGRAMS / "phased.py"), *steps],
        ready=sv.Probe(sv.LogCheck("^READY$"), timeout_seconds=timeout),
        phases=phases,
    )


def phase_events(events: list[sv.Event]) -> list[tuple[str, str, bool | None]]:
    """(started|ended, phase, finished) in the order they happened."""
    out: list[tuple[str, str, bool | None]] = []
    for event in events:
        if isinstance(event, sv.PhaseStarted):
            out.append(("started", event.phase, None))
        elif isinstance(event, sv.PhaseEnded):
            out.append(("ended", event.phase, event.finished))
    return out


async def test_phases_begin_in_order_and_last_until_the_next_one_or_ready(runs_dir: Path, tmp_path: Path) -> None:
    """Each phase's duration covers the test's gap; the last ends at ready; events.jsonl has them all."""
    go = [tmp_path / f"go{i}" for i in range(3)]
    steps = [
        "say:INFO Loading weights took a while",
        f"await:{go[0]}",
        "say:INFO Capturing CUDA graph shapes",
        f"await:{go[1]}",
        "say:INFO:     Application startup complete.",
        f"await:{go[2]}",
        "say:READY",
        "hold",
    ]
    events: list[sv.Event] = []
    started: dict[str, anyio.Event] = {name: anyio.Event() for name in VLLM_LIKE}

    def on_event(event: sv.Event) -> None:
        events.append(event)
        if isinstance(event, sv.PhaseStarted):
            started[event.phase].set()

    async def drive() -> None:
        for name, file in zip(VLLM_LIKE, go, strict=True):
            await started[name].wait()
            await anyio.sleep(GAP_SECONDS)  # the phase's known minimum length
            file.touch()

    topo = sv.Topology(name="phases", services=[phased("decode", steps, phases=VLLM_LIKE)])
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            async with sv.launch(topo, runs_dir=runs_dir, on_event=on_event) as group:
                replica = group["decode"].replicas[0]
                seconds = replica.phases
                assert replica.phase is None
                run_dir = group.run_dir
    assert phase_events(events) == [
        ("started", "weights", None),
        ("ended", "weights", True),
        ("started", "graphs", None),
        ("ended", "graphs", True),
        ("started", "api", None),
        ("ended", "api", True),
    ]
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Spawned") < kinds.index("PhaseStarted") and kinds.index("PhaseEnded") < kinds.index("Ready")
    assert kinds[kinds.index("Ready") - 1] == "PhaseEnded"  # the last phase ends as the replica is ready
    ended = {e.phase: e.seconds for e in events if isinstance(e, sv.PhaseEnded)}
    assert list(seconds) == ["weights", "graphs", "api"] and seconds == ended
    for name, value in seconds.items():
        assert GAP_SECONDS <= value < GAP_SECONDS + 10, (name, value)
    begun = [e.seconds for e in events if isinstance(e, sv.PhaseStarted)]
    assert begun == sorted(begun) and begun[1] - begun[0] >= GAP_SECONDS
    ready = next(e for e in events if isinstance(e, sv.Ready))
    assert ready.seconds >= begun[0] + sum(seconds.values()) - 1e-6
    recorded = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    on_disk = [(r["event"], r["phase"], r.get("finished")) for r in recorded if r["event"].startswith("phase_")]
    assert on_disk == [("phase_" + kind, phase, finished) for kind, phase, finished in phase_events(events)]
    assert all(r["replica"] == "decode" and r["seconds"] >= 0 for r in recorded if r["event"].startswith("phase_"))


async def test_a_phase_may_be_skipped_and_earlier_or_repeated_lines_are_ignored(runs_dir: Path) -> None:
    steps = [
        "say:begin a",
        "say:begin c",  # b is skipped
        "say:begin a",  # an earlier phase again: ignored
        "say:begin c",  # the same phase again: ignored
        "say:begin d",
        "say:READY",
        "hold",
    ]
    phases = {"a": "begin a", "b": "begin b", "c": "begin c", "d": "begin d"}
    topo = sv.Topology(name="skips", services=[phased("svc", steps, phases=phases)])
    with anyio.fail_after(30):
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            events = group.event_history
            seconds = group["svc"].replicas[0].phases
    assert phase_events(events) == [
        ("started", "a", None),
        ("ended", "a", True),
        ("started", "c", None),
        ("ended", "c", True),
        ("started", "d", None),
        ("ended", "d", True),
    ]
    assert list(seconds) == ["a", "c", "d"]


async def test_a_readiness_timeout_names_the_phase_it_was_stuck_in(runs_dir: Path) -> None:
    steps = ["say:Loading weights", "say:Capturing CUDA graph", "hold"]
    topo = sv.Topology(name="stuck", services=[phased("decode", steps, phases=VLLM_LIKE, timeout=1.0)])
    events: list[sv.Event] = []
    with anyio.fail_after(30), pytest.raises(sv.ReadinessTimeout) as info:
        async with sv.launch(topo, runs_dir=runs_dir, on_event=events.append):
            pytest.fail("launch must not succeed")
    message = str(info.value)
    found = re.search(r"not ready after 1s, stuck in phase 'graphs' for (\d+\.\d)s: probe log /\^READY\$/", message)
    assert found is not None, message
    assert 0 <= float(found.group(1)) <= 1.5
    assert phase_events(events) == [
        ("started", "weights", None),
        ("ended", "weights", True),
        ("started", "graphs", None),
        ("ended", "graphs", False),  # it never finished: the replica timed out in it
    ]


async def test_a_timeout_before_the_first_phase_says_so(runs_dir: Path) -> None:
    topo = sv.Topology(name="early", services=[phased("decode", ["say:hello", "hold"], phases=VLLM_LIKE, timeout=0.5)])
    with anyio.fail_after(30), pytest.raises(sv.ReadinessTimeout) as info:
        async with sv.launch(topo, runs_dir=runs_dir):
            pytest.fail("launch must not succeed")
    assert "not ready after 0.5s, stuck before its first phase ('weights'): probe" in str(info.value)


async def test_an_exit_during_a_phase_ends_it_unfinished_and_the_error_names_it(runs_dir: Path) -> None:
    steps = ["say:Loading weights", "say:CUDA error: out of memory", "exit:3"]
    topo = sv.Topology(name="dies", services=[phased("decode", steps, phases=VLLM_LIKE)])
    events: list[sv.Event] = []
    with anyio.fail_after(30), pytest.raises(sv.ServiceFailed) as info:
        async with sv.launch(topo, runs_dir=runs_dir, on_event=events.append):
            pytest.fail("launch must not succeed")
    assert info.value.exit_code == 3
    assert re.search(
        r"exited with code 3 before it was ready, in phase 'weights' for \d+\.\ds \(probe", str(info.value)
    )
    assert phase_events(events) == [("started", "weights", None), ("ended", "weights", False)]
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Exited") < kinds.index("PhaseEnded") < kinds.index("Failed")


async def test_lines_after_ready_are_not_read_for_phases(runs_dir: Path, tmp_path: Path) -> None:
    """A phase line printed once the replica is ready starts nothing, and the watch is gone."""
    go = tmp_path / "go"
    steps = ["say:Loading weights", "say:READY", f"await:{go}", "say:Capturing CUDA graph", "say:LATE", "hold"]
    topo = sv.Topology(name="late", services=[phased("decode", steps, phases=VLLM_LIKE)])
    late = anyio.Event()

    def on_output(replica: str, block: bytes) -> None:
        if b"LATE" in block:
            late.set()  # the same block reaches every subscriber before this wakes the test

    with anyio.fail_after(30):
        async with sv.launch(topo, runs_dir=runs_dir, on_output=on_output) as group:
            replica = group["decode"].replicas[0]
            go.touch()
            await late.wait()
            assert phase_events(group.event_history) == [("started", "weights", None), ("ended", "weights", True)]
            assert list(replica.phases) == ["weights"] and replica.phase is None


async def test_a_service_without_phases_has_no_watch(runs_dir: Path) -> None:
    service = sv.Service(
        name="plain",
        command=[PYTHON, str(PROGRAMS / "phased.py"), "say:Loading weights", "say:READY", "hold"],
        ready=sv.LogCheck("^READY$"),
    )
    with anyio.fail_after(30):
        async with sv.launch(sv.Topology(name="plain", services=[service]), runs_dir=runs_dir) as group:
            replica = group["plain"].replicas[0]
            assert replica.incarnation is not None and replica.incarnation.phases is None
            assert replica.phases == {} and phase_events(group.event_history) == []


# ----- the watch alone: how lines of one block are read ---------------------------------------------------


def watch(phases: dict[str, str]) -> tuple[LineStream, PhaseWatch, list[sv.Event]]:
    stream = LineStream(None)
    events: list[sv.Event] = []
    compiled = compile_phases([sv.Phase(name, pattern) for name, pattern in phases.items()])
    return stream, PhaseWatch(compiled, stream, replica="r", service="r", spawned_at=0.0, emit=events.append), events


@pytest.mark.parametrize("chunks", [[b"x1\nnoise\nx3\nx2\nx3\n"], [b"x1\n", b"noise\nx3\n", b"x2\n", b"x3\n"]])
def test_one_block_or_many_give_the_same_phases(chunks: list[bytes]) -> None:
    stream, phase_watch, events = watch({"one": "^x1$", "two": "^x2$", "three": "^x3$"})
    for chunk in chunks:
        stream.feed(chunk)
    assert phase_events(events) == [("started", "one", None), ("ended", "one", True), ("started", "three", None)]
    assert phase_watch.current == "three" and not phase_watch.reading  # the last phase began: nothing to look for


def test_the_watch_reads_output_only_until_the_last_phase_began() -> None:
    stream, phase_watch, events = watch({"one": "^x1$", "two": "^x2$"})
    stream.feed(b"x1\n")
    assert phase_watch.reading
    stream.feed(b"x2\n")
    assert not phase_watch.reading and phase_watch.current == "two"
    phase_watch.close(phase_watch._began + 1.0, finished=True)
    assert phase_events(events)[-1] == ("ended", "two", True) and phase_watch.seconds["two"] == 1.0


def test_a_line_that_matches_two_phases_begins_the_later_one() -> None:
    stream, _, events = watch({"early": "ready", "late": "ready to roll"})
    stream.feed(b"ready to roll\n")
    assert phase_events(events) == [("started", "late", None)]


def test_closing_ends_the_phase_once_and_stops_reading() -> None:
    stream, phase_watch, events = watch({"a": "^a$", "b": "^b$"})
    stream.feed(b"a\n")
    assert phase_watch.describe(phase_watch._began + 2.04) == "in phase 'a' for 2.0s"
    phase_watch.close(phase_watch._began + 2.0, finished=False)
    phase_watch.close(phase_watch._began + 3.0, finished=True)
    stream.feed(b"b\n")
    assert phase_events(events) == [("started", "a", None), ("ended", "a", False)]
    assert phase_watch.seconds == {"a": 2.0} and phase_watch.current is None


def test_the_cli_prints_the_phases_with_ready(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = PlainReporter(quiet=False, logs=None, redact=str, services={})
    reporter.event(sv.Spawned(replica="decode.0", service="decode", pid=1))
    reporter.event(sv.PhaseEnded(replica="decode.0", service="decode", phase="weights", seconds=41.24, finished=True))
    reporter.event(sv.PhaseEnded(replica="decode.0", service="decode", phase="graphs", seconds=12.0, finished=True))
    reporter.event(sv.Ready(replica="decode.0", service="decode", pid=1, seconds=53.3))
    assert "decode.0: ready in 53.30s (weights 41.2s, graphs 12.0s)" in capsys.readouterr().err


def test_phases_without_a_readiness_probe_are_refused(tmp_path: Path) -> None:
    """Without ``ready:`` a replica is ready at spawn: its phases could never be seen, so say so up front."""
    service = sv.Service(name="a", command=[PYTHON, "-c", "pass"], phases={"weights": "Loading weights"})
    with pytest.raises(sv.ConfigError) as caught:
        sv.make_plan(sv.Topology(name="t", services=[service]), runs_dir=tmp_path / "runs")
    assert "service 'a', field 'phases': needs a readiness probe (ready:)" in str(caught.value)
