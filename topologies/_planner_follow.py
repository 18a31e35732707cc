"""Carry out the Dynamo Planner's scaling decisions on a topovisor run (the Dynamo preset's ``planner=follow``).

Run with the engine's Python (it imports ``dynamo._core``; nothing of topovisor): it reads each decision a
``VirtualConnectorCoordinator`` (the Planner in ``environment: virtual``, or anything playing it) publishes
for ``--namespace``, caps the counts to the bounds, asks the run's control socket to ``scale`` prefill and
decode (each answer comes once the new set is ready, or the removed replicas are down), and only then
``complete``s the decision. A scale that is refused or undone is said (a line here; the run's ``ScaleEnded``
event and summary carry it) and the decision completed all the same, so the Planner is never held up: it
sees the workers actually registered. A newer decision that comes meanwhile is taken once this one is done.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import sys

_IDS = itertools.count(1)


def _ask(path: str, op: str, **fields: object) -> dict[str, object]:
    """One request on the run's control socket (JSON lines, protocol v1); the reply."""
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:  # a run dir's path can pass the 108 bytes of a socket address: reach it through the descriptor
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(f"/proc/self/fd/{directory}/{os.path.basename(path)}")
            return _exchange(connection, op, fields)
    finally:
        os.close(directory)


def _exchange(connection: socket.socket, op: str, fields: dict[str, object]) -> dict[str, object]:
    request = {"v": 1, "id": next(_IDS), "op": op, **fields}
    connection.sendall(json.dumps(request).encode() + b"\n")
    buffer = b""
    while not buffer.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        buffer += chunk
    reply: dict[str, object] = json.loads(buffer or b"{}")
    return reply


def _say(text: str) -> None:
    print(f"planner-follow: {text}", flush=True)


async def _scale(path: str, service: str, count: int) -> str | None:
    """Scale through the socket; the run's error, if any."""
    reply = await asyncio.to_thread(_ask, path, "scale", service=service, replicas=count)
    return None if reply.get("ok") else str(reply.get("error", "refused"))


async def follow(args: argparse.Namespace) -> None:
    from dynamo._core import DistributedRuntime, VirtualConnectorClient  # type: ignore[import-not-found]

    runtime = DistributedRuntime(asyncio.get_running_loop(), "etcd", "tcp", event_plane="zmq")
    try:
        client = VirtualConnectorClient(runtime, args.namespace)
        _say(f"following the Planner's decisions for namespace {args.namespace}")
        while True:
            await client.wait()
            decision = await client.get()
            asked = {"prefill": decision.num_prefill_workers, "decode": decision.num_decode_workers}
            bounds = {"prefill": (args.prefill_min, args.prefill_max), "decode": (args.decode_min, args.decode_max)}
            if not args.prefill:  # aggregated: the Planner's decode count is the workers'
                asked.pop("prefill")
            _say(f"decision {decision.decision_id}: " + ", ".join(f"{k}={v}" for k, v in asked.items()))
            shortfall = []
            for service, wanted in asked.items():
                low, high = bounds[service]
                count = max(low, min(high, int(wanted)))
                if count != wanted:
                    shortfall.append(f"{service} {wanted} capped to {count} (bounds {low}-{high})")
                error = await _scale(args.socket, service, count)
                if error is not None:
                    shortfall.append(f"{service} not scaled to {count}: {error}")
            await client.complete(decision)
            outcome = "; ".join(shortfall) if shortfall else "done"
            _say(f"decision {decision.decision_id} completed: {outcome}")
    finally:
        runtime.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="planner-follow", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--socket", required=True, help="the run's control socket ({run_dir}/control.sock)")
    parser.add_argument("--namespace", default="dynamo")
    parser.add_argument("--no-prefill", dest="prefill", action="store_false", help="aggregated: no prefill service")
    for role in ("prefill", "decode"):
        parser.add_argument(f"--{role}-min", type=int, default=0 if role == "prefill" else 1)
        parser.add_argument(f"--{role}-max", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        asyncio.run(follow(args))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
