"""Human units in configuration: durations like ``500ms``/``2m``/``7d`` and sizes like ``50MB``; and sizes
and counts written back for people (``format_size``, ``counted``)."""

from __future__ import annotations

import re

__all__ = ["counted", "format_size", "parse_duration", "parse_size", "slurm_time"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|us|µs)?\s*$")
_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: Slurm's own time formats: M:S, H:M:S, D-H, D-H:M, D-H:M:S (a bare number is refused: see slurm_time)
_SLURM_TIME = re.compile(r"^(\d+:\d+(:\d+)?|\d+-\d+(:\d+){0,2})$")
_SLURM_UNLIMITED = ("UNLIMITED", "INFINITE")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([KMGT]i?B|B|[KMGT])?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "k": 1000, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "m": 1000**2, "g": 1000**3,
    "t": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, None: 1,
}  # fmt: skip


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string such as ``250ms``, ``10s``, ``2m``, ``1h``, ``7d``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 500ms, 10s or 2m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 500ms, 10s or 2m, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as ``50MB``, ``4MiB``, ``512k``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 50MB, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower() if match.group(2) else None
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f"expected a size such as 50MB or 4MiB, got {value!r}")
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return size


def format_size(size: int) -> str:
    """``size`` bytes for people, in binary units: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def slurm_time(value: object) -> str:
    """A time limit in Slurm's format (``2:00:00``, ``1-12:00:00``) from ours (``2h``, ``90m``) or Slurm's.

    A bare number is refused: Slurm reads ``30`` as minutes, topovisor's durations read it as seconds;
    one of them would be surprised. Our durations are rounded up to whole seconds.
    """
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and (_SLURM_TIME.match(text) or text.upper() in _SLURM_UNLIMITED):
        return text
    if isinstance(text, bool):
        raise ValueError(f"expected a time limit such as 2h, 90m or Slurm's 2:00:00, got {value!r}")
    if isinstance(text, (int, float)) or (isinstance(text, str) and _is_number(text)):
        raise ValueError(
            f"{value!r} is ambiguous (Slurm reads a bare number as minutes, topovisor as seconds): "
            f"write {text}m, {text}s or Slurm's H:MM:SS"
        )
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(
            f"expected a time limit such as 2h, 90m or Slurm's 2:00:00 / 1-12:00:00, got {value!r}"
        ) from None
    whole = -int(-seconds // 1)  # rounded up: a limit is never shortened
    if whole <= 0:
        raise ValueError(f"a time limit must be more than 0, got {value!r}")
    days, rest = divmod(whole, 86400)
    hours, minutes, secs = rest // 3600, rest % 3600 // 60, rest % 60
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "replica")`` -> ``1 replica``; ``counted(3, "replica")`` -> ``3 replicas``."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
