"""The running group: start, stop, scale, rollout, dependents and node loss; the replica state machine,
supervision, restart policy, metrics; and the entry points ``launch``/``supervise``/``run`` and their sync twin."""

__all__: list[str] = []
