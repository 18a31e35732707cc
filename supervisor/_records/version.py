"""The version of the records a run writes, and the one check every reader makes of it.

``manifest.json`` and ``summary.json`` carry ``records_version``; each line of ``events.jsonl`` carries
``v``. A record without one predates versioning and is version 1. A reader takes every version from
``OLDEST_RECORDS_VERSION`` to ``RECORDS_VERSION`` (an older run's records stay readable by a newer
topovisor) and refuses any other (a newer one) with ``IncompatibleVersion``, which says which topovisor
reads it, instead of guessing at fields it does not know.

Bump ``RECORDS_VERSION`` when a field changes meaning or goes away (a new field with a default needs no
bump: older readers ignore it), keep reading the older ones, and keep ``tests/fixtures/records_v<N>``
of each. Standard library only: the watchdog loads it with ``eventfile``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._errors import IncompatibleVersion

__all__ = [
    "EVENT_VERSION_FIELD",
    "OLDEST_RECORDS_VERSION",
    "RECORDS_VERSION",
    "VERSION_FIELD",
    "IncompatibleVersion",
    "check_records_version",
    "versions_read",
]

RECORDS_VERSION = 1  #: what this topovisor writes
OLDEST_RECORDS_VERSION = 1  #: the oldest it still reads
VERSION_FIELD = "records_version"  #: in ``manifest.json`` and ``summary.json``
EVENT_VERSION_FIELD = "v"  #: on each line of ``events.jsonl`` (as on each line of the control protocol)


def versions_read(oldest: int = OLDEST_RECORDS_VERSION, newest: int = RECORDS_VERSION) -> str:
    """``version 1`` or ``versions 1-3``: what a reader takes, for messages."""
    return f"version {newest}" if oldest == newest else f"versions {oldest}-{newest}"


def check_records_version(
    data: Mapping[str, object], what: str, *, field: str = VERSION_FIELD, run_id: str | None = None
) -> int:
    """The version ``data`` (a record, or one event) was written in; ``IncompatibleVersion`` naming the run
    (``run_id``, else ``data``'s own) and ``what`` (``manifest.json``, ...) when this topovisor does not
    read it. A missing version is 1; one of the wrong type reads as damaged data does, forgivingly,
    as this version."""
    version = data.get(field, 1)
    if type(version) is not int or version < 1:  # damaged (a bool is no version): read forgivingly, as ever
        return RECORDS_VERSION
    if OLDEST_RECORDS_VERSION <= version <= RECORDS_VERSION:
        return version
    named = run_id or data.get("run_id")
    run = f"run {named}" if isinstance(named, str) and named else "this run"
    which = "that version's" if version > RECORDS_VERSION else "an older"
    raise IncompatibleVersion(
        f"{run} was recorded by topovisor with records version {version} ({what}); this topovisor reads "
        f"{versions_read()}: use {which} `supervisor` to read it"
    )
