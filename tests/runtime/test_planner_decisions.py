"""An outside planner's decisions handed to the run through its control socket (``planner_decision``, what
the Dynamo preset's follower sends): recorded as ``PlannerDecided``/``PlannerDone`` events, in ``supervisor
status`` (text and ``--json``), a log line and the summary's operations, with the shortfall per service; one
at a time, and carried out to its end even when its caller goes away, so the same decision handed in again
(a restarted follower) changes nothing. Real stand-in workers; new replicas are held before ready by a
probe the test opens, so "mid-scale" is a state, not a moment."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest

import supervisor as sv
from supervisor._control.protocol import PROTOCOL_VERSION, encode, short_address
from supervisor._events import ControlRequest, ScaleEnded, ScaleStarted

from ..control.test_control import ask
from ..helpers import PYTHON, ROOT, supervisor_cli
from .test_autoscale import wait_for

pytestmark = pytest.mark.anyio


def held_worker(name: str, gate: anyio.Event, *, gpus: int | None = None) -> sv.Service:
    """A stand-in worker whose replicas past the first are ready only once ``gate`` is set."""

    async def opened(target: sv.ProbeTarget) -> bool:
        return target.index == 0 or gate.is_set()

    return sv.Service(
        name=name,
        command=[PYTHON, "-m", "standins", "worker", "--port", "{port}", "--load-seconds", "0"],
        ports=["port"],
        ready=sv.Probe(
            sv.AllOf([sv.HttpCheck("http://127.0.0.1:{port}/health"), sv.CallableCheck(opened)]), period_seconds=0.05
        ),
        env={"PYTHONPATH": str(ROOT)},
        gpus=gpus,
    )


async def test_a_decision_is_recorded_with_its_shortfall_in_events_status_log_and_summary(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Decision 7 asks w=5 (capped to 2 by the follower's bounds) and v=2 (one GPU only: refused): w gets 2,
    v keeps 1; the reply, the events, ``supervisor status``, a warning and the summary all say so."""
    gate = anyio.Event()
    gate.set()
    topology = sv.Topology(name="plan", services=[held_worker("w", gate), held_worker("v", gate, gpus=1)])
    with caplog.at_level(logging.WARNING, logger="supervisor.planner"):
        async with sv.launch(topology, runs_dir=runs_dir, gpus=sv.FakeInventory(1)) as group:
            reply = await ask(
                group, "planner_decision", decision=7, replicas={"w": 2, "v": 2}, asked={"w": 5, "v": 2},
                bounds={"w": "1-2", "v": "1-4"}, source="test",
            )  # fmt: skip
            assert reply["ok"] is True, reply
            result = reply["result"]
            assert result["replicas"] == {"w": 2, "v": 1}
            assert result["shortfall"]["w"] == "asked 5, capped to 2 (bounds 1-2)"
            assert result["shortfall"]["v"].startswith("not scaled: ") and "does not fit" in result["shortfall"]["v"]
            decided = [e for e in group.event_history if isinstance(e, sv.PlannerDecided)]
            done = [e for e in group.event_history if isinstance(e, sv.PlannerDone)]
            assert [(e.decision, e.source, e.service, e.again) for e in decided] == [("7", "test", "w,v", False)]
            assert (decided[0].replicas_before, decided[0].replicas_after) == ({"w": 1, "v": 1}, {"w": 2, "v": 2})
            assert [(e.decision, e.replicas, e.shortfall) for e in done] == [
                ("7", result["replicas"], result["shortfall"])
            ]
            text = await anyio.to_thread.run_sync(supervisor_cli, "status", str(group.run_dir))
            assert text.returncode == 0, text.stderr
            assert "planner decision 7 (test): w 1 -> 2, v 1 -> 2: done in " in text.stdout
            assert "  shortfall: w asked 5, capped to 2 (bounds 1-2)" in text.stdout
            raw = await anyio.to_thread.run_sync(supervisor_cli, "status", "--json", str(group.run_dir))
            planner = json.loads(raw.stdout)["planner"]
            assert (planner["decision"], planner["under_way"], planner["replicas"]) == ("7", False, {"w": 2, "v": 1})
            assert planner["shortfall"] == result["shortfall"]
            summary = group.summary()
    said = [r.getMessage() for r in caplog.records if r.name == "supervisor.planner"]
    assert len(said) == 1 and "planner decision 7 (test) fell short: w: asked 5, capped to 2" in said[0]
    records = [(o.service, o.decision, o.replicas_before, o.replicas_after) for o in summary.operations
               if o.kind == "planner"]  # fmt: skip
    assert records == [("w", "7", 1, 2), ("v", "7", 1, 1)]
    planner_ops = [o for o in summary.operations if o.kind == "planner"]
    assert planner_ops[0].error == "asked 5, capped to 2 (bounds 1-2)" and "does not fit" in (
        planner_ops[1].error or ""
    )
    assert all(o.reason == "decision 7 of test" and o.seconds is not None for o in planner_ops)


def hand_in_and_leave(path: Path, fields: dict[str, Any]) -> socket.socket:
    """Send a ``planner_decision`` and return the open connection, its reply unread (the caller closes it:
    a follower killed mid-decision)."""
    with short_address(path) as address:
        client = socket.socket(socket.AF_UNIX)
        client.connect(address)
    client.sendall(encode({"v": PROTOCOL_VERSION, "id": 1, "op": "planner_decision", **fields}))
    return client


async def test_a_decision_whose_caller_left_mid_scale_is_finished_and_handed_in_again_changes_nothing(
    runs_dir: Path,
) -> None:
    """The caller of decision 3 (w 1 -> 2) leaves while the new replica is held before ready, and hands the
    decision in again (as a restarted follower does): the second waits for the first, which finishes on its
    own; the second finds w at 2 and scales nothing (one scale in all) and answers with no shortfall."""
    gate = anyio.Event()
    topology = sv.Topology(name="again", services=[held_worker("w", gate)])
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        assert group.control_socket is not None
        fields = {"decision": 3, "replicas": {"w": 2}, "source": "test"}
        first = await anyio.to_thread.run_sync(hand_in_and_leave, group.control_socket, fields)
        await wait_for(group, lambda e: isinstance(e, ScaleStarted))
        first.close()  # gone mid-scale, its reply never read
        async with anyio.create_task_group() as tg:
            replies: list[dict[str, Any]] = []

            async def hand_in_again() -> None:
                replies.append(await ask(group, "planner_decision", **fields))

            tg.start_soon(hand_in_again)
            with anyio.fail_after(30):  # the second hand-in has arrived while the first is under way
                while (
                    sum(isinstance(e, ControlRequest) and e.op == "planner_decision" for e in group.event_history) < 2
                ):
                    await anyio.sleep(0.01)
            assert not any(isinstance(e, sv.PlannerDone) for e in group.event_history)
            gate.set()
        assert replies[0]["ok"] is True and replies[0]["result"]["shortfall"] == {}, replies
        assert replies[0]["result"]["replicas"] == {"w": 2}
        kinds = [(type(e).__name__, getattr(e, "again", None)) for e in group.event_history
                 if isinstance(e, (sv.PlannerDecided, sv.PlannerDone, ScaleStarted, ScaleEnded))]  # fmt: skip
        assert kinds == [("PlannerDecided", False), ("ScaleStarted", None), ("ScaleEnded", None),
                         ("PlannerDone", None), ("PlannerDecided", True), ("PlannerDone", None)]  # fmt: skip
        again = [e for e in group.event_history if isinstance(e, sv.PlannerDecided)][1]
        assert again.replicas_before == again.replicas_after == {"w": 2}
        assert group.service("w").ready_count == 2
        assert group.planner_status()["under_way"] is False


async def test_a_decision_naming_an_unknown_service_or_a_bad_count_does_nothing(runs_dir: Path) -> None:
    """Checked before anything is done: the reply names the problem, no event but the request's."""
    gate = anyio.Event()
    async with sv.launch(sv.Topology(name="bad", services=[held_worker("w", gate)]), runs_dir=runs_dir) as group:
        unknown = await ask(group, "planner_decision", decision="x", replicas={"w": 2, "nope": 1})
        assert unknown["ok"] is False and "nope" in unknown["error"]
        negative = await ask(group, "planner_decision", decision="x", replicas={"w": -1})
        assert negative["ok"] is False and "at least 0" in negative["error"]
        fraction = await ask(group, "planner_decision", decision="x", replicas={"w": 1.5})
        assert fraction["ok"] is False and "whole number" in fraction["error"]
        assert not any(isinstance(e, (sv.PlannerDecided, ScaleStarted)) for e in group.event_history)
        assert group.planner_status() == {}


async def test_a_newer_decision_handed_in_mid_scale_is_taken_once_that_scale_ends(runs_dir: Path) -> None:
    """Decision 4 (w 1 -> 2) is under way, its new replica held, when decision 5 (w -> 3) comes: 5 waits,
    and begins only once 4 is done; each is one scale."""
    gate = anyio.Event()
    async with sv.launch(sv.Topology(name="newer", services=[held_worker("w", gate)]), runs_dir=runs_dir) as group:
        async with anyio.create_task_group() as tg:
            replies: dict[int, dict[str, Any]] = {}

            async def hand_in(decision: int, count: int) -> None:
                replies[decision] = await ask(group, "planner_decision", decision=decision, replicas={"w": count})

            tg.start_soon(hand_in, 4, 2)
            await wait_for(group, lambda e: isinstance(e, ScaleStarted))
            tg.start_soon(hand_in, 5, 3)
            with anyio.fail_after(30):
                while (
                    sum(isinstance(e, ControlRequest) and e.op == "planner_decision" for e in group.event_history) < 2
                ):
                    await anyio.sleep(0.01)
            assert group.planner_status()["decision"] == "4"  # 5 has not begun
            gate.set()
        assert [replies[4]["result"]["replicas"], replies[5]["result"]["replicas"]] == [{"w": 2}, {"w": 3}]
        order = [(type(e).__name__, getattr(e, "decision", None)) for e in group.event_history
                 if isinstance(e, (sv.PlannerDecided, sv.PlannerDone, ScaleStarted))]  # fmt: skip
        assert order == [("PlannerDecided", "4"), ("ScaleStarted", None), ("PlannerDone", "4"),
                         ("PlannerDecided", "5"), ("ScaleStarted", None), ("PlannerDone", "5")]  # fmt: skip
