"""A service that misbehaves on cue: crashes, hangs, prints fatal lines, serves /health over HTTP.

With --once FILE the misbehaviour happens only while FILE does not exist (the program creates it), so a
restarted incarnation behaves. Every incarnation appends its pid to --pids.
"""

import argparse
import http.server
import os
import signal
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--pids")
parser.add_argument("--port", type=int)
parser.add_argument("--load", type=float, default=0.0, help="seconds before ready")
parser.add_argument("--progress", type=float, default=0.0, help="print a progress line this often while loading")
parser.add_argument("--crash-after", type=float, help="exit this long after ready")
parser.add_argument("--exit-code", type=int, default=1)
parser.add_argument("--hang-after", type=float, help="SIGSTOP ourselves this long after ready")
parser.add_argument("--say", default="", help="print this line before misbehaving")
parser.add_argument("--once")
args = parser.parse_args()

if args.pids:
    with open(args.pids, "a") as file:
        file.write(f"{os.getpid()}\n")
misbehave = True
if args.once:
    misbehave = not os.path.exists(args.once)
    open(args.once, "a").close()

started = time.monotonic()
while time.monotonic() - started < args.load:
    if args.progress:
        print(f"loading {time.monotonic() - started:.1f}s", flush=True)
        time.sleep(args.progress)
    else:
        time.sleep(args.load)

if args.port:

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("service ready", flush=True)

if misbehave and args.crash_after is not None:
    time.sleep(args.crash_after)
    if args.say:
        print(args.say, flush=True)
    sys.exit(args.exit_code)
if misbehave and args.hang_after is not None:
    time.sleep(args.hang_after)
    os.kill(os.getpid(), signal.SIGSTOP)
while True:
    time.sleep(1)
