"""Run records: the per-user index, resolving a run by name, leftovers (never a reused pid), stopping a run
whose supervisor is dead or alive, gc candidates, and who holds a port."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import psutil
import pytest

from supervisor._records.reclaim import STOP_EVENT, stop_run
from supervisor._records.record import (
    Manifest,
    StopEntry,
    UnknownRun,
    gc_candidates,
    leftovers,
    list_runs,
    load_run,
    port_owner,
    register_run,
    resolve_run,
    state_dir,
    unrecorded_marks,
    unregister_run,
)

from ..fakerun import POLITE, STUBBORN, Reaper, read_events, replica_entry, write_run
from ..helpers import PROGRAMS, PYTHON, alive, wait_until

ROOT = Path(__file__).parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_index_register_list_unregister_with_private_modes(runs_dir: Path, private_state_dir: Path) -> None:
    """Entries are private files in a 0700 directory; a run without a manifest still lists."""
    path = register_run("20250101-000000-demo-abc123", runs_dir / "x", supervisor_pid=os.getpid(), watchdog_pid=None)
    assert state_dir() == private_state_dir / "topovisor"
    assert mode(private_state_dir / "topovisor") == 0o700 and mode(path.parent) == 0o700 and mode(path) == 0o600
    (record,) = list_runs()
    assert record.run_id == "20250101-000000-demo-abc123" and record.indexed
    assert record.supervisor_alive and record.supervisor_pid == os.getpid()
    assert record.phase == "unknown" and record.replicas() == [] and record.manifest == Manifest()
    assert unregister_run(record.run_id) and not unregister_run(record.run_id)
    assert list_runs() == []


def test_supervisor_alive_only_with_matching_create_time(runs_dir: Path) -> None:
    """Our own pid with a create time off by a second is a different (reused) process."""
    path = register_run("run-a", runs_dir / "run-a", supervisor_pid=os.getpid())
    entry = json.loads(path.read_text())
    entry["supervisor_create_time"] -= 1.0
    path.write_text(json.dumps(entry))
    (record,) = list_runs()
    assert not record.supervisor_alive


def test_resolve_run_by_id_prefix_suffix_name_and_directory(runs_dir: Path) -> None:
    """Unique prefixes and suffixes resolve; ambiguity and no match name the candidates."""
    for run_id in ("20250101-000000-demo-aaa111", "20250101-000001-demo-bbb222", "20250102-000000-other-ccc333"):
        run_dir = write_run(runs_dir, run_id, {}, name=run_id.split("-")[2])
        register_run(run_id, run_dir, supervisor_pid=os.getpid())
    assert resolve_run("20250101-000000-demo-aaa111").run_id.endswith("aaa111")
    assert resolve_run("bbb222").run_id == "20250101-000001-demo-bbb222"
    assert resolve_run("20250102").run_id == "20250102-000000-other-ccc333"
    assert resolve_run("other").run_id == "20250102-000000-other-ccc333"
    assert resolve_run(str(runs_dir / "20250101-000000-demo-aaa111")).run_id.endswith("aaa111")
    with pytest.raises(UnknownRun, match=r"'20250101' matches 2 runs: .*aaa111.*bbb222") as ambiguous:
        resolve_run("20250101")
    assert len(ambiguous.value.candidates) == 2
    with pytest.raises(UnknownRun, match=r"no run matches 'zzz'; recorded runs: .*ccc333"):
        resolve_run("zzz")
    with pytest.raises(UnknownRun, match="'demo' matches 2 runs"):
        resolve_run("demo")


def test_an_unknown_run_names_the_newest_few_recorded_runs(runs_dir: Path) -> None:
    """On a box that records hundreds of runs, the error stays one short line."""
    for number in range(12):
        run_id = f"20250101-0000{number:02d}-demo-{number:06d}"
        register_run(run_id, write_run(runs_dir, run_id, {}, name="demo"), supervisor_pid=os.getpid())
    with pytest.raises(UnknownRun) as caught:
        resolve_run("zzz")
    message = str(caught.value)
    assert message.endswith("000007, 20250101-000008-demo-000008, 20250101-000009-demo-000009, "
                            "20250101-000010-demo-000010, 20250101-000011-demo-000011 and 7 older "
                            "(supervisor ps lists them)")  # fmt: skip
    assert "000006" not in message and len(caught.value.candidates) == 12


def test_leftovers_never_include_a_recorded_pid_whose_create_time_differs(reaper: Reaper, runs_dir: Path) -> None:
    """An unmarked process at a recorded pid is ours only if it started when the record says."""
    bystander = reaper.start([PYTHON, "-c", STUBBORN])
    real_time = psutil.Process(bystander.pid).create_time()
    run_dir = runs_dir / "run-reuse"
    for create_time, expected in ((real_time - 3600.0, []), (real_time, [bystander.pid])):
        entry = replica_entry("web", bystander, run_dir, create_time=create_time)
        record = load_run(write_run(runs_dir, "run-reuse", {"web": ([], [entry])}))
        assert [p.pid for p in leftovers(record)] == expected


def test_leftovers_include_marked_processes_outside_the_record(reaper: Reaper, runs_dir: Path) -> None:
    """The mark finds processes the manifest never heard of (a setsid grandchild, a late spawn)."""
    stray = reaper.start_replica("run-marked", "web")
    record = load_run(write_run(runs_dir, "run-marked", {"web": ([], [])}))
    assert [p.pid for p in leftovers(record)] == [stray.pid]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_stop_run_of_a_dead_supervisor_in_reverse_dependency_order(
    reaper: Reaper, runs_dir: Path, tmp_path: Path
) -> None:
    """frontend -> api -> db: stopped frontend first, db last; stubborn trees get SIGKILL; nothing is left;
    the manifest says stopped, the index forgets the run, events.jsonl says what happened."""
    run_id = "run-dead"
    stop_log = tmp_path / "stop.log"
    env = {"STOP_LOG": str(stop_log)}
    db = reaper.start_replica(run_id, "db", POLITE, extra_env=env)
    api = [reaper.start_replica(run_id, f"api.{i}", POLITE, extra_env=env) for i in range(2)]
    tree_pids = tmp_path / "tree.pids"
    frontend = reaper.start_tree(run_id, "frontend", tree_pids)
    run_dir = runs_dir / run_id
    services = {
        "db": ([], [replica_entry("db", db, run_dir)]),
        "api": (["db"], [replica_entry(f"api.{i}", p, run_dir) for i, p in enumerate(api)]),
        "frontend": (
            ["api"],
            [replica_entry("frontend", frontend, run_dir, stop=StopEntry("SIGTERM", 0.2))],
        ),
    }
    write_run(runs_dir, run_id, services)
    register_run(run_id, run_dir, supervisor_pid=os.getpid() + 100000)  # nobody: dead
    (record,) = list_runs()
    assert not record.supervisor_alive and record.stop_order() == [["frontend"], ["api"], ["db"]]
    pids = [int(x) for x in tree_pids.read_text().split()] + [db.pid] + [p.pid for p in api]
    assert sorted(p.pid for p in leftovers(record)) == sorted(pids)

    report = await stop_run(record)

    assert report.ok and report.remaining == () and not report.supervisor_was_alive
    assert set(report.signalled) == set(pids)
    assert set(report.killed) == set(pids[:6])  # the tree ignores SIGTERM; the polite ones did not need it
    assert all(not alive(pid) for pid in pids)
    lines = stop_log.read_text().split()
    assert sorted(lines[:2]) == ["api.0", "api.1"] and lines[2:] == ["db"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["phase"] == "stopped" and manifest["leftovers"] == []
    assert {r["state"] for s in manifest["services"].values() for r in s["replicas"]} == {"stopped"}
    assert list_runs() == []
    (event,) = [e for e in read_events(run_dir) if e["event"] == STOP_EVENT]
    assert event["remaining"] == [] and set(event["killed"]) == set(pids[:6])


@pytest.mark.anyio
async def test_stop_run_never_signals_a_reused_leader_pid(reaper: Reaper, runs_dir: Path) -> None:
    """The record's leader pid now belongs to an unrelated process (wrong create time): it is left alone."""
    bystander = reaper.start([PYTHON, "-c", STUBBORN])
    marked = reaper.start_replica("run-reused", "web")
    run_dir = runs_dir / "run-reused"
    stale = psutil.Process(bystander.pid).create_time() - 3600.0
    write_run(runs_dir, "run-reused", {"web": ([], [replica_entry("web", bystander, run_dir, create_time=stale)])})
    report = await stop_run(load_run(run_dir))
    assert report.ok and report.killed == (marked.pid,)
    assert alive(bystander.pid) and not alive(marked.pid)


@pytest.mark.anyio
async def test_stop_run_asks_a_live_supervisor(runs_dir: Path, tmp_path: Path) -> None:
    """A real ``supervisor run`` in another process: SIGTERM, its own teardown, nothing left."""
    topology = tmp_path / "t.yaml"
    tree = f"[{PYTHON}, {PROGRAMS / 'tree.py'}, --pids, {tmp_path / 'pids'}, --setsid-children, '1']"
    topology.write_text(f"name: live\nservices:\n  engine:\n    command: {tree}\n    ready: {{log: tree ready}}\n")
    popen = subprocess.Popen([PYTHON, "-m", "supervisor", "run", str(topology), "--runs-dir", str(runs_dir), "-q"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: runs_dir.is_dir() and any(runs_dir.iterdir()), timeout=30)
        (run_dir,) = runs_dir.iterdir()
        wait_until(lambda: load_run(run_dir).phase == "running", timeout=30)
        record = load_run(run_dir)
        assert record.supervisor_alive and record.supervisor_pid == popen.pid
        pids = [int(x) for x in (tmp_path / "pids").read_text().split()]
        report = await stop_run(record)
        assert report.ok and report.supervisor_was_alive and not report.supervisor_killed
        assert report.signalled == () and report.killed == ()
        assert popen.wait(10) == 128 + 15
        assert all(not alive(pid) for pid in pids)
        assert json.loads((run_dir / "manifest.json").read_text())["phase"] == "stopped"
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)


def test_gc_candidates_dead_with_leftovers_and_stale_entries_not_live_runs(reaper: Reaper, runs_dir: Path) -> None:
    """Dead + leftovers and dead + nothing (stale) are candidates; a live supervisor's run is not."""
    orphan = reaper.start_replica("run-orphan", "web")
    run_dir = runs_dir / "run-orphan"
    write_run(runs_dir, "run-orphan", {"web": ([], [replica_entry("web", orphan, run_dir)])})
    register_run("run-orphan", run_dir, supervisor_pid=os.getpid() + 100000)
    register_run("run-stale", runs_dir / "run-stale", supervisor_pid=os.getpid() + 100000)
    me = psutil.Process()
    write_run(runs_dir, "run-live", {}, supervisor=(me.pid, me.create_time()))
    register_run("run-live", runs_dir / "run-live", supervisor_pid=me.pid)
    assert sorted(r.run_id for r in gc_candidates()) == ["run-orphan", "run-stale"]
    stray = reaper.start_replica("run-unknown", "web")
    unrecorded = unrecorded_marks()  # (other sessions' leaked runs may show up here too)
    assert unrecorded["run-unknown"] == [stray.pid] and "run-orphan" not in unrecorded


def test_port_owner_names_pid_command_and_run(reaper: Reaper, runs_dir: Path) -> None:
    """A marked child listening on 127.0.0.1: its pid, command line and (recorded) run; a free port: None."""
    server = (
        "import socket, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    reaper.watch_run("run-port")
    env = {**os.environ, "TOPOVISOR_RUN_ID": "run-port", "TOPOVISOR_REPLICA": "kv"}
    child = subprocess.Popen([PYTHON, "-c", server], env=env, stdout=subprocess.PIPE, start_new_session=True)
    reaper.popens.append(child)
    reaper.groups.append(child.pid)
    assert child.stdout is not None
    port = int(child.stdout.readline())
    write_run(runs_dir, "run-port", {})
    register_run("run-port", runs_dir / "run-port", supervisor_pid=os.getpid() + 100000)
    owner = port_owner(port)
    assert owner is not None
    assert owner.pid == child.pid and owner.address == "127.0.0.1" and "socket" in owner.cmdline[-1]
    assert owner.run_id == "run-port" and owner.replica == "kv" and owner.recorded
    assert f"pid {child.pid}" in owner.describe() and "supervisor stop run-port" in owner.describe()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert port_owner(free) is None


def test_state_dir_is_made_private_again(private_state_dir: Path) -> None:
    """A state dir left world-readable (by hand, an old version) is tightened on first use."""
    (private_state_dir / "topovisor").mkdir(parents=True, mode=0o755)
    os.chmod(private_state_dir / "topovisor", 0o755)
    assert mode(state_dir()) == 0o700


def test_list_runs_all_includes_finished_runs_in_the_default_runs_dir(private_state_dir: Path) -> None:
    """``ps --all``: a finished run is no longer indexed but its directory under the state dir remains."""
    write_run(state_dir() / "runs", "run-old", {}, phase="stopped")
    assert list_runs() == []
    (record,) = list_runs(include_finished=True)
    assert record.run_id == "run-old" and not record.indexed and record.phase == "stopped"


def test_a_recorded_cgroup_that_climbs_out_of_the_cgroup_filesystem_is_not_the_runs(tmp_path: Path) -> None:
    """gc kills what a recorded cgroup lists: a hand-edited path that leaves the cgroupfs by ``..`` for a
    directory of ordinary files (a ``cgroup.procs`` naming any pid) is never taken for the run's cgroup."""
    from supervisor._host.cgroupfs import CgroupHost
    from supervisor._records.index import _own_cgroups

    host = CgroupHost.read()
    mounts = [h.mount for h in (host.unified, *host.v1.values()) if h is not None]
    if not mounts:
        pytest.skip("no cgroup filesystem is mounted here")
    fake = tmp_path / "topovisor-r1"
    fake.mkdir()
    (fake / "cgroup.procs").write_text(f"{os.getpid()}\n")
    climbing = str(mounts[0]) + "/.." * (len(mounts[0].parts) - 1) + str(fake)
    assert Path(climbing).resolve() == fake.resolve()
    assert _own_cgroups("r1", [climbing]) == ()
    recorded = mounts[0] / "topovisor-r1"  # as a run records it: taken, whether or not it still exists
    assert _own_cgroups("r1", [str(recorded)]) == (recorded,)
