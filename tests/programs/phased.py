"""A starting server that prints its phase lines on cue, for the startup-phase tests.

Each argument is one step, done in order: ``say:TEXT`` prints a line (flushed), ``await:PATH`` waits
(bounded) until the test creates PATH, ``exit:N`` exits with N, ``hold`` waits until it is stopped.
"""

import os
import signal
import sys
import time

for step in sys.argv[1:]:
    verb, _, value = step.partition(":")
    if verb == "say":
        print(value, flush=True)
    elif verb == "await":
        deadline = time.monotonic() + 60
        while not os.path.exists(value):
            if time.monotonic() > deadline:
                sys.exit(f"{value} never appeared")
            time.sleep(0.005)
    elif verb == "exit":
        sys.exit(int(value))
    elif verb == "hold":
        while True:
            signal.pause()
    else:
        sys.exit(f"unknown step {step!r}")
