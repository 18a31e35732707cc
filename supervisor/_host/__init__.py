"""OS primitives: processes and the process table, launchers (local, Slurm), logs and log follow, probes,
phases, the GPU inventory, teardown escalation, signals, and the watchdog.

Nothing here knows the running group; the runtime composes these."""

__all__: list[str] = []
