"""Nothing of a contained run escapes: children that scrub their environment, leave their session and
double-fork (as SGLang's schedulers and vLLM's engine cores do, without even the run's mark) die with the
run: at teardown, when the supervisor is SIGKILLed (its watchdog sweeps the cgroup), and when supervisor
and watchdog are both SIGKILLed (``gc --yes`` reads the cgroup from the records); and so do escapees made
while the replica is being stopped. Each in both cgroup modes this machine offers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
from supervisor import read_summary
from supervisor._host.cgroupfs import CgroupHost

from ..helpers import PROGRAMS, PYTHON, alive, run_detached, supervisor_cli, wait_until

pytestmark = pytest.mark.anyio


def _usable(mode: str) -> str | None:
    host = CgroupHost.read()
    hierarchy = host.unified if mode == "cgroup2" else host.v1.get("freezer")
    if hierarchy is None:
        return f"no {mode} hierarchy is mounted here"
    return hierarchy.why_unusable(procs_file="cgroup.procs")


MODES = [
    pytest.param(mode, marks=pytest.mark.skipif(_usable(mode) is not None, reason=f"{mode}: {_usable(mode)}"))
    for mode in ("cgroup2", "freezer")
]


def escapee(pids: Path, *, loop: bool = False) -> sv.Service:
    argv = [PYTHON, str(PROGRAMS / "escapee.py"), "--pids", str(pids), *(["--loop"] if loop else [])]
    return sv.Service("app", argv, ready=sv.LogCheck("escapee ready"), stop=sv.StopPolicy(grace_seconds=0.5))


def topology_file(tmp_path: Path, mode: str, *, loop: bool = False) -> Path:
    path = tmp_path / "escapes.yaml"
    argv = [PYTHON, str(PROGRAMS / "escapee.py"), "--pids", str(tmp_path / "pids"), *(["--loop"] if loop else [])]
    path.write_text(
        f"name: escapes\ncontainment: {mode}\nservices:\n  app:\n    command: {json.dumps(argv)}\n"
        "    ready: {log: escapee ready}\n    stop: {grace: 500ms}\n"
    )
    return path


def escaped(pids: Path) -> list[int]:
    return [int(p) for p in pids.read_text().split()] if pids.exists() else []


@pytest.mark.parametrize("mode", MODES)
async def test_escapees_die_at_teardown_and_the_cgroup_goes(tmp_path: Path, runs_dir: Path, mode: str) -> None:
    pids = tmp_path / "pids"
    topology = sv.Topology("escapes", [escapee(pids)], containment=mode)
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        assert group.containment == mode and group.cgroup is not None
        cgroup = group.cgroup
        [child] = escaped(pids)
        assert alive(child) and os.getsid(child) != os.getsid(group["app"].pids[0])  # out of its session
        assert b"TOPOVISOR_RUN_ID" not in Path(f"/proc/{child}/environ").read_bytes()  # and unmarked
        assert child in [int(p) for p in (cgroup / "app" / "cgroup.procs").read_text().split()]
    assert not alive(child)
    assert not cgroup.exists()
    summary = read_summary(group.run_dir)
    assert summary.verified_no_leftovers and summary.containment == mode


@pytest.mark.parametrize("mode", MODES)
async def test_escapees_made_while_it_is_stopped_die_too(tmp_path: Path, runs_dir: Path, mode: str) -> None:
    pids = tmp_path / "pids"
    topology = sv.Topology("escapes", [escapee(pids, loop=True)], containment=mode)
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        wait_until(lambda: len(escaped(pids)) >= 5, timeout=30, what="a few escapees")  # it is still making more
        cgroup = group.cgroup
    made = escaped(pids)
    assert len(made) >= 5 and not [p for p in made if alive(p)]
    assert cgroup is not None and not cgroup.exists()


@pytest.mark.parametrize("mode", MODES)
def test_the_watchdog_sweeps_the_cgroup_of_a_sigkilled_supervisor(tmp_path: Path, runs_dir: Path, mode: str) -> None:
    run_id, run_dir = run_detached(topology_file(tmp_path, mode), runs_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cgroup = Path(manifest["cgroup"])
    assert manifest["containment"] == mode and cgroup.name == f"topovisor-{run_id}"
    [child] = escaped(tmp_path / "pids")
    os.kill(manifest["supervisor_pid"], signal.SIGKILL)
    wait_until(lambda: not alive(child) and not cgroup.exists(), timeout=30, what="the watchdog's sweep")
    events = (run_dir / "events.jsonl").read_text()
    wait_until(lambda: "watchdog_sweep" in (run_dir / "events.jsonl").read_text(), timeout=30)
    sweep = [
        json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if "watchdog_sweep" in line
    ]
    assert child in sweep[0]["killed"] and not sweep[0]["survivors"], events


@pytest.mark.parametrize("mode", MODES)
def test_gc_empties_the_cgroup_when_supervisor_and_watchdog_both_died(
    tmp_path: Path, runs_dir: Path, private_state_dir: Path, mode: str
) -> None:
    run_id, run_dir = run_detached(topology_file(tmp_path, mode), runs_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cgroup = Path(manifest["cgroup"])
    index = json.loads((private_state_dir / "topovisor" / "index" / f"{run_id}.json").read_text())
    assert index["cgroup"] == str(cgroup) and index["containment"] == mode  # known before the first spawn
    supervisor_pid, watchdog = manifest["supervisor_pid"], index["watchdog_pid"]
    [child] = escaped(tmp_path / "pids")
    os.kill(supervisor_pid, signal.SIGSTOP)  # a live supervisor would replace a killed watchdog at once
    os.kill(watchdog, signal.SIGKILL)
    os.kill(supervisor_pid, signal.SIGKILL)
    wait_until(lambda: not alive(supervisor_pid) and not alive(watchdog), timeout=10)
    assert alive(child), "with both dead, the escapee lives on in the cgroup"
    listed = supervisor_cli("gc")
    assert listed.returncode == 0 and run_id in listed.stdout and alive(child)  # a dry run touches nothing
    result = supervisor_cli("gc", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not alive(child) and not cgroup.exists()
    summary = read_summary(run_dir)
    assert summary.outcome == "supervisor-died" and summary.ended_by == "gc" and summary.verified_no_leftovers


def test_marks_mode_is_the_fallback_and_says_so(tmp_path: Path, runs_dir: Path) -> None:
    """Forced by the option: no cgroup is made, the run says marks, and the hard tree of the orphan tests
    (children in and out of the group, a double-forked daemon: all carrying the mark) still dies."""
    path = tmp_path / "marks.yaml"
    argv = [PYTHON, str(PROGRAMS / "tree.py"), "--pids", str(tmp_path / "pids"), "--ignore-term", "--children", "1",
            "--setsid-children", "2", "--daemon"]  # fmt: skip
    path.write_text(
        f"name: marks\nservices:\n  tree:\n    command: {json.dumps(argv)}\n    ready: {{log: tree ready}}\n"
        "    stop: {grace: 300ms}\n"
    )
    result = supervisor_cli("run", "--containment", "marks", str(path), "--runs-dir", str(runs_dir), "--", "true")
    assert result.returncode == 0, result.stderr
    assert "containment: marks" in result.stderr and "cgroup" not in result.stdout
    [run_dir] = runs_dir.iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["cgroup"] is None
    assert read_summary(run_dir).containment == "marks"
    tree = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(tree) == 5 and not [p for p in tree if alive(p)]


def _read_only_cgroups(*mounts: str) -> list[str]:
    """A prefix that runs a command in a mount namespace where these cgroup filesystems are read-only, as in
    many containers (root, and unshare(1), are needed to make one)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("making a read-only cgroupfs needs root and unshare(1)")
    remounts = " && ".join(f"mount -o remount,bind,ro {m}" for m in mounts)
    return ["unshare", "-m", "sh", "-c", f'{remounts} && exec "$@"', "sh"]


def test_a_required_containment_that_cannot_be_had_is_exit_2_naming_why_and_how(tmp_path: Path) -> None:
    """A read-only cgroupfs: ``--containment cgroup2`` stops before anything starts, saying why and how."""
    unified = CgroupHost.read().unified
    if unified is None:
        pytest.skip("no cgroup v2 hierarchy here")
    path = tmp_path / "t.yaml"
    started = tmp_path / "started"
    path.write_text(f"name: t\nservices:\n  app:\n    command: [touch, {json.dumps(str(started))}]\n")
    argv = [*_read_only_cgroups(str(unified.mount)), PYTHON, "-m", "supervisor", "run", "--containment", "cgroup2",
            str(path), "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert result.returncode == 2, result.stderr
    assert "containment cgroup2 is not available" in result.stderr and "read-only" in result.stderr
    assert "systemd-run --user --scope -p Delegate=yes" in result.stderr and str(path) in result.stderr
    assert not started.exists()  # nothing started


def test_auto_falls_back_to_marks_and_says_why(tmp_path: Path, runs_dir: Path) -> None:
    host = CgroupHost.read()
    mounts = [str(h.mount) for h in (host.unified, host.v1.get("freezer")) if h is not None]
    if not mounts:
        pytest.skip("no cgroup hierarchy here: auto is marks anyway")
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nservices:\n  app:\n    command: [sleep, '30']\n")
    argv = [*_read_only_cgroups(*mounts), PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir),
            "--", "true"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    assert "containment: marks" in result.stderr and "read-only" in result.stderr


@pytest.mark.parametrize("mode", MODES)
async def test_an_exec_probe_s_escapee_dies_with_the_run(tmp_path: Path, runs_dir: Path, mode: str) -> None:
    """A readiness probe's child that scrubbed its environment, left its session and let go of the probe's
    output: neither mark, group nor pipe tie it to the run, but the run's probe cgroup does."""
    pids = tmp_path / "pids"
    probe = sv.ExecCheck([PYTHON, str(PROGRAMS / "probe_escapee.py"), "--pids", str(pids)])
    service = sv.Service("app", [PYTHON, "-c", "import time; time.sleep(300)"], ready=probe)
    async with sv.launch(sv.Topology("probes", [service], containment=mode), runs_dir=runs_dir) as group:
        [child] = escaped(pids)
        assert alive(child) and group.cgroup is not None
        assert child in [int(p) for p in (group.cgroup / "@probes" / "cgroup.procs").read_text().split()]
        cgroup = group.cgroup
    assert not alive(child) and not cgroup.exists()
