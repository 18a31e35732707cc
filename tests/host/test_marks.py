"""``group.mark(label)``: a bookmark in ``events.jsonl`` and in every replica's log, never taken for output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import supervisor as sv

from ..helpers import PYTHON

pytestmark = pytest.mark.anyio

# prints "up", then half a line, and ends that line only once the file named by argv[1] exists
HALF_LINE = (
    "import os, sys, time\n"
    "sys.stdout.write('up\\npart'); sys.stdout.flush()\n"
    "deadline = time.monotonic() + 30\n"
    "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline: time.sleep(0.01)\n"
    "print('ial', flush=True); time.sleep(60)\n"
)


async def poll(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` while the event loop runs; fail the test at the deadline."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_a_mark_goes_to_events_and_every_log_and_keeps_a_half_line_whole(tmp_path: Path, runs_dir: Path) -> None:
    """The mark is one typed event and one line in each replica's log, between the lines printed before
    and after it; a line the service had half printed stays whole; probes, the tail and ``on_output`` never
    see it (it cannot pass for the service's output)."""
    go = tmp_path / "go"
    seen: list[bytes] = []
    services = [
        sv.Service(name="web", command=[PYTHON, "-c", HALF_LINE, str(go)], replicas=2, ready=sv.LogCheck("^up$")),
        sv.Service(name="job", command=[PYTHON, "-c", "print('done')"]),  # completed before the mark
    ]
    topology = sv.Topology(name="marks", services=services)
    async with sv.launch(topology, runs_dir=runs_dir, on_output=lambda _, block: seen.append(block)) as group:
        for replica in group["web"].replicas:  # "part" has reached the supervisor, still without its newline
            await poll(lambda r=replica: r.stream is not None and r.stream.bytes_seen >= len("up\npart"))
        job = group["job"].replicas[0]  # ready at spawn: wait until its one line is in its log
        await poll(lambda: job.log_path.exists() and job.log_path.read_text() == "done\n")
        event = group.mark("warmup done")
        go.touch()
        for replica in group["web"].replicas:
            await poll(lambda r=replica: "partial" in r.log_path.read_text())
        assert isinstance(event, sv.Marked) and event.label == "warmup done"
        assert event in group.event_history
        for replica in group.replicas:
            assert not any("topovisor mark" in line for line in replica.log_tail(100)), replica.name
        logs = {r.name: r.log_path.read_text().splitlines() for r in group.replicas}
    assert not any(b"topovisor mark" in block for block in seen)
    for name in ("web.0", "web.1"):
        assert logs[name][0] == "up" and logs[name][2] == "partial", logs[name]
        assert logs[name][1].startswith("--- topovisor mark: warmup done 20") and logs[name][1].endswith("+00:00 ---")
    assert logs["job"] == ["done", logs["web.0"][1]]  # a replica with no process running gets the line too
    events = [json.loads(line) for line in (group.run_dir / "events.jsonl").read_text().splitlines()]
    marks = [e for e in events if e["event"] == "mark"]
    assert marks == [
        {
            "v": 1,  # the records version of each line
            "event": "mark",
            **{k: getattr(event, k) for k in ("replica", "service", "monotonic", "wall_time")},
            "label": "warmup done",
        }
    ]


@pytest.mark.parametrize(
    "label",
    [
        *("", "two\nlines", "cr\rhere", "nul\x00here", "\x1b[31mred\x1b[0m", "bell\x07", "del\x7f", "next\x85line"),
        *("line\u2028separator", "paragraph\u2029separator", "bidi\u202eoverride", "lone\ud800surrogate"),
    ],
)
async def test_a_label_that_is_not_one_line_is_refused_before_anything_is_written(runs_dir: Path, label: str) -> None:
    """A newline in a label would forge a line of the log, and a control character (NUL, a terminal
    escape), U+2028/U+2029 or a bidirectional override would garble every replica's log: ValueError, and
    no event."""
    service = sv.Service(name="web", command=[PYTHON, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    async with sv.launch(sv.Topology(name="labels", services=[service]), runs_dir=runs_dir) as group:
        before = len(group.event_history)
        with pytest.raises(ValueError, match="single line"):
            group.mark(label)
        assert len(group.event_history) == before
        assert "topovisor mark" not in group["web"].replicas[0].log_path.read_text()
