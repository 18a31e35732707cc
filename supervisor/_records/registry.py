"""The run index's writes: a run is registered before its first child and unregistered after a verified
teardown, so ``supervisor gc`` finds every run that may still own processes.

Light on purpose (``json`` and ``os``, no schema, no psutil): the head start registers its run before the
runtime is imported and before it spawns anything, and must not delay its first process for it. The
entry's keys are ``schema.IndexEntry``'s fields (a test holds them equal).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from .._host.process import create_time
from .paths import default_runs_dir, finished_dir, index_path, read_json, write_json

__all__ = ["register_run", "unregister_run"]


def register_run(
    run_id: str,
    run_dir: Path,
    *,
    supervisor_pid: int,
    watchdog_pid: int | None = None,
    containment: Mapping[str, object] | None = None,
) -> Path:
    """List a run in the index (before its first child: gc must see it from then on); returns the
    entry's path. ``containment``: the run's cgroups (``RunContainment.record``). Raises OSError."""
    path = index_path(run_id)
    entry = {
        "containment": None,
        "cgroup": None,
        "cgroup_extras": [],
        **(containment or {}),
        "run_id": run_id,
        "run_dir": str(Path(run_dir).absolute()),
        "supervisor_pid": supervisor_pid,
        "supervisor_create_time": _create_time(supervisor_pid),
        "watchdog_pid": watchdog_pid,
        "watchdog_create_time": _create_time(watchdog_pid),
        "registered_wall_time": time.time(),
    }
    write_json(path, entry)
    return path


def unregister_run(run_id: str) -> bool:
    """Drop a run from the index (after a verified teardown); False if it was not listed. A run whose
    directory is not in the default runs dir keeps its entry in ``finished_dir()``: the default runs dir
    is listed as it is, another one only through that entry (``ps --all``, ``logs RUN_ID``)."""
    path = index_path(run_id)
    run_dir = read_json(path).get("run_dir")
    if isinstance(run_dir, str) and Path(run_dir).parent != default_runs_dir().absolute():
        try:
            os.replace(path, finished_dir() / path.name)
            return True
        except FileNotFoundError:
            return False
        except OSError:  # no finished dir (a full disk, say): the run leaves the index all the same
            pass
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _create_time(pid: int | None) -> float | None:
    if not pid:
        return None
    value = create_time(pid)
    return value or None  # 0.0: the process is gone
