"""What a fresh process loads: benchmark scripts start the library and the CLI again and again, so the
heavy dependencies load only when a run needs them (see benchmarks/bench_startup.py for the timings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .helpers import wait_until

HEAVY = ("httpx", "h11", "psutil", "yaml", "cattrs", "rich", "pynvml", "amdsmi")


def _loaded(code: str) -> set[str]:
    """Top-level module names (ours in full) that ``code`` leaves in a fresh interpreter's sys.modules."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    names = json.loads(done.stdout.splitlines()[-1])
    return {name if name.startswith("supervisor") else name.split(".")[0] for name in names}


def test_import_supervisor_launch_loads_no_heavy_dependency() -> None:
    loaded = _loaded("import supervisor; supervisor.launch")
    assert "supervisor._runtime.runner" in loaded  # the probe saw the attribute's module load at all
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "supervisor._runtime.group" not in loaded  # the runtime loads on the first launch


def test_a_spec_loads_no_http_client_and_no_yaml() -> None:
    loaded = _loaded("import supervisor; supervisor.Topology; supervisor.Service; supervisor.HttpCheck")
    assert "supervisor._spec.model" in loaded
    assert loaded.isdisjoint({"httpx", "h11", "yaml", "rich", "pynvml"}), sorted(loaded & set(HEAVY))


#: what ``supervisor run`` must not have imported when its first child starts: the event loop and the
#: runtime load while that child already runs (``_runtime.headstart``)
NOT_BEFORE_THE_FIRST_SPAWN = (
    "asyncio",
    "anyio",
    "ssl",
    "cattrs",
    "httpx",
    "psutil",
    "rich",
    "pynvml",
    "supervisor._runtime.group",
    "supervisor._events",
    "supervisor._cli.console",
    "supervisor._records.record",
)

_FIRST_SPAWN_PROBE = """
import json, subprocess, sys
from pathlib import Path
popen_init = subprocess.Popen.__init__
seen = Path(sys.argv.pop(1))

def spy(self, args, *rest, **options):
    first = args[0] in ("sh", "/bin/sh") and not seen.exists()  # the first child (or its cgroup entry), not the watchdog
    if first:
        seen.write_text(json.dumps(sorted(sys.modules)))
    popen_init(self, args, *rest, **options)
    if first:
        seen.with_suffix(".pid").write_text(str(self.pid))

subprocess.Popen.__init__ = spy
from supervisor._entry import main
sys.exit(main())
"""


def _first_spawn(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[set[str], Path, int]:
    """``supervisor run`` of a one-service file under the spy: the modules loaded at its first spawn, the
    run dir, and the pid the spy saw spawned."""
    work = tmp_path / name
    work.mkdir()
    seen, topology = work / "modules.json", tmp_path / "t.yaml"
    if not topology.exists():
        topology.write_text("name: t\nservices:\n  first:\n    command: [sh, -c, 'exec sleep 60']\n")
    argv = [sys.executable, "-c", _FIRST_SPAWN_PROBE, str(seen), "run", str(topology)]
    process = subprocess.Popen([*argv, "--runs-dir", str(work / "runs"), "-q"], stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: seen.exists() or process.poll() is not None, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert seen.exists(), stderr.decode()
    assert process.returncode == 128 + signal.SIGTERM
    loaded = {name if name.startswith("supervisor") else name.split(".")[0] for name in json.loads(seen.read_text())}
    (run_dir,) = (work / "runs").iterdir()
    return loaded, run_dir, int(seen.with_suffix(".pid").read_text())


def test_supervisor_run_spawns_its_first_child_before_the_runtime_is_imported(tmp_path: Path) -> None:
    """A fresh ``supervisor run`` reaches its first child fast because nothing heavy comes first: this
    fails when one of them sneaks back onto the path before the first spawn. The run then adopts that
    very process (one spawn, its pid in the events), rather than starting the service again. The same
    file run again is read from the document cache: not even PyYAML loads before its first spawn."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for attempt, parsed in (("first", True), ("again", False)):
        loaded, run_dir, pid = _first_spawn(tmp_path, attempt, env)
        assert "supervisor._runtime.headstart" in loaded and "supervisor._spec.load" in loaded  # the right moment
        assert loaded.isdisjoint(NOT_BEFORE_THE_FIRST_SPAWN), sorted(loaded & set(NOT_BEFORE_THE_FIRST_SPAWN))
        assert ("yaml" in loaded) is parsed, attempt
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        assert [e["pid"] for e in events if e["event"] == "spawned"] == [pid]
