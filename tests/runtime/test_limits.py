"""Limits per service (``resources: {memory_max, cpu_max, pids_max}``): set on each replica's cgroup where
the host has the controller (v2, else v1), refused before anything starts where it has not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._host.cgroupfs import CgroupHost, Hierarchy
from supervisor._host.containment import ContainmentUnavailable, LimitUnavailable, RunContainment
from supervisor._host.resources import CgroupCounters

from ..helpers import ROOT

PYTHON = sys.executable
_IDLE = "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)\n"


def _limits_here() -> str | None:
    """Why limits cannot be tested on this machine (not root, no cgroup for them), else None."""
    try:
        RunContainment.open("probe-limits", limited=["memory", "cpu", "pids"]).remove()
    except (LimitUnavailable, ContainmentUnavailable) as exc:
        return str(exc)
    return None


_WHY_NOT = _limits_here()
needs_limits = pytest.mark.skipif(_WHY_NOT is not None, reason=f"no cgroup limits here: {_WHY_NOT}")


@needs_limits
@pytest.mark.anyio
async def test_pids_max_stops_forks_past_it(runs_dir: Path) -> None:
    """With pids_max 4, a replica that tries to start 8 children gets some refused (EAGAIN)."""
    code = (
        "import subprocess\n"
        "started, refused = [], 0\n"
        "for _ in range(8):\n"
        "    try: started.append(subprocess.Popen(['sleep', '60']))\n"
        "    except OSError: refused += 1\n"
        "print('started %d refused %d' % (len(started), refused), flush=True)\n"
        "for p in started: p.kill(); p.wait()\n"
        "print('up', flush=True)\n"
        "import time\nwhile True: time.sleep(1)\n"
    )
    service = sv.Service(name="w", command=[PYTHON, "-c", code], ready=sv.LogCheck("up"), resources={"pids_max": 4})
    async with sv.launch(sv.Topology(name="pids", services=[service]), runs_dir=runs_dir) as group:
        line = next(line for line in group["w"].replicas[0].log_tail(20) if line.startswith("started"))
    started, refused = int(line.split()[1]), int(line.split()[3])
    assert refused > 0 and started < 8, line


@needs_limits
@pytest.mark.anyio
async def test_cpu_and_memory_limits_are_written_to_the_replicas_cgroup(runs_dir: Path) -> None:
    """cpu_max 2 is a quota of two periods per period; memory_max is the byte count, on every replica."""
    service = sv.Service(
        name="w",
        command=[PYTHON, "-c", _IDLE],
        ready=sv.LogCheck("up"),
        replicas=2,
        resources={"cpu_max": 2, "memory_max": "300MiB"},
    )
    async with sv.launch(sv.Topology(name="cpu", services=[service]), runs_dir=runs_dir) as group:
        for replica in group["w"].replicas:
            cgroup = group._run.cgroup_of(replica.name)
            assert cgroup is not None
            directories = [cgroup.path, *cgroup.extras]
            cpu = [(d / "cpu.max").read_text().split() for d in directories if (d / "cpu.max").exists()]
            cpu += [[(d / f).read_text().strip() for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us")]
                    for d in directories if (d / "cpu.cfs_quota_us").exists()]  # fmt: skip
            assert cpu == [["200000", "100000"]]
            memory = [(d / f).read_text().strip() for d in directories for f in ("memory.max", "memory.limit_in_bytes")
                      if (d / f).exists()]  # fmt: skip
            assert [int(m) for m in memory] == [300 * 1024**2]
            assert CgroupCounters(cgroup.path, cgroup.extras).memory is not None  # a kernel counter measures it


@pytest.mark.anyio
async def test_a_limit_in_marks_mode_is_refused_before_anything_starts(runs_dir: Path, tmp_path: Path) -> None:
    """``containment: marks`` has no cgroup to set a limit on: ConfigError naming the service and field."""
    marker = tmp_path / "started"
    service = sv.Service(name="w", command=["touch", str(marker)], resources={"memory_max": "64GB"})
    with pytest.raises(sv.ConfigError, match=r"service 'w' resources.memory_max: cannot be set here: .*marks"):
        async with sv.launch(sv.Topology(name="m", services=[service], containment="marks"), runs_dir=runs_dir):
            pass
    assert not marker.exists()


def test_the_cli_exits_2_for_a_limit_it_cannot_set(tmp_path: Path, runs_dir: Path) -> None:
    """Bad input before anything starts: exit 2, one line naming the file, the service and the field."""
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\ncontainment: marks\nservices:\n  w:\n    command: [sleep, '60']\n    resources: {pids_max: 64}\n"
    )
    done = subprocess.run(
        [PYTHON, "-m", "supervisor", "run", str(path), "--runs-dir", str(runs_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert "t.yaml" in done.stderr and "service 'w' resources.pids_max" in done.stderr


def _fake_host(tmp_path: Path, controllers: str) -> CgroupHost:
    """A unified hierarchy in a temporary tree whose own cgroup offers ``controllers``, no v1 at all."""
    own = tmp_path / "unified" / "sup"
    own.mkdir(parents=True)
    for name in ("cgroup.procs", "cgroup.subtree_control"):
        (own / name).write_text("")
    (own / "cgroup.controllers").write_text(controllers)
    return CgroupHost(Hierarchy(tmp_path / "unified", "/", "/sup", read_only=False))


def test_a_controller_missing_from_both_hierarchies_is_named(tmp_path: Path) -> None:
    """A unified layout without the memory controller and no v1 memory hierarchy: the refusal says so."""
    host = _fake_host(tmp_path, "cpu pids")
    with pytest.raises(LimitUnavailable, match="the memory controller is not enabled in the cgroup v2 hierarchy"):
        RunContainment.open("r1", "cgroup2", host=host, limited=["memory"])
    assert not (tmp_path / "unified" / "sup" / "topovisor-r1").exists()  # nothing is left behind


def test_controllers_the_unified_hierarchy_has_are_enabled_for_the_replicas(tmp_path: Path) -> None:
    """On a v2 host (as a systemd GPU node) the limits' controllers are enabled in the supervisor's own
    cgroup and in the run's, so each replica's cgroup gets memory.max, cpu.max and pids.max."""
    host = _fake_host(tmp_path, "cpu io memory pids")
    contained = RunContainment.open("r2", "cgroup2", host=host, limited=["memory", "cpu", "pids"])
    assert contained.mode == "cgroup2" and contained.extras == {}
    own = tmp_path / "unified" / "sup"
    assert (own / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (own / "topovisor-r2" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"


def test_limits_are_read_from_yaml_and_a_bad_one_names_file_service_and_field(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "name: t\nservices:\n  w:\n    command: [x]\n    resources: {memory_max: 64GB, cpu_max: 4, pids_max: 4096}\n"
    )
    limits = sv.load(path).services[0].resources
    assert limits == sv.ResourceLimits(memory_max_bytes=64 * 10**9, cpu_max=4.0, pids_max=4096)
    for bad, said in (
        ("{memory_max: lots}", "field 'resources.memory_max': expected a size"),
        ("{cpu_max: many}", "field 'resources.cpu_max': expected a number of cores"),
        ("{pid_max: 3}", "pid_max"),
        ("{pids_max: 0}", "field 'resources.pids_max': must be 1 or more"),
    ):
        path.write_text(f"name: t\nservices:\n  w:\n    command: [x]\n    resources: {bad}\n")
        with pytest.raises(sv.ConfigError) as caught:
            sv.make_plan(sv.load(path), runs_dir=tmp_path / "runs")
        assert "t.yaml" in str(caught.value) and "service 'w'" in str(caught.value) and said in str(caught.value)


def _memory_limit(directories: list[Path]) -> list[int]:
    files = [d / f for d in directories for f in ("memory.max", "memory.limit_in_bytes") if (d / f).exists()]
    return [int(f.read_text().strip()) for f in files]


@needs_limits
@pytest.mark.anyio
async def test_a_rolling_restart_onto_new_limits_sets_them_and_one_it_cannot_set_stops_nothing(runs_dir: Path) -> None:
    """A rolled spec's ``resources`` are what the restarted replicas run under (the cgroup kept the old
    ones), a limit taken away is lifted, and a rollout asking for a controller the run has no cgroup of is
    refused before any replica stops."""
    import attrs

    service = sv.Service(
        name="w", command=[PYTHON, "-c", _IDLE], ready=sv.LogCheck("up"), resources={"memory_max": "300MiB"}
    )
    async with sv.launch(sv.Topology(name="roll", services=[service]), runs_dir=runs_dir) as group:
        cgroup = group._run.cgroup_of("w")
        assert cgroup is not None
        directories = [cgroup.path, *cgroup.extras]
        assert _memory_limit(directories) == [300 * 1024**2]
        await group.rolling_restart("w", service_spec=attrs.evolve(service, resources={"memory_max": "200MiB"}))
        assert _memory_limit(directories) == [200 * 1024**2]
        pid = group["w"].pids[0]
        if "pids" not in {*group._run.containment.extras, *group._run.containment.enabled()}:
            with pytest.raises(sv.ConfigError, match=r"service 'w' resources.pids_max: cannot be set here"):
                await group.rolling_restart("w", service_spec=attrs.evolve(service, resources={"pids_max": 64}))
            assert group["w"].pids == [pid]  # nothing stopped
        await group.rolling_restart("w", service_spec=attrs.evolve(service, resources=None))
        assert all(limit > 1024**4 for limit in _memory_limit(directories))  # lifted
        assert group["w"].pids != [pid]
