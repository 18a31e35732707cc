"""A pool worker for the scale and rollout tests: serves GET /health on --port (200 with its pid), starts a
child that lives as long as it does (a grandchild of the supervisor, to check that nothing of a stopped
worker is left), appends ``<pid> <child pid>`` to --pids, prints its args and then 'worker ready'.

--mode fail exits 3 before it is ready; --mode silent serves but never prints the ready line; --seen
prints the value given (e.g. a dependency's ``{svc.urls}``) on a line of its own before the ready line;
/health answers ``<pid> <version>``.
"""

import argparse
import http.server
import os
import subprocess
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--pids")
parser.add_argument("--mode", choices=["serve", "fail", "silent"], default="serve")
parser.add_argument("--seen", default=None)
parser.add_argument("--version", default="1")
args = parser.parse_args()

if args.mode == "fail":
    print("worker refuses to start (--mode fail)", flush=True)
    sys.exit(3)

child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"])
if args.pids:
    with open(args.pids, "a") as file:
        file.write(f"{os.getpid()} {child.pid}\n")


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{os.getpid()} {args.version}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
if args.seen is not None:
    print(f"seen {args.seen}", flush=True)
if args.mode == "serve":
    print(f"worker ready {os.getpid()} version {args.version}", flush=True)
while True:
    time.sleep(1)
