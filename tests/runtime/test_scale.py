"""Scaling a running service: new replicas get their own ports and GPUs and count once ready; scaling down
stops the highest-numbered ones and leaves nothing of them; what cannot be done is refused, nothing started."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest

import supervisor as sv
from supervisor._events import ReplicaAdded, ReplicaRemoved, ScaleEnded, ScaleStarted
from supervisor._plan.ports import PortAllocator
from supervisor._runtime import group_stop
from supervisor._runtime.state import RunState
from supervisor._spec.load import topology_from_text

from ..helpers import PROGRAMS, PYTHON, SLEEPER, alive

WORKER = str(PROGRAMS / "pool_worker.py")


def worker(name: str = "w", replicas: int = 2, *extra: str, **kwargs: Any) -> sv.Service:
    return sv.Service(
        name=name,
        command=[PYTHON, WORKER, "--port", "{port}", *extra],
        ports=["port"],
        replicas=replicas,
        ready=sv.LogCheck("worker ready"),
        stop=sv.StopPolicy(grace_seconds=5),
        **kwargs,
    )


def pids_of(path: Path) -> dict[int, int]:
    """leader pid -> its child's pid, as the workers wrote them."""
    pairs = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return {int(leader): int(child) for leader, child in pairs}


async def health(url: str) -> str:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{url}/health", timeout=5)
        response.raise_for_status()
        return response.text


@pytest.mark.anyio
async def test_scale_up_then_down_leaves_nothing_of_the_removed_replicas(runs_dir: Path, tmp_path: Path) -> None:
    """2 -> 4: the new replicas have distinct free ports and serve; 4 -> 1: the three highest-numbered are
    stopped, highest first, and neither they nor their children survive; the records follow."""
    pids = tmp_path / "pids"
    topology = sv.Topology(name="pool", services=[worker("w", 2, "--pids", str(pids))])
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        first = [r.port for r in group["w"].replicas]
        await group.scale("w", 4)
        replicas = group.service("w").replicas
        assert [r.name for r in replicas] == ["w.0", "w.1", "w.2", "w.3"]
        assert [r.port for r in replicas[:2]] == first  # the replicas that stay are untouched
        ports = [r.port for r in replicas]
        assert len(set(ports)) == 4 and all(isinstance(p, int) and p > 0 for p in ports)
        assert all(r.state is sv.ReplicaState.READY for r in replicas)
        assert group["w.3"] is replicas[3] and group.replica("w.2") is replicas[2]
        for replica in replicas:
            assert replica.url is not None
            assert (await health(replica.url)).split()[0] == str(replica.pid)
        manifest = json.loads((group.run_dir / "manifest.json").read_text())
        assert [r["name"] for r in manifest["services"]["w"]["replicas"]] == ["w.0", "w.1", "w.2", "w.3"]
        assert [r["ports"]["port"] for r in manifest["services"]["w"]["replicas"]] == ports
        assert group.environment()["TOPOVISOR_W_URLS"].count(",") == 3

        children = pids_of(pids)
        removed = {r.pid: children[r.pid] for r in replicas[1:] if r.pid is not None}
        assert len(removed) == 3
        await group.scale("w", 1)
        assert [r.name for r in group.service("w").replicas] == ["w.0"]
        for leader, child in removed.items():
            assert not alive(leader) and not alive(child), (leader, child)
        if group.cgroup is not None:  # contained: the retired replicas' cgroups went with them
            assert sorted(p.name for p in group.cgroup.iterdir() if p.is_dir()) == ["w.0"]
        with pytest.raises(KeyError):
            group["w.3"]
        assert (await health(group["w.0"].url or "")).split()[0] == str(group["w.0"].pid)
        history = group.event_history
        removed_names = [e.replica for e in history if isinstance(e, ReplicaRemoved)]
        assert removed_names == ["w.3", "w.2", "w.1"]  # highest-numbered first
        scales = [e for e in history if isinstance(e, (ScaleStarted, ScaleEnded))]
        assert [(type(e).__name__, e.service) for e in scales] == [
            ("ScaleStarted", "w"), ("ScaleEnded", "w"), ("ScaleStarted", "w"), ("ScaleEnded", "w"),
        ]  # fmt: skip
        up, down = scales[1], scales[3]
        assert isinstance(up, ScaleEnded) and isinstance(down, ScaleEnded)
        assert (up.replicas, up.added, up.error) == (4, ("w.2", "w.3"), None)
        assert (down.replicas, down.removed) == (1, ("w.3", "w.2", "w.1"))
        manifest = json.loads((group.run_dir / "manifest.json").read_text())
        assert [r["name"] for r in manifest["services"]["w"]["replicas"]] == ["w.0"]
        run_dir = group.run_dir
    events = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events.count("replica_added") == 2 and events.count("scale_ended") == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["services"]["w"]["replicas"] == ["w.0"] and summary["verified_no_leftovers"]
    # the removed replicas stay in the summary, marked removed with when; both scales are listed
    assert summary["services"]["w"]["removed"] == ["w.3", "w.2", "w.1"]
    gone = {name: summary["replicas"][name] for name in ("w.1", "w.2", "w.3")}
    assert all(r["state"] == "removed" and r["ready_seconds"] > 0 for r in gone.values())
    assert gone["w.3"]["removed_at_seconds"] <= gone["w.2"]["removed_at_seconds"] <= gone["w.1"]["removed_at_seconds"]
    assert summary["replicas"]["w.0"]["state"] == "stopped" and summary["replicas"]["w.0"]["removed_at_seconds"] is None
    operations = [(o["kind"], o["replicas_before"], o["replicas_after"], o["added"], o["removed"], o["error"])
                  for o in summary["operations"]]  # fmt: skip
    assert operations == [("scale", 2, 4, ["w.2", "w.3"], [], None), ("scale", 4, 1, [], ["w.3", "w.2", "w.1"], None)]
    for leader, child in pids_of(pids).items():
        assert not psutil.pid_exists(leader) or not alive(leader)
        assert not alive(child)


@pytest.mark.anyio
async def test_a_single_replica_keeps_its_name_when_scaled_up(runs_dir: Path) -> None:
    """Names are fixed for a replica's life: ``s`` stays ``s`` (also ``s.0``); added ones are ``s.<n>``."""
    topology = sv.Topology(name="one", services=[worker("s", 1)])
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        only = group.replica("s")
        await group.scale("s", 2)
        assert [r.name for r in group.service("s").replicas] == ["s", "s.1"]
        assert group["s.0"] is only and group.replica("s.1").log_path.name == "s.1.log"
        await group.scale("s", 1)
        assert group.service("s").replicas == [only] and group["s.0"] is only
        await group.scale("s", 3)
        assert [r.name for r in group.service("s").replicas] == ["s", "s.1", "s.2"]
        run_dir, ready_seconds = group.run_dir, group.summary().ready_seconds
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["services"]["s"]["replicas"] == ["s", "s.1", "s.2"]
    assert summary["replicas"]["s.2"]["ready_at_seconds"] > summary["replicas"]["s"]["ready_at_seconds"]
    assert summary["ready_seconds"] == ready_seconds  # replicas added later are not part of the start


@pytest.mark.anyio
async def test_a_new_replica_that_fails_undoes_the_scale_and_the_run_goes_on(runs_dir: Path) -> None:
    """A replica added by a scale that exits before it is ready: the scale raises naming it and why, every
    replica it added is gone, the old ones keep serving, and the run has not failed."""
    topology = sv.Topology(
        name="bad",
        services=[
            sv.Service(
                name="w",
                # replicas 2 and up refuse to start
                command=[PYTHON, "-c", "import sys, os; sys.exit(3) if int(sys.argv[1]) >= 2 else os.execv("
                         f"sys.executable, [sys.executable, {WORKER!r}, '--port', sys.argv[2]])", "{replica}", "{port}"],
                ports=["port"], replicas=2, ready=sv.LogCheck("worker ready"),
                restart=sv.RestartPolicy(policy="on-failure", max_restarts=5),
            )
        ],
    )  # fmt: skip
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        before = group["w"].pids
        with pytest.raises(sv.ServiceFailed) as caught:
            await group.scale("w", 4)
        assert caught.value.replica in ("w.2", "w.3")
        assert "exit code 3" in str(caught.value) or "code 3" in str(caught.value)
        assert "undone" in str(caught.value)
        assert [r.name for r in group.service("w").replicas] == ["w.0", "w.1"] and group["w"].pids == before
        assert group.failure is None and group.phase == "running"
        for replica in group.service("w").replicas:
            assert (await health(replica.url or "")).split()[0] == str(replica.pid)
        ended = [e for e in group.event_history if isinstance(e, ScaleEnded)]
        assert len(ended) == 1 and ended[0].replicas == 2 and ended[0].error
        await group.scale("w", 2)  # nothing to do
        assert len([e for e in group.event_history if isinstance(e, ScaleStarted)]) == 1


@pytest.mark.anyio
async def test_gpu_over_subscription_is_refused_with_the_plan_and_nothing_starts(runs_dir: Path) -> None:
    """4 GPUs, 2 replicas of 1 each: 4 fit (the new ones get GPUs 2 and 3), 5 are refused with the plan."""
    node = sv.FakeInventory(4)
    topology = sv.Topology(name="g", services=[worker("w", 2, "--seen", "{gpus}", gpus=1)])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=node) as group:
        with pytest.raises(sv.ConfigError) as caught:
            await group.scale("w", 5)
        message = str(caught.value)
        assert "scale to 5: service 'w', field 'gpus': the GPU plan does not fit the node" in message
        assert "w.0  -> GPU 0" in message and "w.4  REFUSED: wants 1 GPUs; free: none" in message
        assert [r.name for r in group.service("w").replicas] == ["w.0", "w.1"]
        assert not any(isinstance(e, sv.Spawned) and e.replica.startswith("w.2") for e in group.event_history)
        await group.scale("w", 4)
        assert [r.plan.gpus for r in group.service("w").replicas] == [(0,), (1,), (2,), (3,)]
        assert "seen 3" in group.replica("w.3").log_path.read_text()
        added = [e for e in group.event_history if isinstance(e, ReplicaAdded)]
        assert [(e.replica, e.gpus) for e in added] == [("w.2", (2,)), ("w.3", (3,))]


@pytest.mark.anyio
async def test_a_new_replica_gets_the_free_memory_check_of_the_start(runs_dir: Path) -> None:
    """``min_free_memory`` holds for replicas a scale adds: GPU 2 is held (70 of 80 GB) by another
    process, so a third replica needing 20 GB is refused naming the replica, the GPU and the holder, and
    nothing starts; once the memory is free the same scale goes through."""
    node = sv.FakeInventory(4, processes=[sv.GpuProcess(2, os.getpid(), 70 * 10**9)])
    request = sv.GpuRequest(count=1, min_free_memory_bytes="20GB")
    topology = sv.Topology(name="m", services=[worker("w", 2, gpus=request)])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=node) as group:
        with pytest.raises(sv.ConfigError) as caught:
            await group.scale("w", 3)
        message = str(caught.value)
        assert "service 'w', field 'gpus': w.2 needs 20 GB free on GPU 2 (min_free_memory)" in message
        assert f"it has 10 GB free of 80 GB; held by pid {os.getpid()}" in message
        assert [r.name for r in group.service("w").replicas] == ["w.0", "w.1"]
        assert not any(isinstance(e, sv.Spawned) and e.replica == "w.2" for e in group.event_history)
        ended = [e for e in group.event_history if isinstance(e, ScaleEnded)]
        assert len(ended) == 1 and ended[0].error is not None and "w.2 needs 20 GB" in ended[0].error
        node.held.clear()
        await group.scale("w", 3)
        assert [r.plan.gpus for r in group.service("w").replicas] == [(0,), (1,), (2,)]


@pytest.mark.anyio
async def test_counts_that_cannot_be_are_refused(runs_dir: Path) -> None:
    """Below min_ready, a fixed port on several replicas, a negative count, an unknown service."""
    fixed = PortAllocator().allocate()
    topology = sv.Topology(
        name="r",
        services=[
            worker("w", 2, min_ready=2),
            sv.Service(name="f", command=[PYTHON, WORKER, "--port", "{port}"], ports={"port": fixed},
                       ready=sv.LogCheck("worker ready")),
        ],
    )  # fmt: skip
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        with pytest.raises(sv.ConfigError, match="1 replica would be below its min_ready of 2"):
            await group.scale("w", 1)
        with pytest.raises(sv.ConfigError, match="replicas must be a whole number from 0 to 10000, got -1"):
            await group.scale("w", -1)
        with pytest.raises(sv.ConfigError, match=f"fixed port port: {fixed} would be bound by all 2 replicas"):
            await group.scale("f", 2)
        with pytest.raises(KeyError, match="no service named 'nope'"):
            await group.scale("nope", 2)
        assert len(group.service("w").replicas) == 2 and len(group.service("f").replicas) == 1
        assert group.failure is None and not any(isinstance(e, ReplicaAdded) for e in group.event_history)


def test_the_sync_api_scales_too(runs_dir: Path) -> None:
    topology = sv.Topology(name="sync", services=[worker("w", 1)])
    with sv.launch_sync(topology, runs_dir=runs_dir) as group:
        group.scale("w", 3)
        assert [r.name for r in group.service("w").replicas] == ["w", "w.1", "w.2"]
        assert all(r.state is sv.ReplicaState.READY for r in group.service("w").replicas)
        group.scale("w", 1)
        assert [r.name for r in group.service("w").replicas] == ["w"]


def test_the_status_table_and_the_progress_lines_follow_a_scale(tmp_path: Path) -> None:
    """A scale's rows appear after their service's others (shaped like them) and go away; each step is a
    line of the CLI's progress, and a refused scale is a problem line (``-q`` keeps it)."""
    from supervisor._cli.console import EventText, is_problem
    from supervisor._cli.status import StatusBoard

    topology = sv.Topology(name="t", services=[worker("a", 2), worker("b", 1)])
    board = StatusBoard(sv.make_plan(topology, runs_dir=tmp_path / "runs"))
    added = ReplicaAdded(replica="a.2", service="a", ports={"port": 4242, "grpc": 4343}, gpus=(3,))
    board.on_event(added)
    rows = board.rows()
    assert [r.name for r in rows] == ["a.0", "a.1", "a.2", "b"]
    assert (rows[2].ports, rows[2].gpus, rows[2].deadline_seconds) == ("4242 grpc=4343", (3,), rows[0].deadline_seconds)
    board.on_event(sv.Spawned(replica="a.2", service="a", pid=7, monotonic=1.0))
    assert board.rows()[2].state == "loading" and board.counts() == (0, 4)
    board.on_event(ReplicaRemoved(replica="a.2", service="a"))
    assert [r.name for r in board.rows()] == ["a.0", "a.1", "b"]

    text = EventText()
    refused = ScaleEnded(replica="", service="a", replicas=2, seconds=0.1, error="scale to 9: no GPUs")
    assert text.line(ScaleStarted(replica="", service="a", replicas_before=2, replicas_after=3)) == (
        "a: scaling from 2 to 3 replicas"
    )
    assert text.line(added) == "a.2: added (port 4242, grpc 4343, GPU 3)"
    assert text.line(ScaleEnded(replica="", service="a", replicas=3, added=("a.2",), seconds=0.25)) == (
        "a: scaled to 3 replicas in 0.25s"
    )
    assert text.line(refused) == "a: scale FAILED, 2 replicas as before: scale to 9: no GPUs"
    assert is_problem(refused) and not is_problem(added)


HUP_READER = (
    "import json, signal, sys, time\n"
    "def reread(*_):\n"
    "    urls = json.load(open(sys.argv[1]))['services']['w']['urls']\n"
    "    print('urls', len(urls), flush=True)\n"
    "signal.signal(signal.SIGHUP, reread)\n"
    "reread()\n"
    "print('reader ready', flush=True)\n"
    "while True: time.sleep(1)\n"
)


@pytest.mark.anyio
async def test_dependents_follow_a_scale_as_their_on_change_says(runs_dir: Path) -> None:
    """A dependent templating ``{w.urls}`` with ``on_change: restart`` is restarted seeing the new set; one
    with ``none`` keeps running as it was; one that depends on w with ``{signal: SIGHUP}`` re-reads
    ``endpoints.json``; one that neither uses w's endpoints nor depends on w is left alone."""
    topology = sv.Topology(
        name="deps",
        services=[
            worker("w", 2),
            worker("router", 1, "--seen", "{w.urls}", depends_on=["w"], on_change="restart"),
            worker("static", 1, "--seen", "{w.urls}", depends_on=["w"]),
            sv.Service(name="hup", command=[PYTHON, "-c", HUP_READER, "{endpoints}"], depends_on=["w"],
                       ready=sv.LogCheck("reader ready"), on_change={"signal": "SIGHUP"}),
            worker("other", 1, on_change="restart"),  # neither names w's endpoints nor depends on w
        ],
    )  # fmt: skip
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        pids = {name: group[name].pids for name in ("router", "static", "hup", "other")}
        router_port = group["router"].port
        await group.scale("w", 3)
        urls = ",".join(r.url or "" for r in group.service("w").replicas)
        seen = [line for line in group.replica("router").log_path.read_text().splitlines() if line.startswith("seen")]
        assert seen[-1] == f"seen {urls}" and len(seen) == 2
        assert group["router"].pids != pids["router"] and group["router"].port == router_port
        assert group["static"].pids == pids["static"] and group["other"].pids == pids["other"]
        assert group["hup"].pids == pids["hup"]
        hup_log = group.replica("hup").log_path
        deadline = anyio.current_time() + 10
        while "urls 3" not in hup_log.read_text():
            assert anyio.current_time() < deadline, hup_log.read_text()
            await anyio.sleep(0.01)
        changed = {e.service: e.action for e in group.event_history if isinstance(e, sv.EndpointsChanged)}
        assert changed == {"router": "restart", "static": "none", "hup": "signal"}
        endpoints = json.loads((group.run_dir / "endpoints.json").read_text())
        assert endpoints["services"]["w"]["urls"] == urls.split(",")
        # a plain rolling restart of the one that kept its old set fills its templates anew
        await group.rolling_restart("static")
        assert group.replica("static").log_path.read_text().splitlines()[-2] == f"seen {urls}"


def test_on_change_in_yaml_is_checked_naming_the_field(tmp_path: Path) -> None:
    def load(on_change: str) -> sv.Topology:
        text = f"name: t\nservices:\n  a:\n    command: [x]\n    on_change: {on_change}\n"
        return sv.make_plan(topology_from_text(text, source="t.yaml"), check_executables=False).topology  # type: ignore[return-value]

    assert load("restart").services[0].on_change == sv.OnChange("restart")
    assert load("{signal: hup}").services[0].on_change == sv.OnChange("signal", "SIGHUP")
    assert load("none").services[0].on_change == sv.OnChange()
    with pytest.raises(sv.ConfigError, match=r"t.yaml: service 'a', field 'on_change': must be none, restart or "
                       r"\{signal: SIGHUP\}, got 'restrat' \(did you mean 'restart'\?\)"):  # fmt: skip
        load("restrat")
    with pytest.raises(sv.ConfigError, match=r"service 'a', field 'on_change': .*unknown signal 'SIGFOO'"):
        load("{signal: SIGFOO}")
    with pytest.raises(sv.ConfigError, match=r"service 'a', field 'on_change': expected restart, none or"):
        load("{restart: true}")
    with pytest.raises(sv.ConfigError, match="field 'on_change': signal needs the signal to send"):
        sv.make_plan(sv.Topology(name="t", services=[sv.Service(name="a", command=["x"], on_change="signal")]),
                     check_executables=False)  # fmt: skip


def test_the_progress_lines_tell_how_dependents_follow() -> None:
    from supervisor._cli.console import EventText, is_problem

    text = EventText()
    restart = sv.EndpointsChanged(replica="", service="router", source="w", action="restart")
    assert text.line(restart) == "router: endpoints of w changed (rolling restart)"
    broken = sv.EndpointsChanged(replica="", service="r", source="w", action="none", error="unknown template {w.3.url}")
    assert text.line(broken) == "r: endpoints of w changed; its templates do not fill: unknown template {w.3.url}"
    assert is_problem(broken) and not is_problem(restart)


@pytest.mark.anyio
async def test_a_scale_down_scans_the_run_s_processes_once_not_once_per_replica(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retiring 10 replicas reads the process table once (a read per replica made retiring quadratic in
    the run's size: 1,000 -> 2 took 20 s); each is still stopped, removed and gone. (Timings: bench_scale.)"""
    scan = group_stop.members_by_replica
    scans: list[int] = []

    async def counted(run: RunState) -> dict[str, list[psutil.Process]]:
        scans.append(len(run.replicas))
        return await scan(run)

    service = sv.Service(name="s", command=SLEEPER, replicas=2, ready=sv.LogCheck("service ready"))
    async with sv.launch(sv.Topology(name="down", services=[service]), runs_dir=runs_dir) as group:
        await group.scale("s", 12)
        pids = [r.pid for r in group.service("s").replicas[2:]]
        monkeypatch.setattr(group_stop, "members_by_replica", counted)
        await group.scale("s", 2)
        monkeypatch.setattr(group_stop, "members_by_replica", scan)
        assert scans == [12], scans
        assert [r.name for r in group.service("s").replicas] == ["s.0", "s.1"]
        assert not any(alive(pid) for pid in pids if pid is not None)
        removed = [e.replica for e in group.event_history if isinstance(e, ReplicaRemoved)]
        assert removed == [f"s.{i}" for i in range(11, 1, -1)]
