"""A sweep's folder, ``<runs dir>/sweeps/<id>/``: ``sweep.json`` (what was asked), one folder per trial,
and the rows: ``results.jsonl`` (the record: a trial is done once its row is there) and ``results.csv``.

Both row files are rewritten whole and renamed into place, so a sweep killed at any moment leaves the
rows of the trials that ended, and never half a row or one twice: ``--resume`` runs what is missing."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError

__all__ = ["SweepDir", "find_sweep", "new_sweep_id"]

#: the first columns, in this order; the arm's values, the client's figures and provenance follow
FIRST_COLUMNS = ("arm", "trial", "status", "run_id", "ready_seconds", "client_exit", "client_seconds", "error")


def new_sweep_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-sweep-{os.urandom(3).hex()}"


def find_sweep(sweep: str, runs_dir: Path) -> Path:
    """A sweep by id (under ``runs_dir/sweeps``) or by its folder; ``ConfigError`` (exit 2) if none."""
    for candidate in (Path(sweep), runs_dir / "sweeps" / sweep):
        if (candidate / "sweep.json").is_file():
            return candidate
    raise ConfigError(f"no sweep {sweep!r} (looked in {runs_dir / 'sweeps'}; --runs-dir names another)")


class SweepDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def sweep_id(self) -> str:
        return self.path.name

    def trial_dir(self, trial: int) -> Path:
        return self.path / "trials" / f"{trial:03d}"

    def write_spec(self, spec: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _replace(self.path / "sweep.json", json.dumps(spec, indent=2) + "\n")

    def read_spec(self) -> dict[str, Any]:
        data = json.loads((self.path / "sweep.json").read_text())
        assert isinstance(data, dict)
        return data

    def rows(self) -> list[dict[str, Any]]:
        path = self.path / "results.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def done(self) -> set[int]:
        return {int(row["trial"]) for row in self.rows()}

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Record a trial that ended: a trial's row is written once (a second one is ignored)."""
        rows = [r for r in self.rows() if int(r["trial"]) != int(row["trial"])] + [dict(row)]
        rows.sort(key=lambda r: int(r["trial"]))
        _replace(self.path / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        _replace(self.path / "results.csv", _csv(rows))


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = list(FIRST_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
