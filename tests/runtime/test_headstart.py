"""The head start: ``supervisor run`` spawns the services that wait for nothing before its event loop exists,
and the group adopts them. The guarantees of a normal start must hold in that window too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import anyio
import attrs
import psutil
import pytest

import supervisor as sv
from supervisor._host.gpu_inventory import FakeInventory, GpuProcess
from supervisor._host.process import ChildProcess
from supervisor._plan.plan import make_plan
from supervisor._records.record import list_runs, resolve_run
from supervisor._records.registry import register_run
from supervisor._records.schema import IndexEntry, index_entry_from_json
from supervisor._runtime import preflight as _preflight
from supervisor._runtime.headstart import HeadStart
from supervisor._runtime.preflight import _maybe_listening
from supervisor._runtime.runner import supervise_prepared

from ..fakerun import read_events
from ..helpers import PYTHON, SLEEPER, alive, wait_until

EARLY = [PYTHON, "-c", "import time\nprint('early line', flush=True)\ntime.sleep(60)"]


def _topology() -> sv.Topology:
    return sv.Topology(
        name="head",
        services=[
            sv.Service(name="root", command=EARLY, replicas=2, ready=sv.Probe(sv.LogCheck("early line"))),
            sv.Service(name="after", command=SLEEPER, depends_on=["root"], ready=sv.Probe(sv.LogCheck("ready"))),
        ],
    )


def test_only_the_replicas_of_services_that_wait_for_nothing_start_early(runs_dir: Path) -> None:
    plan = make_plan(_topology(), runs_dir=runs_dir)
    with HeadStart.begin(plan) as head:
        assert list(head.spawned) == [r.name for r in plan.service("root").replicas]
        assert head.watchdog_pid is not None and alive(head.watchdog_pid)
        assert all(alive(pid) for pid in head.spawned.values())


def test_the_group_adopts_the_early_processes_with_their_output_and_spawn_time(runs_dir: Path) -> None:
    """Same pids (no second spawn), the same watchdog, the line printed before the event loop existed
    reaches the probe and the log, and the records keep the real spawn and start times."""
    plan = make_plan(_topology(), runs_dir=runs_dir)
    backend = os.environ.get("TOPOVISOR_TEST_BACKEND", "asyncio")

    async def body(group: sv.RunningTopology) -> tuple[list[int], list[sv.Event], float, int | None]:
        watchdog = group._run.watchdog
        return group["root"].pids, group.event_history, group.started_at, watchdog.pid if watchdog else None

    with HeadStart.begin(plan) as head:
        early = dict(head.spawned)
        loop_began = time.monotonic()
        outcome = anyio.run(lambda: supervise_prepared(plan, body, head_start=head), backend=backend)
    assert outcome.result is not None
    pids, events, started_at, watchdog = outcome.result
    assert pids == list(early.values())
    assert watchdog == head.watchdog_pid
    assert started_at == head.began_at
    spawned = {e.replica: e for e in events if isinstance(e, sv.Spawned)}
    assert {name: spawned[name].pid for name in early} == early
    assert all(spawned[name].monotonic < loop_began for name in early)  # when it really started
    assert spawned["after"].monotonic > loop_began
    for name in early:
        assert "early line" in (outcome.run_dir / "logs" / f"{name}.log").read_text()
    assert outcome.leftovers == ()


def test_what_the_group_never_adopted_is_killed_and_the_watchdog_sweeps(runs_dir: Path) -> None:
    plan = make_plan(_topology(), runs_dir=runs_dir)
    with HeadStart.begin(plan) as head:
        pids = list(head.spawned.values())
        watchdog_pid = head.watchdog_pid
    assert pids and not any(alive(pid) for pid in pids)
    assert watchdog_pid is not None and not alive(watchdog_pid)
    assert [e["event"] for e in read_events(plan.run_dir)] == ["watchdog_sweep"]


def test_a_sigkilled_supervisor_before_its_event_loop_leaves_nothing(runs_dir: Path) -> None:
    """SIGKILL between the first spawn and the event loop: the watchdog, already up, sweeps the run."""
    code = f"""
import os, signal, sys
import supervisor as sv
from supervisor._runtime.headstart import HeadStart
from supervisor._plan.plan import make_plan
topology = sv.Topology(name="k", services=[sv.Service(name="s", command={SLEEPER!r})])
head = HeadStart.begin(make_plan(topology, runs_dir={str(runs_dir)!r}))
print(head.spawned["s"], head.containment.path, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid, cgroup = done.stdout.split()
    wait_until(lambda: not alive(int(pid)), timeout=20)
    if cgroup != "None":  # contained: the watchdog removes the run's cgroup once it is empty
        wait_until(lambda: not Path(cgroup).exists(), timeout=20)


def test_the_run_is_indexed_before_its_first_child_and_unindexed_when_nothing_was_adopted(runs_dir: Path) -> None:
    plan = make_plan(_topology(), runs_dir=runs_dir)
    with HeadStart.begin(plan) as head:
        record = resolve_run(plan.run_id)
        assert record.indexed and record.supervisor_alive and record.watchdog_alive
        assert record.supervisor_pid == os.getpid() and record.watchdog_pid == head.watchdog_pid
        assert record.run_dir == plan.run_dir.absolute()
    assert not any(r.run_id == plan.run_id for r in list_runs())


def test_the_index_entry_has_the_schema_s_fields(runs_dir: Path) -> None:
    """The head start writes the entry without the schema (it must not wait for it to import)."""
    path = register_run("r1", runs_dir / "r1", supervisor_pid=os.getpid(), watchdog_pid=None)
    written = json.loads(path.read_text())
    assert set(written) == {f.name for f in attrs.fields(IndexEntry)}
    entry = index_entry_from_json(written)
    assert entry.supervisor_pid == os.getpid() and entry.watchdog_pid is None and entry.run_id == "r1"
    assert entry.supervisor_create_time == pytest.approx(psutil.Process().create_time(), abs=0.05)


def test_gc_stops_a_run_whose_supervisor_and_watchdog_died_before_its_event_loop(runs_dir: Path) -> None:
    """Both SIGKILLed in the head start's window (no manifest yet): the index entry lets gc find the run
    and stop what it started (the chaos test found processes gc could not see)."""
    code = f"""
import os, signal, sys
import supervisor as sv
from supervisor._runtime.headstart import HeadStart
from supervisor._plan.plan import make_plan
topology = sv.Topology(name="k", services=[sv.Service(name="s", command={SLEEPER!r}, replicas=2)])
head = HeadStart.begin(make_plan(topology, runs_dir={str(runs_dir)!r}))
print(head.watchdog_pid, *head.spawned.values(), flush=True)
os.kill(head.watchdog_pid, signal.SIGKILL)
os.waitpid(head.watchdog_pid, 0)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    watchdog, *pids = (int(word) for word in done.stdout.split())
    assert not alive(watchdog) and len(pids) == 2 and all(alive(pid) for pid in pids)
    gc = subprocess.run([PYTHON, "-m", "supervisor", "gc", "--yes"], capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert "is dead" in gc.stdout, gc.stdout
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=20)
    assert list_runs() == []


def test_what_the_gpus_list_is_read_before_the_first_spawn(runs_dir: Path) -> None:
    """The release wait tells the run's GPU processes from those listed before it (another pid namespace):
    the head start reads that list before it spawns anything."""
    node = FakeInventory(2, processes=[GpuProcess(1, os.getpid(), 10**9)])
    topology = sv.Topology(name="g", services=[sv.Service(name="s", command=EARLY, gpus=1)])
    plan = make_plan(topology, runs_dir=runs_dir, gpus=node)
    with HeadStart.begin(plan, node) as head:
        assert head.gpus_before == frozenset({(1, os.getpid())})
        assert head.inventory is node and list(head.spawned) == ["s"]


def test_a_replica_asked_for_differently_than_started_is_started_again(runs_dir: Path) -> None:
    plan = make_plan(_topology(), runs_dir=runs_dir)
    replica = plan.service("root").replicas[0]
    with HeadStart.begin(plan) as head:
        early = head.spawned[replica.name]
        env = {**os.environ, **replica.env, "TOPOVISOR_RUN_ID": plan.run_id, "TOPOVISOR_REPLICA": replica.name}
        process = head.launch(replica.argv, env, replica.cwd)  # no PYTHONUNBUFFERED: not what was started
        try:
            assert process.pid != early and not alive(early)
        finally:
            process.signal_group(signal.SIGKILL)
            assert isinstance(process, ChildProcess)
            process.popen.wait(10)
            os.close(process.output_fd)


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_listening_port_is_seen_without_scanning_processes(family: socket.AddressFamily, host: str) -> None:
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        port = listener.getsockname()[1]
        assert not _maybe_listening([port])  # bound, not listening
        listener.listen()
        assert _maybe_listening([port])
    assert not _maybe_listening([port])


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_free_port_is_known_free_without_the_kernel_socket_tables(
    family: socket.AddressFamily, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading /proc/net/tcp{,6} cost 7 ms per launch here (in the path to ready), and off Linux they do
    not exist, so every launch fell back to scanning every process: a free port needs neither."""
    monkeypatch.setattr(_preflight, "_TCP_TABLES", ("/nonexistent/tcp", "/nonexistent/tcp6"))
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        port = listener.getsockname()[1]
        listener.listen()
        assert _maybe_listening([port])  # taken, and the tables cannot say otherwise
    assert not _maybe_listening([port])
