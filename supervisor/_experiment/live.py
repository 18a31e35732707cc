"""Running sweeps as other processes see them: ``<state dir>/sweeps/<id>.json`` says which trial of how
many runs now, its arm, and how long the trials this process finished took (for the time left). Written
at each trial's start and end, removed when the sweep ends; one left by a killed sweep says so (its pid
is gone) and names the ``--resume`` line."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SweepProgress", "format_left", "list_sweeps", "seconds_left"]


def _folder(*, create: bool) -> Path:
    from .._records.paths import default_state_dir, private_dirs, state_dir

    return private_dirs(state_dir() / "sweeps") if create else default_state_dir() / "sweeps"


class SweepProgress:
    """The entry of one running sweep, kept by the process that runs it."""

    def __init__(self, sweep_id: str, path: Path, planned: int, done: int) -> None:
        import psutil

        self.data: dict[str, Any] = {
            "sweep_id": sweep_id, "path": str(path), "pid": os.getpid(),
            "create_time": psutil.Process().create_time(), "planned": planned, "done": done, "trial": None,
            "arm": None, "trial_started_wall_time": None, "trial_seconds": [], "started_wall_time": time.time(),
        }  # fmt: skip
        self._started = time.monotonic()
        self._file = _folder(create=True) / f"{sweep_id}.json"

    def begin(self, trial: int, arm: str) -> None:
        self.data.update(trial=trial, arm=arm, trial_started_wall_time=time.time())
        self._started = time.monotonic()
        self._write()

    def end(self) -> None:
        self.data["trial_seconds"].append(time.monotonic() - self._started)
        self.data.update(done=self.data["done"] + 1, trial=None, arm=None, trial_started_wall_time=None)
        self._write()

    def seconds_left(self) -> float | None:
        return seconds_left(self.data, time.time())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.unlink(missing_ok=True)

    def _write(self) -> None:
        from .._records.paths import write_json

        with contextlib.suppress(OSError):  # progress is for people looking on: never a reason to stop
            write_json(self._file, self.data)


def seconds_left(data: dict[str, Any], now: float) -> float | None:
    """The median of the finished trials' durations, for each trial not done, less the current one's
    time so far; None before a trial finished."""
    durations: Sequence[float] = data.get("trial_seconds") or []
    if not durations:
        return None
    typical = statistics.median(durations)
    left = typical * (int(data["planned"]) - int(data["done"]))
    if data.get("trial_started_wall_time") is not None:
        left -= min(typical, max(0.0, now - float(data["trial_started_wall_time"])))
    return max(0.0, left)


def format_left(seconds: float | None) -> str:
    """``about 4m10s left``; ``-`` before a trial finished (nothing to estimate from)."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    return f"about {text} left"


def list_sweeps() -> list[dict[str, Any]]:
    """Each recorded sweep with ``alive`` (its process still runs) and ``seconds_left``, oldest first."""
    from .._host.proctable import matching_process
    from .._records.paths import read_json

    folder = _folder(create=False)
    now = time.time()
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = read_json(path)
        if not data.get("sweep_id"):
            continue
        alive = matching_process(data.get("pid"), data.get("create_time")) is not None
        found.append({**data, "alive": alive, "seconds_left": seconds_left(data, now) if alive else None})
    return sorted(found, key=lambda d: float(d.get("started_wall_time") or 0))
