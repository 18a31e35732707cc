"""Log lines shaped like vLLM's and uvicorn's, so log scrapers see the real thing."""

from __future__ import annotations

import contextlib
import sys
import time


class Log:
    """vLLM/uvicorn-looking lines, flushed at once because a supervisor reads them through a pipe."""

    def __init__(self, component: str) -> None:
        self._component = component

    def _write(self, text: str, *, error: bool = False) -> None:
        out = sys.stderr if error else sys.stdout
        with contextlib.suppress(OSError, ValueError):  # the reader went away: keep serving regardless
            out.write(text)
            out.flush()

    def _line(self, level: str, message: str, *, error: bool = False) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        self._write(f"{level} {stamp} [standin.{self._component}] {message}\n", error=error)

    def info(self, message: str) -> None:
        self._line("INFO", message)

    def warning(self, message: str) -> None:
        self._line("WARNING", message)

    def error(self, message: str) -> None:
        self._line("ERROR", message, error=True)

    def uvicorn(self, message: str) -> None:
        self._write(f"INFO:     {message}\n")

    def raw(self, text: str) -> None:
        self._write(text)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def progress(desc: str, done: int, total: int, elapsed: float) -> str:
    """A tqdm-style bar as vLLM prints it, so log scrapers see the real shape."""
    rate = done / elapsed if done and elapsed > 0 else 0.0
    remaining = (total - done) / rate if rate else None
    rate_text = f"{rate:5.2f}it/s" if rate else "?it/s"
    times = f"{_clock(elapsed)}<{_clock(remaining)}"
    return f"{desc}: {100 * done / total:3.0f}% Completed | {done}/{total} [{times}, {rate_text}]"
