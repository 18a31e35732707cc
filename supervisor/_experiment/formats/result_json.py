"""The JSON object any client may write to ``{trial_dir}/result.json``: each key a column of its own name
(a key that is one of the row's own columns is prefixed ``client_``, so a client never overwrites them)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

__all__ = ["FILE_NAME", "figures"]

FILE_NAME = "result.json"


def figures(trial_dir: Path, reserved: Collection[str]) -> dict[str, Any]:
    """The object's plain values (numbers, strings, booleans, null); nothing when absent or not an object."""
    try:
        data = json.loads((trial_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, Mapping):
        return {}
    kept = {str(k): v for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {(f"client_{k}" if k in reserved else k): v for k, v in kept.items()}
