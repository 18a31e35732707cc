"""What a fresh process loads: benchmark scripts start the library and the CLI again and again, so the
heavy dependencies load only when a run needs them (see benchmarks/bench_startup.py for the timings)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("httpx", "h11", "psutil", "yaml", "cattrs", "rich", "pynvml")


def _loaded(code: str) -> set[str]:
    """Top-level module names (ours in full) that ``code`` leaves in a fresh interpreter's sys.modules."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    names = json.loads(done.stdout.splitlines()[-1])
    return {name if name.startswith("supervisor") else name.split(".")[0] for name in names}


def test_import_supervisor_launch_loads_no_heavy_dependency() -> None:
    loaded = _loaded("import supervisor; supervisor.launch")
    assert "supervisor._runner" in loaded  # the probe saw the attribute's module load at all
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "supervisor._group" not in loaded  # the runtime loads on the first launch


def test_a_spec_loads_no_http_client_and_no_yaml() -> None:
    loaded = _loaded("import supervisor; supervisor.Topology; supervisor.Service; supervisor.HttpCheck")
    assert "supervisor._spec" in loaded
    assert loaded.isdisjoint({"httpx", "h11", "yaml", "rich", "pynvml"}), sorted(loaded & set(HEAVY))
