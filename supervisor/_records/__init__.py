"""Run records on disk: where they live, what they hold, and what a run left behind.

Submodules, imported one by one (this file imports nothing, so the watchdog can use ``eventfile``
without pulling in the rest):

- ``paths``: the state dir, the runs dir, the index dir, atomic JSON files, writes that never raise;
- ``version``: the records' version, and the check every reader makes of it (a newer one is refused);
- ``eventfile``: the one writer of ``events.jsonl`` (the supervisor, its watchdog, ``supervisor stop``);
- ``schema``: ``manifest.json``, ``summary.json`` and index entries as attrs classes, read through cattrs;
- ``registry``: registering runs in the index and dropping them (light: the head start uses it);
- ``index``: listing and resolving runs (``RunRecord``, ``ReplicaRecord``);
- ``leftovers``: what of a run is still alive, gc candidates;
- ``prune``: the run dirs ``gc --older-than`` may remove (finished, untouched that long), and removing them;
- ``ports``: who holds a port we want;
- ``died``: ``summary.json`` for a run whose supervisor died (the watchdog's after its sweep, or gc's).

``supervisor._records.record`` re-exports the public names.
"""

__all__: list[str] = []
