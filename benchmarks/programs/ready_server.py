"""Becomes ready after ``--delay`` seconds and writes ``time.monotonic()`` of that moment to ``--stamp``.

--mode 503   listens at once; GET /health answers 503 until ready, 200 after
--mode late  binds and listens only when ready, then answers 200
--mode log   no server: prints ``READY`` when ready
--announce   (http modes) also print a line at the moment of readiness, as uvicorn does
--access-log (http modes) log every request to stderr, as most servers do
--health-seconds  (http modes) each GET /health takes this long (a busy server), decided at arrival
"""

import argparse
import http.server
import os
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--mode", choices=["503", "late", "log"], required=True)
parser.add_argument("--delay", type=float, required=True)
parser.add_argument("--stamp", required=True)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--announce", action="store_true")
parser.add_argument("--access-log", action="store_true")
parser.add_argument("--health-seconds", type=float, default=0.0)
args = parser.parse_args()
ready = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = ready.is_set()
        if args.health_seconds:
            time.sleep(args.health_seconds)
        body = b'{"status": "ok"}' if ok else b'{"status": "loading"}'
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *log_args: object) -> None:
        if args.access_log:
            sys.stderr.write(f"access {self.address_string()} {format % log_args}\n")
            sys.stderr.flush()


def serve() -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if args.mode == "503":
    serve()
time.sleep(args.delay)
if args.mode == "late":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)  # bind + listen: ready now
    ready.set()
    stamp = time.monotonic()
    threading.Thread(target=server.serve_forever, daemon=True).start()
else:
    ready.set()
    stamp = time.monotonic()
if args.mode == "log" or args.announce:
    sys.stdout.write("READY\n")
    sys.stdout.flush()
with open(args.stamp + ".tmp", "w") as file:
    file.write(repr(stamp))
os.replace(args.stamp + ".tmp", args.stamp)
while True:
    time.sleep(3600)
