"""``autoscale:`` on a running service: stand-in vLLM workers whose queue (``vllm:num_requests_waiting``) a
load fills grow to ``max`` and shrink back to ``min`` once idle, each decision an ``AutoscaleDecided`` event
followed by the run's own scale, in the summary's operations; ``supervisor autoscale RUN SERVICE off|on``
pauses and resumes it through the control socket; a count whose GPUs do not fit is refused once and not
asked again. Real stand-in processes, real HTTP; waits on events or polls with a deadline."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import supervisor as sv
from supervisor._events import ScaleEnded, ScaleStarted

from ..helpers import PYTHON, ROOT, supervisor_cli

QUEUE = "vllm:num_requests_waiting"


def queued_worker(autoscale: sv.Autoscale, *, gpus: int | None = None, replicas: int = 1) -> sv.Service:
    """A stand-in vLLM worker that generates one request at a time (``--max-num-seqs 1``), 0.2 s each."""
    return sv.Service(
        name="w",
        command=[PYTHON, "-m", "standins", "worker", "--port", "{port}", "--load-seconds", "0",
                 "--max-num-seqs", "1", "--tokens-per-second", "50"],
        ports=["port"],
        replicas=replicas,
        ready=sv.Probe(sv.HttpCheck("http://127.0.0.1:{port}/health"), period_seconds=0.05),
        metrics="http://127.0.0.1:{port}/metrics",
        env={"PYTHONPATH": str(ROOT)},
        stop=sv.StopPolicy(grace_seconds=5),
        gpus=gpus,
        autoscale=autoscale,
    )  # fmt: skip


async def wait_for(group: sv.RunningTopology, match: Callable[[sv.Event], bool], seconds: float = 60) -> sv.Event:
    """The first event of the run (past or coming) that ``match`` accepts, within ``seconds``."""
    with anyio.fail_after(seconds):
        async for event in group.events(history=True):
            if match(event):
                return event
    raise AssertionError("the run ended first")


async def load(group: sv.RunningTopology, stop: anyio.Event, clients: int = 6) -> None:
    """``clients`` loops of chat completions over the service's ready replicas, until ``stop``."""

    async def client(index: int, http: httpx.AsyncClient) -> None:
        sent = index
        while not stop.is_set():
            ready = [r.url for r in group.service("w").replicas if r.state is sv.ReplicaState.READY and r.url]
            if not ready:
                await anyio.sleep(0.01)  # all replicas replaced at once: none to send to for a moment
                continue
            body = {"messages": [{"role": "user", "content": "count to ten"}], "max_tokens": 10}
            with contextlib.suppress(httpx.HTTPError):  # a replica scaled away under us
                await http.post(f"{ready[sent % len(ready)]}/v1/chat/completions", json=body, timeout=30)
            sent += 1

    async with httpx.AsyncClient(trust_env=False) as http, anyio.create_task_group() as tg:
        for index in range(clients):
            tg.start_soon(client, index, http)


def fast(**options: Any) -> sv.Autoscale:
    settings: dict[str, Any] = dict(min=1, max=3, up_after_seconds=0.3, down_after_seconds=0.5,
                                    cooldown_seconds=0.2, period_seconds=0.05)  # fmt: skip
    settings.update(options)
    return sv.Autoscale(**settings)


@pytest.mark.anyio
async def test_a_queue_grows_the_service_to_max_and_idle_shrinks_it_back_to_min(runs_dir: Path) -> None:
    """Six clients on one worker that serves one at a time: the queue (5 over target 1) grows the service to
    3 (max); once the load stops the queue drains and the service shrinks to 1 (min). Every decision says
    the metric's value, and is in the summary's operations with the scale's outcome."""
    topology = sv.Topology(name="auto", services=[queued_worker(fast(metric=QUEUE, target=1))])
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(load, group, stop)
            await wait_for(group, lambda e: isinstance(e, ScaleEnded) and e.replicas == 3 and e.error is None)
            stop.set()
        await wait_for(group, lambda e: isinstance(e, ScaleEnded) and e.replicas == 1 and e.removed != ())
        assert [r.name for r in group.service("w").replicas] == ["w"]  # a single replica keeps its name
        decided = [e for e in group.event_history if isinstance(e, sv.AutoscaleDecided)]
        ups = [e for e in decided if e.replicas_after > e.replicas_before]
        downs = [e for e in decided if e.replicas_after < e.replicas_before]
        assert ups and downs and decided[-1].replicas_after == 1
        assert all(e.why.startswith(f"{QUEUE} = ") and e.value is not None and e.value > 0 for e in ups)
        assert all(e.replicas_after <= 3 for e in decided)
        status = group.autoscale_status()["w"]
        assert status["enabled"] is True and status["last"]["to"] == 1 and status["refused"] is None
        run_dir = group.run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    autoscales = [o for o in summary["operations"] if o["kind"] == "autoscale"]
    assert len(autoscales) == len(decided) and all(o["error"] is None for o in autoscales)
    assert autoscales[0]["reason"].startswith(f"{QUEUE} = ") and autoscales[-1]["replicas_after"] == 1


@pytest.mark.anyio
async def test_paused_through_the_cli_it_reads_but_decides_nothing_until_resumed(runs_dir: Path) -> None:
    """``supervisor autoscale RUN w off``: the policy is still asked (status shows the load) but no decision
    comes; ``on``: the service follows the policy again. ``supervisor status`` shows the autoscaler."""
    wanted = {"count": 1, "calls": 0}

    def policy(metrics: Mapping[str, Mapping[str, float]], replicas: int) -> int:
        assert all(QUEUE in sample for sample in metrics.values())
        wanted["calls"] += 1
        return wanted["count"]

    topology = sv.Topology(name="pause", services=[queued_worker(fast(policy=policy, up_after_seconds=0))])
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        cli = await anyio.to_thread.run_sync(supervisor_cli, "autoscale", str(group.run_dir), "w", "off")
        assert cli.returncode == 0 and "autoscale of w paused" in cli.stdout, cli.stderr
        assert group.autoscale_status()["w"]["enabled"] is False
        wanted["count"] = 2
        asked = wanted["calls"]
        with anyio.fail_after(30):
            while wanted["calls"] < asked + 5:  # asked five times more while paused
                await anyio.sleep(0.01)
        assert not any(isinstance(e, (sv.AutoscaleDecided, ScaleStarted)) for e in group.event_history)
        status = await anyio.to_thread.run_sync(supervisor_cli, "status", str(group.run_dir))
        assert status.returncode == 0, status.stderr
        row = next(line for line in status.stdout.splitlines() if line.startswith("w ") and " off " in line)
        assert "1-3" in row and "policy" in row
        cli = await anyio.to_thread.run_sync(supervisor_cli, "autoscale", str(group.run_dir), "w", "on")
        assert cli.returncode == 0 and "autoscale of w resumed" in cli.stdout, cli.stderr
        await wait_for(group, lambda e: isinstance(e, ScaleEnded) and e.replicas == 2)
        kinds = [(type(e).__name__, getattr(e, "enabled", None)) for e in group.event_history
                 if isinstance(e, (sv.AutoscaleSwitched, sv.AutoscaleDecided))]  # fmt: skip
        assert kinds == [("AutoscaleSwitched", False), ("AutoscaleSwitched", True), ("AutoscaleDecided", None)]
        status_json = json.loads(
            (await anyio.to_thread.run_sync(supervisor_cli, "status", "--json", str(group.run_dir))).stdout
        )
        assert status_json["autoscale"]["w"]["last"] == {"from": 1, "to": 2, "why": "policy asked for 2"}
        bad = await anyio.to_thread.run_sync(supervisor_cli, "autoscale", str(group.run_dir), "nope", "off")
        assert bad.returncode == 1 and "no service named 'nope'" in bad.stderr


@pytest.mark.anyio
async def test_a_scale_up_whose_gpus_do_not_fit_is_refused_once_and_not_retried(runs_dir: Path) -> None:
    """Two GPUs, one per replica, a policy that wants 3: one decision, one refused scale (the GPU plan in its
    error), then nothing more however often the policy asks; 2 fits and is done; status says what was refused."""
    wanted = {"count": 3, "calls": 0}

    def policy(metrics: Mapping[str, Mapping[str, float]], replicas: int) -> int:
        wanted["calls"] += 1
        return wanted["count"]

    service = queued_worker(fast(policy=policy, up_after_seconds=0, cooldown_seconds=0), gpus=1)
    topology = sv.Topology(name="gpus", services=[service])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=sv.FakeInventory(2)) as group:
        refused = await wait_for(group, lambda e: isinstance(e, ScaleEnded) and e.error is not None)
        assert isinstance(refused, ScaleEnded) and "the GPU plan does not fit the node" in (refused.error or "")
        asked = wanted["calls"]
        with anyio.fail_after(30):
            while wanted["calls"] < asked + 10:
                await anyio.sleep(0.01)
        assert len([e for e in group.event_history if isinstance(e, sv.AutoscaleDecided)]) == 1
        assert len([e for e in group.event_history if isinstance(e, ScaleStarted)]) == 1
        status = group.autoscale_status()["w"]
        assert status["refused"]["to"] == 3 and "does not fit" in status["refused"]["why"]
        wanted["count"] = 2
        await wait_for(group, lambda e: isinstance(e, ScaleEnded) and e.replicas == 2 and e.error is None)
        assert [r.plan.gpus for r in group.service("w").replicas] == [(0,), (1,)]
        summary = group.summary()
    first = next(o for o in summary.operations if o.kind == "autoscale")
    assert (first.replicas_before, first.error is not None) == (1, True)
