"""Rolling restarts: replica by replica, never below min_ready, each keeping its ports; a new spec that
fails stops the rollout at the first replica, which goes back to its previous spec, and the others serve."""

from __future__ import annotations

import functools
import json
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

import supervisor as sv
from supervisor._control.protocol import request_blocking
from supervisor._events import RolloutEnded, RolloutStarted, RolloutStepped

from ..helpers import PROGRAMS, PYTHON, wait_for

WORKER = str(PROGRAMS / "pool_worker.py")


def pool_file(tmp_path: Path, replicas: int = 4, min_ready: int | None = 3) -> Path:
    """A YAML pool whose version, mode and readiness deadline are vars, for ``--set`` style overrides."""
    quorum = f"min_ready: {min_ready}" if min_ready is not None else ""
    path = tmp_path / "pool.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: pool
        vars: {{version: "1", mode: serve, ready_timeout: 30s}}
        services:
          w:
            command: [{PYTHON}, {WORKER}, --port, "{{port}}", --version, "${{version}}", --mode, "${{mode}}"]
            ports: [port]
            replicas: {replicas}
            {quorum}
            ready: {{log: worker ready, timeout: "${{ready_timeout}}"}}
            stop: {{grace: 5s}}
        """)
    )
    return path


async def poll_health(urls: list[str], seen: list[int], stop: anyio.Event) -> None:
    """Every 20 ms, GET every replica's /health at once; record how many answered 200."""
    async with httpx.AsyncClient(trust_env=False) as client:

        async def ok(url: str, answers: list[bool]) -> None:
            try:
                response = await client.get(f"{url}/health", timeout=2)
                answers.append(response.status_code == 200)
            except httpx.HTTPError:
                answers.append(False)

        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            answers: list[bool] = []
            async with anyio.create_task_group() as tg:
                for url in urls:
                    tg.start_soon(ok, url, answers)
            seen.append(sum(answers))
            await anyio.sleep(0.02)


async def versions(group: sv.RunningTopology) -> dict[str, tuple[int, str]]:
    """replica -> (pid, version) as its /health says."""
    found = {}
    async with httpx.AsyncClient(trust_env=False) as client:
        for replica in group.service("w").replicas:
            text = (await client.get(f"{replica.url}/health", timeout=5)).text
            pid, version = text.split()
            found[replica.name] = (int(pid), version)
    return found


@pytest.mark.anyio
async def test_a_rolling_restart_never_leaves_fewer_than_min_ready_serving(tmp_path: Path, runs_dir: Path) -> None:
    """4 replicas, min_ready 3, a new version by overrides: a client polling every replica every 20 ms
    never sees fewer than 3 healthy (and does see 3: one was down at a time); afterwards every pid is new,
    every port the same, and every replica runs the new version."""
    topology = sv.load(pool_file(tmp_path))
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        replicas = group.service("w").replicas
        ports = [r.port for r in replicas]
        pids = [r.pid for r in replicas]
        urls = [r.url or "" for r in replicas]
        seen: list[int] = []
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll_health, urls, seen, stop)
            await group.rolling_restart("w", overrides={"version": "2"})
            stop.set()
        assert len(seen) >= 5 and min(seen) == 3, seen
        after = group.service("w").replicas
        assert [r.port for r in after] == ports
        assert all(r.pid is not None and r.pid not in pids for r in after)
        assert all(r.state is sv.ReplicaState.READY for r in after)
        assert {v for _, v in (await versions(group)).values()} == {"2"}
        assert all("--version', '2'" in str(r.plan.argv) or r.plan.argv[5] == "2" for r in after)
        history = group.event_history
        started = [e for e in history if isinstance(e, RolloutStarted)]
        assert [(e.replicas, e.max_unavailable, e.min_ready, e.respecified) for e in started] == [(4, 1, 3, True)]
        steps = [(e.replica, e.step, e.of) for e in history if isinstance(e, RolloutStepped)]
        assert steps == [("w.0", 1, 4), ("w.1", 2, 4), ("w.2", 3, 4), ("w.3", 4, 4)]
        (ended,) = [e for e in history if isinstance(e, RolloutEnded)]
        assert ended.error is None and ended.rolled == ("w.0", "w.1", "w.2", "w.3")
        manifest = json.loads((group.run_dir / "manifest.json").read_text())
        assert [r["pid"] for r in manifest["services"]["w"]["replicas"]] == [r.pid for r in after]
        assert all("2" in r["command"] for r in manifest["services"]["w"]["replicas"])
        # a later scale-up plans from the new spec
        await group.scale("w", 5)
        assert (await versions(group))["w.4"][1] == "2"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"mode": "fail"}, "exited with code 3 before it was ready"),
        ({"mode": "silent", "ready_timeout": "1s"}, "not ready after 1s"),
    ],
)
async def test_a_new_version_that_fails_stops_the_rollout_at_the_first_replica(
    tmp_path: Path, runs_dir: Path, overrides: dict[str, str], why: str
) -> None:
    """The first replica fails on the new spec (it exits, or is never ready): the rollout raises naming it
    and why, it goes back to the old version and is ready again, the other three never stopped, and the
    run goes on."""
    topology = sv.load(pool_file(tmp_path))
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        before = await versions(group)
        with pytest.raises(sv.ServiceFailed) as caught:
            await group.rolling_restart("w", overrides=overrides)
        error = caught.value
        assert error.replica == "w.0" and why in str(error), str(error)
        assert "w.0 rolled back to the previous spec and ready again" in str(error)
        assert "0 of 4 replicas rolled" in str(error)
        now = await versions(group)
        assert {name: pid for name, (pid, _) in now.items() if name != "w.0"} == {
            name: pid for name, (pid, _) in before.items() if name != "w.0"
        }
        assert now["w.0"][0] != before["w.0"][0] and now["w.0"][1] == "1"
        assert group.failure is None and group.service("w").ready_count == 4
        (ended,) = [e for e in group.event_history if isinstance(e, RolloutEnded)]
        assert ended.rolled == () and ended.rolled_back == ("w.0",) and ended.left_failed == ()
        assert ended.error is not None and "stopped at w.0" in ended.error
        assert not any(isinstance(e, RolloutStepped) for e in group.event_history)
        # the run's spec is still the old one: a plain rollout restarts every replica on version 1
        await group.rolling_restart("w")
        assert {v for _, v in (await versions(group)).values()} == {"1"}


@pytest.mark.anyio
async def test_a_code_built_service_rolls_onto_a_new_spec_and_refusals_stop_nothing(runs_dir: Path) -> None:
    """``service_spec`` for a topology built in code; settings that cannot roll are a ConfigError naming
    the field, before any replica stops; ``max_unavailable=2`` restarts two at a time."""
    service = sv.Service(
        name="w", command=[PYTHON, WORKER, "--port", "{port}"], ports=["port"], replicas=4,
        ready=sv.LogCheck("worker ready"), stop=sv.StopPolicy(grace_seconds=5),
    )  # fmt: skip
    async with sv.launch(sv.Topology(name="code", services=[service]), runs_dir=runs_dir) as group:
        pids = group["w"].pids
        with pytest.raises(sv.ConfigError, match="overrides need the topology's file"):
            await group.rolling_restart("w", overrides={"version": "2"})
        with pytest.raises(sv.ConfigError, match="min_ready 4 of 4 replicas leaves none to restart"):
            await group.rolling_restart("w", min_ready=4)
        with pytest.raises(sv.ConfigError, match="field 'ports': a rolling restart keeps each replica's ports"):
            await group.rolling_restart("w", service_spec=sv.Service(name="w", command=["x"], ports=["http"]))
        with pytest.raises(sv.ConfigError, match="max_unavailable must be 1 or more"):
            await group.rolling_restart("w", max_unavailable=0)
        assert group["w"].pids == pids
        newer = sv.Service(
            name="w", command=[PYTHON, WORKER, "--port", "{port}", "--version", "3"], ports=["port"], replicas=1,
            ready=sv.LogCheck("worker ready"), stop=sv.StopPolicy(grace_seconds=5),
        )  # fmt: skip
        await group.rolling_restart("w", service_spec=newer, max_unavailable=2)
        assert {v for _, v in (await versions(group)).values()} == {"3"}
        assert len(group.service("w").replicas) == 4 and not set(group["w"].pids) & set(pids)
        started = [e for e in group.event_history if isinstance(e, RolloutStarted)]
        assert [(e.max_unavailable, e.min_ready) for e in started] == [(2, 2)]
        refused = [e for e in group.event_history if isinstance(e, RolloutEnded) and e.error]
        assert len(refused) == 4


def test_the_sync_api_rolls_too(tmp_path: Path, runs_dir: Path) -> None:
    with sv.launch_sync(sv.load(pool_file(tmp_path, replicas=2, min_ready=None)), runs_dir=runs_dir) as group:
        pids = group["w"].pids
        group.rolling_restart("w", overrides={"version": "5"})
        assert not set(group["w"].pids) & set(pids) and len(group["w"].pids) == 2
        with pytest.raises(sv.ServiceFailed, match=r"stopped at w\.0"):
            group.rolling_restart("w", overrides={"mode": "fail"})
        assert group.failure is None


def test_the_progress_lines_tell_a_rollout() -> None:
    from supervisor._cli.console import EventText, is_problem

    text = EventText()
    started = RolloutStarted(replica="", service="w", replicas=4, max_unavailable=1, min_ready=3, respecified=True)
    assert text.line(started) == "w: rolling restart of 4 replicas on a new spec, 1 at a time, at least 3 ready"
    stepped = RolloutStepped(replica="w.1", service="w", step=2, of=4, seconds=1.5)
    assert text.line(stepped) == "w.1: rolled (2/4), ready again in 1.50s"
    failed = RolloutEnded(replica="", service="w", seconds=2.0, error="stopped at w.0: exited", rolled_back=("w.0",))
    assert text.line(failed) == "w: rolling restart FAILED: stopped at w.0: exited"
    assert is_problem(failed) and not is_problem(stepped)
    done = RolloutEnded(replica="", service="w", rolled=("w.0", "w.1"), seconds=3.0)
    assert text.line(done) == "w: rolling restart done, 2 replicas in 3.00s"


@pytest.mark.anyio
async def test_a_rollout_the_caller_gives_up_on_leaves_its_replica_to_ordinary_supervision(
    tmp_path: Path, runs_dir: Path
) -> None:
    """The caller cancels while w.0 starts on a spec that is never ready: w.0 is no longer on trial, so its
    readiness timeout is judged as any replica's (here: degraded, quorum kept), not silently dropped."""
    topology = sv.load(pool_file(tmp_path))
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        with anyio.move_on_after(0.5) as scope:
            await group.rolling_restart("w", overrides={"mode": "silent", "ready_timeout": "1s"})
        assert scope.cancelled_caught
        assert not group.replica("w.0").trial
        await wait_for(group, lambda events: any(isinstance(e, sv.Degraded) for e in events), timeout=15)
        assert group.failure is None and group.service("w").ready_count == 3


async def roll_while(group: sv.RunningTopology, action: Callable[[], Awaitable[None]]) -> int:
    """Roll ``w`` onto version 2 and, once it rolled w.0 (w.1 and w.2 still to go), run ``action`` beside
    it; the index of ``RolloutEnded`` in the run's history."""
    events = group.events()

    async def after_the_first_step() -> None:
        async for event in events:
            if isinstance(event, RolloutStepped) and event.replica == "w.0":
                await action()
                return
        raise AssertionError("the run ended before the rollout rolled w.0")

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            tg.start_soon(after_the_first_step)
            await group.rolling_restart("w", overrides={"version": "2"})
    (end,) = [i for i, e in enumerate(group.event_history) if isinstance(e, RolloutEnded)]
    return end


@pytest.mark.anyio
@pytest.mark.parametrize("through", ["api", "socket"])
async def test_a_restart_asked_during_a_rollout_waits_until_the_rollout_is_over(
    tmp_path: Path, runs_dir: Path, through: str
) -> None:
    """A restart of w.2 asked (from Python, or through the control socket) once the rollout rolled w.0 is
    done after the rollout, not inside it: the rollout rolls all three without error, every stop the
    restart causes comes after RolloutEnded, and w.2 ends on a third pid, still on the new version."""
    topology = sv.load(pool_file(tmp_path, replicas=3, min_ready=2))
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        asked_at: list[int] = []

        async def restart_w2() -> None:
            asked_at.append(len(group.event_history))
            if through == "api":
                await group.restart("w.2")
                return
            assert group.control_socket is not None
            ask = functools.partial(request_blocking, group.control_socket, "restart", name="w.2", timeout_seconds=60)
            reply = await anyio.to_thread.run_sync(ask)
            assert reply["ok"], reply

        end = await roll_while(group, restart_w2)
        history = group.event_history
        ended = history[end]
        assert isinstance(ended, RolloutEnded) and ended.error is None and ended.rolled == ("w.0", "w.1", "w.2")
        assert asked_at and asked_at[0] <= end  # asked while the rollout was under way
        restart_stops = [
            i for i, e in enumerate(history) if isinstance(e, sv.Stopping) and "restart requested" in e.reason
        ]
        assert restart_stops and min(restart_stops) > end, (restart_stops, end)
        spawns = [i for i, e in enumerate(history) if isinstance(e, sv.Spawned) and e.replica == "w.2"]
        assert len(spawns) == 3 and spawns[1] < end < spawns[2]
        assert group.replica("w.2").state is sv.ReplicaState.READY
        assert {v for _, v in (await versions(group)).values()} == {"2"}


@pytest.mark.anyio
async def test_a_replica_stopped_during_a_rollout_stays_stopped(tmp_path: Path, runs_dir: Path) -> None:
    """``stop("w.2")`` asked once the rollout rolled w.0 waits for the rollout (which would otherwise start
    w.2 again on the new version): afterwards w.2 is stopped, and its stop came after RolloutEnded."""
    topology = sv.load(pool_file(tmp_path, replicas=3, min_ready=1))
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        end = await roll_while(group, functools.partial(group.stop, "w.2"))
        history = group.event_history
        stops = [i for i, e in enumerate(history) if isinstance(e, sv.Stopping) and e.reason == "stop requested"]
        assert stops and min(stops) > end, (stops, end)
        assert group.replica("w.2").state is sv.ReplicaState.STOPPED and not group.replica("w.2").running
        assert group.service("w").ready_count == 2
