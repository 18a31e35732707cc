"""Metrics snapshots: save every declared Prometheus endpoint of a run at a labelled moment.

``group.snapshot_metrics("ready")`` fetches the ``metrics:`` URL of every running replica at once and
writes ``<run_dir>/metrics/<label>/<replica>.prom`` plus ``index.json`` (status, timing, errors). One
endpoint that is down, slow or garbled is recorded as such and never fails the others, nor the run: a
benchmark reads the files afterwards and compares two moments (``ready`` and ``final`` from the CLI).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._records.paths import write_private

if TYPE_CHECKING:
    import httpx

    from .replica import Replica

__all__ = ["METRICS_TIMEOUT_SECONDS", "MetricsEndpoint", "MetricsSnapshot", "fetch_metrics", "take_snapshot"]

METRICS_TIMEOUT_SECONDS = 3.0  #: one endpoint's whole fetch, connect to last byte
MAX_METRICS_BYTES = 32 * 1024 * 1024  #: a larger answer is cut off and recorded as an error
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@attrs.frozen
class MetricsEndpoint:
    """What one replica's endpoint gave: the saved file, or the error that kept it from being saved."""

    replica: str
    service: str
    url: str
    state: str  #: the replica's state when the snapshot began (ready, starting, unready, ...)
    status: int | None  #: HTTP status, None when no answer came
    seconds: float  #: time from the request to the last byte (or to the error)
    size_bytes: int
    path: Path | None  #: ``<run_dir>/metrics/<label>/<replica>.prom``; None when nothing was saved
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "service": self.service,
            "url": self.url,
            "state": self.state,
            "status": self.status,
            "seconds": round(self.seconds, 6),
            "bytes": self.size_bytes,
            "file": None if self.path is None else self.path.name,
            "error": self.error,
        }


@attrs.frozen
class MetricsSnapshot:
    """One labelled snapshot of a run: where it is on disk, and each endpoint's outcome."""

    label: str
    directory: Path
    wall_time: float
    seconds: float
    endpoints: tuple[MetricsEndpoint, ...]

    @property
    def failed(self) -> list[MetricsEndpoint]:
        return [e for e in self.endpoints if not e.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "wall_time": self.wall_time,
            "seconds": round(self.seconds, 6),
            "endpoints": [e.to_json() for e in self.endpoints],
        }


def check_label(label: object, run_dir: Path) -> Path:
    """Make the snapshot's directory; ``ValueError`` for a label that is not a plain name or is taken."""
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise ValueError(
            f"metrics label {label!r}: use letters, digits, '.', '_' or '-' (it names a directory), "
            "starting with a letter or digit, at most 100 characters"
        )
    directory = run_dir / "metrics" / label
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)  # taken at once: a second snapshot with the same label fails here
    except FileExistsError:
        raise ValueError(f"metrics label {label!r} already used in this run ({directory}); pick another") from None
    return directory


async def take_snapshot(
    client: httpx.AsyncClient,
    replicas: Iterable[Replica],
    run_dir: Path,
    label: str,
    *,
    redact: Callable[[Any], Any],
    timeout_seconds: float = METRICS_TIMEOUT_SECONDS,
) -> MetricsSnapshot:
    """Fetch the endpoint of every running replica that declares one, concurrently, each bounded by
    ``timeout_seconds``; write the files and the index, passed through ``redact`` (a URL's password, an
    error quoting it). Only a write to the run directory can raise."""
    directory = check_label(label, run_dir)
    targets = [r for r in replicas if r.plan.metrics is not None and r.running]
    wall_time, started = time.time(), time.monotonic()
    bodies: dict[str, bytes] = {}
    results: dict[str, MetricsEndpoint] = {}

    async def fetch(replica: Replica) -> None:
        url = replica.plan.metrics
        assert url is not None
        state = replica.state.value
        begin = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            with anyio.fail_after(timeout_seconds):
                status, body = await fetch_metrics(client, url)
        except TimeoutError:
            error = f"no complete answer within {timeout_seconds:g}s"
        except Exception as exc:  # any failure of one endpoint is recorded, never raised
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            error = None if 200 <= status < 300 else f"HTTP {status}"
            if error is None:
                bodies[replica.name] = body
        path = directory / f"{replica.name}.prom" if replica.name in bodies else None
        size = len(bodies.get(replica.name, b""))
        seconds = time.monotonic() - begin
        results[replica.name] = MetricsEndpoint(
            replica.name, replica.service, url, state, status, seconds, size, path, error
        )

    async with anyio.create_task_group() as tg:
        for replica in targets:
            tg.start_soon(fetch, replica)
    endpoints = tuple(results[r.name] for r in targets)
    snapshot = MetricsSnapshot(label, directory, wall_time, time.monotonic() - started, endpoints)
    _write(directory, bodies, redact(snapshot.to_json()))
    return snapshot


async def fetch_metrics(client: httpx.AsyncClient, url: str) -> tuple[int, bytes]:
    """One endpoint's status and body; ``ValueError`` past ``MAX_METRICS_BYTES``."""
    async with client.stream("GET", url, headers={"Accept": "text/plain"}) as response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_METRICS_BYTES:
                raise ValueError(f"answer larger than {MAX_METRICS_BYTES} bytes")
            chunks.append(chunk)
        return response.status_code, b"".join(chunks)


def _write(directory: Path, bodies: Mapping[str, bytes], index: Mapping[str, Any]) -> None:
    for name, body in bodies.items():
        write_private(directory / f"{name}.prom", body)
    temporary = directory / ".index.json.tmp"
    write_private(temporary, (json.dumps(index, indent=2) + "\n").encode())
    os.replace(temporary, directory / "index.json")
