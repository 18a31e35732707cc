"""Planning: a validated topology becomes a ``Plan`` (ports, placement, GPUs, templates, client env), and a
running plan is replanned for a scale or a moved replica.

Pure functions over specs and the host's inventories; no event loop."""

__all__: list[str] = []
