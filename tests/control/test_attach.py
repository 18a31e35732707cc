"""``supervisor.attach``: the group interface for a run owned by another process, over its control socket;
from a second process to a ``run --detach``, and in the same process to a launched run."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._host.proctable import marked_processes

from ..helpers import PYTHON, ROOT, alive, run_detached, wait_until

_SLEEP = "import time; print('up', flush=True); time.sleep(3600)"


def write_topology(tmp_path: Path) -> Path:
    path = tmp_path / "attach.yaml"
    path.write_text(
        "name: attach\nservices:\n"
        "  web:\n    command: ['{python}', -m, http.server, --bind, 127.0.0.1, '{port}']\n    ports: [port]\n"
        "    ready: {http: 'http://127.0.0.1:{port}/'}\n"
        f"  worker:\n    command: ['{{python}}', -c, {json.dumps(_SLEEP)}]\n    replicas: 2\n"
        "    depends_on: [web]\n    ready: {log: up}\n"
    )
    return path


#: the second process: attach by run id, read the addresses, restart one replica, stop the run
_CLIENT = textwrap.dedent(
    """
    import json, sys, urllib.request, anyio, supervisor

    async def main():
        out = {}
        async with supervisor.attach(sys.argv[1]) as group:
            out["run_dir"] = str(group.run_dir)
            out["url"] = group["web"].url
            out["urls"] = group["worker"].urls
            out["port"] = group["web"].port
            out["http"] = urllib.request.urlopen(group["web"].url, timeout=30).status
            out["replicas"] = [r.name for r in group["worker"].replicas]
            out["before"] = group["worker.1"].pids
            events = group.events()
            await group.restart("worker.1")
            out["after"] = group["worker.1"].pids
            out["state"] = group["worker.1"].state
            kinds = []
            async for event in events:
                kinds.append(type(event).__name__)
                if kinds[-1] == "Ready":
                    break
            out["events"] = kinds
            out["all_pids"] = [p for s in group for p in s.pids]
            await group.stop()
            out["phase"] = group.phase
        print(json.dumps(out))

    anyio.run(main)
    """
)


def test_attach_from_a_second_process_to_a_detached_run(tmp_path: Path, runs_dir: Path) -> None:
    """A script in another process attaches to a ``run --detach`` by its id: it reads the urls, restarts a
    replica (new pid, ready again), and stops the run: nothing of it is left and its records say stopped."""
    run_id, run_dir = run_detached(write_topology(tmp_path), runs_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    supervisor_pid = manifest["supervisor_pid"]
    client = subprocess.run([PYTHON, "-c", _CLIENT, run_id], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert client.returncode == 0, client.stderr
    out = json.loads(client.stdout)
    web = manifest["services"]["web"]["replicas"][0]
    assert out["run_dir"] == str(run_dir) and out["url"] == web["url"] and out["port"] == web["ports"]["port"]
    assert out["http"] == 200 and out["replicas"] == ["worker.0", "worker.1"] and out["urls"] == []
    assert out["before"] != out["after"] and out["state"] == "ready" and not alive(out["before"][0])
    assert out["events"][:1] == ["ControlRequest"] and "Spawned" in out["events"] and out["events"][-1] == "Ready"
    assert out["phase"] == "stopped"
    wait_until(lambda: not alive(supervisor_pid), timeout=30)
    assert marked_processes(run_id) == {} and not any(alive(p) for p in out["all_pids"])
    assert json.loads((run_dir / "manifest.json").read_text())["phase"] == "stopped"
    assert not (run_dir / "control.sock").exists()
    assert json.loads((run_dir / "summary.json").read_text())["verified_no_leftovers"] is True


def topology() -> sv.Topology:
    code = "import time; print('up', flush=True); time.sleep(3600)"
    web = sv.Service(name="web", command=[PYTHON, "-c", code], ports=["port", "metrics"], ready=sv.LogCheck("up"))
    worker = sv.Service(name="worker", command=[PYTHON, "-c", code], replicas=2, ready=sv.LogCheck("up"))
    return sv.Topology(name="attached", services=[web, worker])


async def attached_when_open(group: sv.RunningTopology) -> None:
    with anyio.fail_after(10):
        while group.control_socket is None or not group.control_socket.exists():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_attach_mirrors_the_launched_group_and_leaving_keeps_the_run(runs_dir: Path) -> None:
    """Attached by its directory, the run shows the same urls, ports and pids as its owner's group; events
    come typed; ``mark`` lands in the owner's history; leaving the block stops nothing."""
    async with sv.launch(topology(), runs_dir=runs_dir) as owner:
        await attached_when_open(owner)
        async with sv.attach(owner.run_dir) as group:
            assert group.run_id == owner.run_id and group.run_dir == owner.run_dir
            assert group["web"].url == owner["web"].url and group["web"].ports == owner["web"].ports
            assert group["worker"].pids == owner["worker"].pids and group["worker.1"].pid == owner["worker.1"].pid
            assert [r.name for r in group["worker"].replicas] == ["worker.0", "worker.1"]
            assert group.phase == "running" and group["worker"].ready_count == 2
            with pytest.raises(KeyError, match="no service or replica named 'nope'"):
                group["nope"]
            marked = group.mark("halfway")
            assert isinstance(marked, sv.Marked) and marked.label == "halfway"
            with pytest.raises(ValueError):
                group.mark("two\nlines")
            with anyio.fail_after(10):
                while not any(isinstance(e, sv.Marked) and e.label == "halfway" for e in owner.event_history):
                    await anyio.sleep(0.01)
            history = [type(e) for e in await _first(group.events(history=True), 3)]
            assert history[0] is sv.Spawned
            events = group.events()  # from now on: what happens before the first ``async for`` is kept
            owner.mark("after the call")
            (first,) = await _first(events, 1)
            assert isinstance(first, sv.Marked) and first.label == "after the call"
            with pytest.raises(sv.ControlError, match="no service or replica named 'nope'"):
                await group.restart("nope")
            if not hasattr(sv.RunningTopology, "scale"):
                with pytest.raises(sv.ControlError, match="'scale' is not supported by this run"):
                    await group.scale("worker", 3)
            await group.stop("worker.0")
            assert group["worker.0"].state == "stopped" and owner["worker.0"].state is sv.ReplicaState.STOPPED
        assert owner.phase == "running" and all(alive(p) for p in owner["web"].pids + owner["worker.1"].pids)


async def _first(events: object, count: int) -> list[sv.Event]:
    seen: list[sv.Event] = []
    with anyio.fail_after(10):
        async for event in events:  # type: ignore[attr-defined]
            seen.append(event)
            if len(seen) == count:
                break
    await events.aclose()  # type: ignore[attr-defined]
    return seen


@pytest.mark.anyio
async def test_attach_says_clearly_when_there_is_nothing_to_attach_to(runs_dir: Path) -> None:
    """An unknown run is ``UnknownRun``; a finished run is ``ControlError`` saying it is not running."""
    with pytest.raises(sv.UnknownRun, match="no run matches 'no-such-run'"):
        async with sv.attach("no-such-run"):
            pass
    async with sv.launch(topology(), runs_dir=runs_dir) as owner:
        pass
    with pytest.raises(sv.ControlError, match=f"run {owner.run_id} is not running"):
        async with sv.attach(owner.run_dir):
            pass


async def restart_worker_through(handle: sv.TopologyHandle) -> tuple[list[int], list[int]]:
    """Code written once against the handle protocol: the pids of ``worker.1`` before and after a restart."""
    replica = handle["worker.1"]
    before = list(replica.pids)
    await handle.restart("worker.1")
    return before, list(handle["worker.1"].pids)


@pytest.mark.anyio
async def test_the_launched_group_and_an_attached_one_are_both_topology_handles(runs_dir: Path) -> None:
    """One function drives the run through either handle: the owner's group, then an attached one."""
    async with sv.launch(topology(), runs_dir=runs_dir) as owner:
        await attached_when_open(owner)
        assert isinstance(owner, sv.TopologyHandle)
        before, after = await restart_worker_through(owner)
        assert before != after and after == owner["worker.1"].pids
        async with sv.attach(owner.run_dir) as attached:
            assert isinstance(attached, sv.TopologyHandle)
            before, after = await restart_worker_through(attached)
            assert before != after and after == owner["worker.1"].pids


def test_the_blocking_twin_is_a_sync_topology_handle(runs_dir: Path) -> None:
    with sv.launch_sync(topology(), runs_dir=runs_dir) as group:
        assert isinstance(group, sv.SyncTopologyHandle) and not isinstance(group, sv.TopologyHandle)
        assert group["worker"].ready_count == 2
