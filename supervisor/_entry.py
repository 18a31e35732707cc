"""The ``supervisor`` command's entry point: light, so that a Ctrl-C while the library is still being
imported ends the command quietly (exit 130, nothing started) instead of with an import traceback."""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["main"]


def main() -> int:
    try:
        from ._cli.main import main as cli_main
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    try:
        code = cli_main()
        sys.stdout.flush()  # a pipe is block-buffered: its write happens here, not after we return
        return code
    except BrokenPipeError:  # `supervisor validate -c FILE | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 128 + signal.SIGPIPE
