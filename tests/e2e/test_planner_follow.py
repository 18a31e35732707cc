"""The Dynamo preset's ``planner=follow`` against the real Dynamo 1.6.1 (etcd, NATS, mocker workers): a test
that plays the Planner (a ``VirtualConnectorCoordinator`` in the engine's Python) publishes decode=2, then
prefill=2 decode=1, then a decode count beyond ``decode_max``; each time ``wait_for_scaling_completion()``
returns once the run has that set ready (capped to the bound for the last), and chat completions through
the frontend keep succeeding during and after each change. With new decode workers held before ready (a
probe the test opens): a newer decision published mid-scale is taken once that scale ends, and a follower
killed with SIGKILL mid-scale is restarted and the decision completes with no second scale. Needs
``.ci/install-engines``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.abc
import attrs
import httpx
import pytest

import supervisor as sv
import topologies
from supervisor._events import ScaleEnded, ScaleStarted

pytestmark = [pytest.mark.anyio, pytest.mark.engines]

#: plays the Planner: each stdin line "P D" is published as a decision, and answered with
#: "ready <is_scaling_ready> <seconds>" once ``wait_for_scaling_completion()`` returned and the decision
#: is ready (within 60 s); "publish P D" only publishes it ("published ID P D": the coordinator's decision
#: then), "wait" only waits
PLANNER = """
import asyncio, sys, time
from dynamo._core import DistributedRuntime, VirtualConnectorCoordinator

async def main():
    runtime = DistributedRuntime(asyncio.get_running_loop(), "etcd", "tcp", event_plane="zmq")
    try:
        coordinator = VirtualConnectorCoordinator(runtime, sys.argv[1], 1, 60, 60)
        await coordinator.async_init()
        print("coordinator up", flush=True)
        for line in sys.stdin:
            words = line.split()
            began = time.monotonic()
            if words[0] != "wait":
                prefill, decode = map(int, words[-2:])
                await coordinator.update_scaling_decision(prefill, decode)
            if words[0] == "publish":
                state = coordinator.read_state()  # its decision now: a new one, or the one before (skipped)
                print(f"published {state.decision_id} {state.num_prefill_workers} {state.num_decode_workers}", flush=True)
                continue
            await coordinator.wait_for_scaling_completion()
            waited = time.monotonic() - began
            # measured: after the first decision, wait_for_scaling_completion() may return at once, before
            # the new decision is completed; is_scaling_ready() then turns true once it is
            while not await coordinator.is_scaling_ready() and time.monotonic() - began < 60:
                await asyncio.sleep(0.05)
            ready = await coordinator.is_scaling_ready()
            print(f"ready {ready} {time.monotonic() - began:.2f} (wait returned after {waited:.2f})", flush=True)
    finally:
        runtime.shutdown()

asyncio.run(main())
"""


async def chat(client: httpx.AsyncClient, url: str) -> None:
    body = {"model": "org/tiny", "messages": [{"role": "user", "content": "w1 w2 w3"}], "max_tokens": 4}
    response = await client.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].strip()


async def test_the_run_follows_a_planner_decision_by_decision(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path, tmp_path: Path
) -> None:
    namespace = f"tv{os.getpid()}"  # runs sharing an etcd would not read each other's decisions either
    topology = topologies.dynamo(
        engine="mocker", model=str(mocker_model), served_model_name="org/tiny", prefill=1, decode=1,
        env_path=str(dynamo_env), planner="follow", namespace=namespace, decode_max=2,
    )  # fmt: skip
    script = tmp_path / "planner.py"
    script.write_text(PLANNER)
    python = str(dynamo_env / "bin" / "python")
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        assert [s.name for s in group.services][-1] == "planner"
        etcd = f"http://127.0.0.1:{group['etcd'].port}"
        env = {**os.environ, "ETCD_ENDPOINTS": etcd, "DYN_NAMESPACE": namespace}
        failures: list[str] = []
        stop = anyio.Event()

        async def keep_chatting(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                try:
                    await chat(client, group["frontend"].url or "")
                except (AssertionError, httpx.HTTPError) as exc:
                    failures.append(str(exc))

        async with (
            httpx.AsyncClient(timeout=30, trust_env=False) as client,
            await anyio.open_process([python, str(script), namespace], env=env) as planner,
        ):
            assert planner.stdin is not None and planner.stdout is not None
            lines = planner.stdout

            async def answer() -> str:
                text = b""
                while not text.endswith(b"\n"):
                    text += await lines.receive(1)
                return text.decode().strip()

            with anyio.fail_after(60):
                assert await answer() == "coordinator up"
            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_chatting, client)
                for prefill, decode, expected in ((1, 2, (1, 2)), (2, 1, (2, 1)), (2, 5, (2, 2))):
                    await planner.stdin.send(f"{prefill} {decode}\n".encode())
                    with anyio.fail_after(60):
                        reply = await answer()
                    assert reply.startswith("ready True"), reply
                    status = group.service("prefill"), group.service("decode")
                    assert tuple(len(s.replicas) for s in status) == expected
                    assert tuple(s.ready_count for s in status) == expected
                    await chat(client, group["frontend"].url or "")
                stop.set()
            await planner.stdin.aclose()
        assert failures == []
        scales = [(e.service, e.replicas, e.error) for e in group.event_history if isinstance(e, ScaleEnded)]
        assert scales == [("decode", 2, None), ("prefill", 2, None), ("decode", 1, None), ("decode", 2, None)]
        log = group.replica("planner").log_path.read_text()
        assert "completed: decode asked 5, capped to 2 (bounds 1-2)" in log
        done = [e for e in group.event_history if isinstance(e, sv.PlannerDone)]
        assert [e.replicas for e in done] == [{"prefill": 1, "decode": 2}, {"prefill": 2, "decode": 1},
                                              {"prefill": 2, "decode": 2}]  # fmt: skip
        assert [e.shortfall for e in done] == [{}, {}, {"decode": "asked 5, capped to 2 (bounds 1-2)"}]
        assert group.planner_status()["shortfall"] == {"decode": "asked 5, capped to 2 (bounds 1-2)"}
        run_dir = group.run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    planned = [(o["service"], o["replicas_after"], o["error"]) for o in summary["operations"] if o["kind"] == "planner"]
    assert planned == [("prefill", 1, None), ("decode", 2, None), ("prefill", 2, None), ("decode", 1, None),
                       ("prefill", 2, None), ("decode", 2, "asked 5, capped to 2 (bounds 1-2)")]  # fmt: skip
    assert [o["kind"] for o in summary["operations"] if o["kind"] != "planner"] == ["scale"] * 4


def held_decode(topology: sv.Topology, gate: anyio.Event) -> sv.Topology:
    """The same topology, its decode workers past the first ready only once ``gate`` is set: a scale of decode
    stays under way until the test opens it."""

    async def opened(target: sv.ProbeTarget) -> bool:
        return target.index == 0 or gate.is_set()

    decode = next(s for s in topology.services if s.name == "decode")
    assert isinstance(decode.ready, sv.Probe)
    ready = attrs.evolve(decode.ready, check=sv.AllOf([decode.ready.check, sv.CallableCheck(opened)]))
    services = [attrs.evolve(s, ready=ready) if s.name == "decode" else s for s in topology.services]
    return attrs.evolve(topology, services=services)


class Planner:
    """The Planner played in the engine's Python (``PLANNER``), one command and its answer at a time."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process, self.stdin, self.stdout = process, process.stdin, process.stdout

    async def say(self, command: str) -> str:
        if command:
            await self.stdin.send(f"{command}\n".encode())
        text = b""
        with anyio.fail_after(60):
            while not text.endswith(b"\n"):
                text += await self.stdout.receive(1)
        return text.decode().strip()


@contextlib.asynccontextmanager
async def played_planner(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path, tmp_path: Path, gate: anyio.Event
) -> AsyncIterator[tuple[sv.RunningTopology, Planner]]:
    namespace = f"tv{os.getpid()}{tmp_path.name[-6:]}"
    topology = topologies.dynamo(
        engine="mocker", model=str(mocker_model), served_model_name="org/tiny", prefill=1, decode=1,
        env_path=str(dynamo_env), planner="follow", namespace=namespace, decode_max=4,
    )  # fmt: skip
    script = tmp_path / "planner.py"
    script.write_text(PLANNER)
    async with sv.launch(held_decode(topology, gate), runs_dir=runs_dir) as group:
        env = {**os.environ, "ETCD_ENDPOINTS": f"http://127.0.0.1:{group['etcd'].port}", "DYN_NAMESPACE": namespace}
        python = str(dynamo_env / "bin" / "python")
        async with await anyio.open_process([python, str(script), namespace], env=env) as process:
            planner = Planner(process)
            assert await planner.say("") == "coordinator up"
            yield group, planner
            await planner.stdin.aclose()


async def wait_for(group: sv.RunningTopology, match: Callable[[sv.Event], bool]) -> sv.Event:
    with anyio.fail_after(60):
        async for event in group.events(history=True):
            if match(event):
                return event
    raise AssertionError("the run ended first")


def planner_events(group: sv.RunningTopology) -> list[tuple[str, str, dict[str, int]]]:
    return [(type(e).__name__, e.decision, e.replicas_after if isinstance(e, sv.PlannerDecided) else e.replicas)
            for e in group.event_history if isinstance(e, (sv.PlannerDecided, sv.PlannerDone))]  # fmt: skip


async def test_a_decision_published_mid_scale_is_dropped_by_the_coordinator_and_the_next_one_is_taken(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path, tmp_path: Path
) -> None:
    """Dynamo 1.6.1's coordinator skips a decision published while the one before is unacknowledged
    ("Previous scaling decision not ready, skipping new decision"), so a newer decision cannot reach the
    follower mid-scale (the run queues hand-ins all the same: tests/runtime/test_planner_decisions.py);
    published once decode=2 is completed, decode=3 is taken."""
    gate = anyio.Event()
    async with played_planner(dynamo_env, mocker_model, runs_dir, tmp_path, gate) as (group, planner):
        first = (await planner.say("publish 1 2")).split()
        assert first[2:] == ["1", "2"]
        await wait_for(group, lambda e: isinstance(e, ScaleStarted) and e.service == "decode")
        assert (await planner.say("publish 1 3")).split() == first  # skipped: the coordinator keeps decode=2
        assert not any(isinstance(e, sv.PlannerDone) for e in group.event_history)
        gate.set()
        assert (await planner.say("wait")).startswith("ready True")
        assert group.service("decode").ready_count == 2
        assert (await planner.say("1 3")).startswith("ready True")
        assert group.service("decode").ready_count == 3
        events = planner_events(group)
        assert [(kind, replicas) for kind, _, replicas in events] == [
            ("PlannerDecided", {"prefill": 1, "decode": 2}), ("PlannerDone", {"prefill": 1, "decode": 2}),
            ("PlannerDecided", {"prefill": 1, "decode": 3}), ("PlannerDone", {"prefill": 1, "decode": 3}),
        ]  # fmt: skip
        assert events[0][1] != events[2][1]


async def test_a_follower_killed_mid_scale_is_restarted_and_the_decision_completes(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL of the follower while decode=2 is under way: the run finishes the scale, the follower is
    restarted by its restart policy, takes the unacknowledged decision again (nothing left to scale) and
    completes it; one scale in all, and the Planner sees decode=2 ready."""
    gate = anyio.Event()
    async with played_planner(dynamo_env, mocker_model, runs_dir, tmp_path, gate) as (group, planner):
        assert (await planner.say("publish 1 2")).split()[2:] == ["1", "2"]
        await wait_for(group, lambda e: isinstance(e, ScaleStarted) and e.service == "decode")
        follower = group.replica("planner")
        assert follower.pid is not None
        killed_at = time.monotonic()
        os.kill(follower.pid, signal.SIGKILL)
        await wait_for(group, lambda e: isinstance(e, sv.Ready) and e.replica == "planner" and e.monotonic > killed_at)
        assert follower.restarts == 1
        gate.set()
        assert (await planner.say("wait")).startswith("ready True")
        assert group.service("decode").ready_count == 2
        assert len([e for e in group.event_history if isinstance(e, ScaleStarted)]) == 1
        decided = [e for e in group.event_history if isinstance(e, sv.PlannerDecided)]
        assert [(e.again, e.replicas_before, e.replicas_after) for e in decided] == [
            (False, {"prefill": 1, "decode": 1}, {"prefill": 1, "decode": 2}),
            (True, {"prefill": 1, "decode": 2}, {"prefill": 1, "decode": 2}),
        ]
        assert decided[0].decision == decided[1].decision
        exits = [e for e in group.event_history if isinstance(e, sv.Exited) and e.replica == "planner"]
        assert [e.signal for e in exits] == ["SIGKILL"]
