"""``supervisor gc --older-than``: which finished runs' directories may go, and removing them.

A run dir may go once nothing of the run can still use it: its supervisor and its watchdog are gone and
no process of it is left (checked again right before the removal, after ``gc`` stopped any leftovers),
and nothing in it changed for the given time (its newest file, or the end its ``summary.json`` records,
whichever is later). Only a directory that is the run's own (named by its run id, with its
``manifest.json``, not a link) is removed, with its index entry; the records of a newer topovisor are
never touched.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import attrs

from .index import RunRecord, list_runs
from .leftovers import leftover_members
from .paths import read_json
from .registry import unregister_run

__all__ = ["DirUsage", "OldRun", "Pruned", "dir_usage", "old_runs", "prune_run"]


@attrs.frozen
class DirUsage:
    """What a run directory holds: the bytes of its files, and when the newest of them last changed."""

    bytes: int
    newest_mtime: float | None


@attrs.frozen
class OldRun:
    """A run untouched for longer than asked, and why it may not be pruned yet (None: it may)."""

    record: RunRecord
    last_activity: float  #: wall time
    usage: DirUsage
    kept_because: str | None


def dir_usage(path: Path) -> DirUsage:
    """Bytes of the files under ``path`` (links not followed) and their newest mtime."""
    total, newest = 0, None
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in [*dirs, *files]:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if name in files:
                total += info.st_size
            newest = info.st_mtime if newest is None else max(newest, info.st_mtime)
    return DirUsage(bytes=total, newest_mtime=newest)


def _last_activity(record: RunRecord, usage: DirUsage) -> float | None:
    ended = read_json(record.run_dir / "summary.json").get("ended_wall_time")
    times = [t for t in (usage.newest_mtime, ended) if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return max(times, default=None)


def _own_dir(record: RunRecord) -> bool:
    """The directory is a run's own: what a damaged index entry names is never removed."""
    path = record.run_dir
    return path.name == record.run_id and not path.is_symlink() and (path / "manifest.json").is_file()


def _why_kept(record: RunRecord) -> str | None:
    """Why the run's directory must stay for now (None: it may go)."""
    if record.unreadable is not None:
        return record.unreadable
    if record.supervisor_alive:
        return f"its supervisor (pid {record.supervisor_pid}) is alive"
    if record.watchdog_alive:
        return f"its watchdog (pid {record.watchdog_pid}) is still sweeping"
    left = sorted(leftover_members(record))
    if left:
        return f"its processes are left over ({', '.join(map(str, left[:5]))}{' ...' if len(left) > 5 else ''})"
    return None


@attrs.frozen
class Pruned:
    """What ``prune_run`` did: removed the directory (``freed`` bytes), kept it (``kept_because``), or
    removed only part of it (``failure``)."""

    freed: int = 0
    kept_because: str | None = None
    failure: str | None = None

    @property
    def removed(self) -> bool:
        return self.kept_because is None and self.failure is None


def old_runs(older_than_seconds: float, *, now: float | None = None) -> list[OldRun]:
    """The recorded runs (indexed, or in the runs dir) not changed for ``older_than_seconds``, oldest
    first, each with why it must stay, if it must. A live run whose records are old is listed as kept."""
    now = time.time() if now is None else now
    found = []
    for record in list_runs(include_finished=True):
        if not _own_dir(record):
            continue
        usage = dir_usage(record.run_dir)
        last = _last_activity(record, usage)
        if last is None or now - last < older_than_seconds:
            continue
        found.append(OldRun(record=record, last_activity=last, usage=usage, kept_because=_why_kept(record)))
    return sorted(found, key=lambda old: (old.last_activity, old.record.run_id))


def prune_run(old: OldRun) -> Pruned:
    """Remove the run's directory and its index entry, after checking once more that nothing of it runs
    (``gc`` may just have stopped its leftovers, or the run may have been reused meanwhile)."""
    record = old.record.reload()
    why = _why_kept(record) or (None if _own_dir(record) else "its directory is no longer the run's own")
    if why is not None:
        return Pruned(kept_because=why)
    usage = dir_usage(record.run_dir)
    failures: list[str] = []
    _rmtree(record.run_dir, failures)
    unregister_run(record.run_id)
    if failures:
        left = dir_usage(record.run_dir).bytes if record.run_dir.exists() else 0
        more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
        return Pruned(freed=usage.bytes - left, failure=f"could not remove all of it: {failures[0]}{more}")
    return Pruned(freed=usage.bytes)


def _rmtree(path: Path, failures: list[str]) -> None:
    """``shutil.rmtree`` that notes what it could not remove and goes on (``onexc`` from Python 3.12,
    where ``onerror`` is deprecated)."""

    def note(_function: object, where: str, info: object) -> None:
        exc = info[1] if isinstance(info, tuple) else info
        failures.append(f"{where}: {getattr(exc, 'strerror', None) or exc}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=note)
    else:
        shutil.rmtree(path, onerror=note)
