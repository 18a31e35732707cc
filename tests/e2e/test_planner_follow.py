"""The Dynamo preset's ``planner=follow`` against the real Dynamo 1.6.1 (etcd, NATS, mocker workers): a test
that plays the Planner (a ``VirtualConnectorCoordinator`` in the engine's Python) publishes decode=2, then
prefill=2 decode=1, then a decode count beyond ``decode_max``; each time ``wait_for_scaling_completion()``
returns once the run has that set ready (capped to the bound for the last), and chat completions through
the frontend keep succeeding during and after each change. Needs ``.ci/install-engines``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import httpx
import pytest

import supervisor as sv
import topologies
from supervisor._events import ScaleEnded

pytestmark = [pytest.mark.anyio, pytest.mark.engines]

#: plays the Planner: each stdin line "P D" is published as a decision, and answered with
#: "ready <is_scaling_ready> <seconds>" once ``wait_for_scaling_completion()`` returned and the decision
#: is ready (within 60 s)
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
            prefill, decode = map(int, line.split())
            began = time.monotonic()
            await coordinator.update_scaling_decision(prefill, decode)
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
        assert "decode 5 capped to 2 (bounds 1-2)" in log
        run_dir = group.run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [o["kind"] for o in summary["operations"]] == ["scale"] * 4
