"""Prints ``ready`` and idles; on SIGTERM writes ``time.monotonic()`` to ``<argv[1]>/<pid>`` and exits.

The stamp file is opened up front, so the stamp is taken one small ``write`` before ``os._exit(0)``.
"""

import os
import signal
import sys
import time

stamp_fd = os.open(os.path.join(sys.argv[1], str(os.getpid())), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def on_term(signum: int, frame: object) -> None:
    stamp = time.monotonic()
    os.write(stamp_fd, repr(stamp).encode())
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    time.sleep(3600)
