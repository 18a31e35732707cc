"""Where records live, and how they are written: atomically, privately, and never in teardown's way."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the schema loads when first used: the head start registers its run without it
    from .schema import IndexEntry, Manifest, Summary

__all__ = [
    "default_runs_dir",
    "default_state_dir",
    "finished_dir",
    "index_dir",
    "index_path",
    "open_private",
    "private_dirs",
    "read_json",
    "runs_dir",
    "save_record",
    "state_dir",
    "warn_record_failure",
    "write_json",
    "write_private",
]

_warned: set[Path] = set()  #: run dirs already warned about: one warning per run, not one per write


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/topovisor`` (default ``~/.local/state/topovisor``): run records and runs."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "topovisor"


def default_runs_dir() -> Path:
    return default_state_dir() / "runs"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/topovisor`` (default ``~/.local/state/topovisor``), created private (0700)."""
    return _private_dir(default_state_dir())


def runs_dir() -> Path:
    """Where runs go when the topology names no ``run_dir``."""
    state_dir()  # made private first
    return default_runs_dir()


def index_dir() -> Path:
    return _private_dir(state_dir() / "index")


def index_path(run_id: str) -> Path:
    return index_dir() / f"{run_id}.json"


def finished_dir(*, create: bool = True) -> Path:
    """The index entries of finished runs whose directory is not in the default runs dir: where
    ``ps --all`` and a run id find them once they left the index (``create=False``: for readers, which
    must change nothing on disk, a dry ``gc`` included)."""
    path = state_dir() / "finished"
    return _private_dir(path) if create else path


def _private_dir(path: Path) -> Path:
    private_dirs(path)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    return path


def private_dirs(path: Path, *, max_depth: int = 256) -> Path:
    """Make ``path`` and every missing parent 0700 whatever the umask: ``mkdir``'s mode is masked by the
    umask, and ``Path.mkdir(parents=True)`` makes the parents 0777 less the umask (0777 under umask 000),
    while a run's records are the user's alone. Directories already there are left as they are."""
    missing: list[Path] = []
    cursor = path
    while not cursor.is_dir() and len(missing) < max_depth and cursor != cursor.parent:
        missing.append(cursor)
        cursor = cursor.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made by someone else meanwhile: theirs to set
        os.chmod(directory, 0o700)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """A descriptor of ``path``, created 0600 when new (the umask can only take bits away from 0600), never
    inherited by children."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def write_private(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` (replaced, not appended), created 0600 when new."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as file:
        file.write(data)


def write_json(
    path: Path, data: Manifest | Summary | IndexEntry | dict[str, Any], *, indent: int | None = None
) -> None:
    """Atomically: readers see the old file or the new one, never half of one. Raises OSError."""
    if not isinstance(data, dict):
        from .schema import to_json

        data = to_json(data)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(data, indent=indent))  # dumps, not dump: only dumps uses the C encoder
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)  # a full disk keeps no half-written temporary
        raise


def read_json(path: Path) -> dict[str, Any]:
    """The object in ``path``; an empty dict when it is missing, unreadable or half-written by a crash."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_record(run_dir: Path, name: str, record: Manifest | Summary, *, indent: int | None = None) -> bool:
    """Write ``<run_dir>/<name>`` atomically, never raising: a full disk or a deleted run directory must
    not stand in the way of a run or its teardown. The first failure of a run is a warning; False then."""
    try:
        write_json(run_dir / name, record, indent=indent)
    except OSError as exc:
        warn_record_failure(run_dir, name, exc)
        return False
    return True


def warn_record_failure(run_dir: Path, name: str, exc: OSError) -> None:
    """Log the first failed record write of a run (later ones are expected to fail the same way)."""
    if run_dir in _warned:
        return
    _warned.add(run_dir)
    reason = exc.strerror or str(exc)
    import logging  # here: the head start writes records before anything imports logging

    logging.getLogger("supervisor.records").warning(
        "cannot write %s in %s (%s); the run goes on without its record", name, run_dir, reason
    )
