"""The engine stand-ins' env for tests: ``standins.engine_env`` (also ``python -m standins engine-env DIR``)."""

from __future__ import annotations

from pathlib import Path

from standins.engine_env import make_engine_env

MODEL = "standin/tiny-llm"


def standin_env(root: Path) -> Path:
    """A fresh engine env at ``root`` (it must not exist yet: each test gets its own)."""
    assert not root.exists(), root
    return make_engine_env(root)
