"""The pytest plugin: declared as a ``pytest11`` entry point, light to import, and its ``launch_topology``
fixture works in real pytest sessions (run here as subprocesses), under pytest-xdist too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor._host.proctable import marked_processes

from ..helpers import alive

ROOT = Path(__file__).parents[2]


def _entry_points() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"]["pytest11"])


def test_the_plugin_is_a_pytest11_entry_point_and_imports_nothing_heavy() -> None:
    """Installed, the plugin loads in every pytest session of the environment: it must cost nothing there."""
    assert _entry_points() == {"topovisor": "supervisor._pytest_plugin"}
    code = (
        "import sys, pytest; before = set(sys.modules); import supervisor._pytest_plugin; "
        "print(sorted(m for m in ('anyio', 'httpx', 'psutil', 'cattrs', 'yaml', 'attrs') if m in set(sys.modules) - before))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"


def _session(tmp_path: Path, test_source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on one test file in a fresh directory (no conftest), with the plugin found exactly as an
    install finds it: through an entry point made from pyproject's table."""
    site = tmp_path / "site"
    info = site / "topovisor_plugin_check-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: topovisor-plugin-check\nVersion: 0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in _entry_points().items())
    (info / "entry_points.txt").write_text("[pytest11]\n" + lines)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_embedded.py").write_text(textwrap.dedent(test_source))
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)])
    env["OUT"] = str(tmp_path / "out")
    env["COLUMNS"] = "400"  # the short summary keeps whole messages
    (tmp_path / "out").mkdir()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "--rootdir", str(project)]
    return subprocess.run(
        [*command, *args, "test_embedded.py"], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def _records(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(path.read_text()) for path in sorted((tmp_path / "out").iterdir())]


TWO_LAUNCHES = """
    import json, os, sys
    import supervisor as sv

    YAML = '''
    name: fixture
    services:
      web:
        command: ['{python}', -c, "import time; print('${greeting}', flush=True); time.sleep(60)"]
        ports: [port]
        ready: {log: '${greeting}'}
    '''

    def record(name, group):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        pids = [p for s in group for p in s.pids]
        with open(os.path.join(os.environ["OUT"], name), "w") as f:
            json.dump({"worker": worker, "run_id": group.run_id, "pids": pids}, f)

    def test_from_a_yaml_file(launch_topology, tmp_path):
        path = tmp_path / "t.yaml"
        path.write_text(YAML)
        group = launch_topology(path, overrides={"greeting": "hello"})
        assert group["web"].url.startswith("http://127.0.0.1:")
        record("yaml", group)

    def test_from_a_topology(launch_topology):
        code = "import time; print('up', flush=True); time.sleep(60)"
        service = sv.Service(name="web", command=[sys.executable, "-c", code], replicas=2, ready=sv.LogCheck("up"))
        group = launch_topology(sv.Topology(name="code", services=[service]))
        group.mark("in the test")
        record("topology", group)
"""


def test_the_fixture_under_xdist_gives_each_test_its_own_run_and_leaves_nothing(tmp_path: Path) -> None:
    """``-n 2``: two tests on two workers each launch a topology (from YAML with overrides, and from code);
    both pass, their runs differ, and after the session no process of either run is alive."""
    pytest.importorskip("xdist")
    # pytest-benchmark, where installed, warns that xdist disables it: not our warning
    result = _session(tmp_path, TWO_LAUNCHES, "-n", "2", "-p", "no:benchmark")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
    records = _records(tmp_path)
    assert len(records) == 2
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    assert len({r["run_id"] for r in records}) == 2
    pids = [p for r in records for p in r["pids"]]  # type: ignore[attr-defined]
    assert len(pids) == 3 and not any(alive(p) for p in pids)
    assert not any(marked_processes(str(r["run_id"])) for r in records)


MODULE_SHARED = """
    import json, os, sys, time
    import pytest
    import supervisor as sv

    CODE = "import time; print('up', flush=True); time.sleep(60)"

    @pytest.fixture(scope="module")
    def shared(tmp_path_factory):
        topology = sv.Topology(name="shared", services=[sv.Service(name="web", command=[sys.executable, "-c", CODE], ready=sv.LogCheck("up"))])
        with sv.launch_sync(topology, runs_dir=tmp_path_factory.mktemp("runs")) as group:
            yield group

    @pytest.mark.parametrize("n", [1, 2])
    def test_uses_the_shared_run(shared, n):
        with open(os.path.join(os.environ["OUT"], f"shared{n}"), "w") as f:
            json.dump({"run_id": shared.run_id, "pids": shared["web"].pids}, f)

    def test_dies_in_the_test(launch_topology):
        group = launch_topology(sv.Topology(name="dies", services=[sv.Service(name="web", command=[sys.executable, "-c", CODE], ready=sv.LogCheck("up"))]))
        with open(os.path.join(os.environ["OUT"], "dies"), "w") as f:
            json.dump({"run_id": group.run_id, "pids": group["web"].pids}, f)
        os.kill(group["web"].pids[0], 9)
        group.wait(timeout_seconds=30)

    def test_dies_unseen(launch_topology):
        group = launch_topology(sv.Topology(name="unseen", services=[sv.Service(name="web", command=[sys.executable, "-c", CODE], ready=sv.LogCheck("up"))]))
        with open(os.path.join(os.environ["OUT"], "unseen"), "w") as f:
            json.dump({"run_id": group.run_id, "pids": group["web"].pids}, f)
        os.kill(group["web"].pids[0], 9)
        deadline = time.monotonic() + 30
        while group.failure is None and time.monotonic() < deadline:  # no call that would raise it
            time.sleep(0.01)
"""


def test_a_module_shares_one_run_and_a_failure_in_a_test_is_reported(tmp_path: Path) -> None:
    """The documented module-scoped fixture over ``launch_sync`` gives two tests the same run; a service
    that dies during a test is reported once: the test fails with ``ServiceFailed`` if a call raised it,
    else the teardown errors with it; nothing is left either way."""
    result = _session(tmp_path, MODULE_SHARED)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 3 passed, 1 error" in result.stdout, result.stdout
    assert "FAILED test_embedded.py::test_dies_in_the_test - supervisor._errors.ServiceFailed" in result.stdout
    assert "ERROR test_embedded.py::test_dies_unseen - supervisor._errors.ServiceFailed" in result.stdout
    assert "ERROR test_embedded.py::test_dies_in_the_test" not in result.stdout, result.stdout
    records = {path.name: json.loads(path.read_text()) for path in (tmp_path / "out").iterdir()}
    assert records["shared1"] == records["shared2"]
    for record in records.values():
        assert not any(alive(p) for p in record["pids"])
        assert not marked_processes(record["run_id"])
