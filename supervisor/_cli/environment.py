"""``supervisor env RUN``: a live run's client variables as ``export`` lines for sh, so that a shell next to
a ``--detach`` run gets what ``supervisor run FILE -- CMD`` gives CMD: ``eval "$(supervisor env RUN)"``.

The addresses come from the run's manifest (rewritten at each spawn batch, a scale's included), through
the same ``client_environment`` that ``group.environment()`` uses, so the names and values cannot differ.
``TOPOVISOR_RUN_ID`` is left out, as there: a process carrying it is taken for part of the run and swept.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .._errors import ControlError
from .._plan.client_env import client_environment
from .._records.record import RunRecord, load_run, resolve_run
from .context import Invocation, reader_may_leave

__all__ = ["env_command", "export_lines", "recorded_environment"]

EXIT_OK = 0


class _Address(NamedTuple):
    url: str | None
    port: int | None


class _Service(NamedTuple):
    name: str
    replicas: Sequence[_Address]


class _RecordedAddresses(NamedTuple):
    """A run's addresses as its manifest has them, in the shape ``client_environment`` reads."""

    run_dir: Path
    source: str | None
    services: Sequence[_Service]


def recorded_environment(record: RunRecord) -> dict[str, str]:
    """``TOPOVISOR_<SERVICE>_URL``/``_URLS``/``_PORT`` and ``TOPOVISOR_RUN_DIR`` (absolute) of a recorded run."""
    services = [
        _Service(name, [_Address(r.url, next(iter(r.ports.values()), None)) for r in entry.replicas])
        for name, entry in record.manifest.services.items()
    ]
    return client_environment(_RecordedAddresses(record.run_dir, record.manifest.source, services))


def export_lines(environment: dict[str, str]) -> list[str]:
    """``export NAME='value'``, each value quoted for sh: nothing in it is expanded or run by ``eval``."""
    return [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]


@reader_may_leave
def env_command(call: Invocation) -> int:
    run = call.args.run
    path = Path(run).expanduser()
    record = load_run(path) if path.is_dir() else resolve_run(os.fspath(run))
    if not record.supervisor_alive or record.phase == "stopped":  # its addresses serve nothing any more
        why = "it was stopped" if record.phase == "stopped" else f"its supervisor is gone; last phase: {record.phase}"
        raise ControlError(f"run {record.run_id} is not running ({why}); its addresses are not served")
    for line in export_lines(recorded_environment(record)):
        print(line)
    return EXIT_OK
