"""``demo``: the stand-in serving stack of ``demo.yaml`` (a kv, 2 prefill and 2 decode workers, a frontend).

    supervisor run demo -- '{python}' -m standins.demo_client '{frontend.url}'

Shipped in the wheel so the demo runs without a clone (``examples/demo.yaml`` in a clone is the same
file). The topology is the YAML file beside this module: ``supervisor run demo`` loads it as its YAML
twin, and ``preset: demo`` builds it through this builder, so both are one file. No GPU, no engine.
"""

from __future__ import annotations

import os

import supervisor

__all__ = ["demo"]


def demo() -> supervisor.Topology:
    """The demo topology, read from ``demo.yaml`` beside this module."""
    return supervisor.load(os.path.join(os.path.dirname(__file__), "demo.yaml"))
