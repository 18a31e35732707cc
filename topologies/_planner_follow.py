"""Carry out the Dynamo Planner's scaling decisions on a topovisor run (the Dynamo preset's ``planner=follow``).

Run with the engine's Python (it imports ``dynamo._core``; nothing of topovisor): it reads each decision a
``VirtualConnectorCoordinator`` (the Planner in ``environment: virtual``, or anything playing it) publishes
for ``--namespace``, caps the counts to the bounds, and hands the decision to the run's control socket
(``planner_decision``): the run records it (events, summary, ``supervisor status``), scales prefill and
decode through its own ``scale`` and answers once the new set is ready (or the removed replicas are down),
with what fell short. Only then is the decision ``complete``d, shortfall or not, so the Planner is never
held up: it sees the workers actually registered. A newer decision that comes meanwhile is taken once this
one is done (the connector hands out the newest unacknowledged one).

Killed mid-decision, the follower is restarted by its service's restart policy and hands the same decision
in again: the run finishes the first hand-in whether its caller is there or not, takes the second after
it, and scaling to the counts the services already have changes nothing.
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


#: a refused hand-in (the run still starting, its socket not yet there) is tried again this often
RETRY_SECONDS = 1.0
RETRIES = 60


async def _hand_in(path: str, fields: dict[str, object]) -> dict[str, object]:
    """The decision to the run; its outcome, or ``{"error": ...}`` once it kept being refused."""
    error = "not tried"
    for _ in range(RETRIES):
        try:
            reply = await asyncio.to_thread(_ask, path, "planner_decision", **fields)
        except OSError as exc:  # the socket is not there yet, or the run is going away
            error = f"control socket: {exc}"
        else:
            if reply.get("ok"):
                result = reply.get("result")
                return result if isinstance(result, dict) else {}
            error = str(reply.get("error", "refused"))
        _say(f"decision {fields['decision']}: the run answered: {error}; trying again")
        await asyncio.sleep(RETRY_SECONDS)
    return {"error": error}


async def follow(args: argparse.Namespace) -> None:
    from dynamo._core import DistributedRuntime, VirtualConnectorClient  # type: ignore[import-not-found]

    runtime = DistributedRuntime(asyncio.get_running_loop(), "etcd", "tcp", event_plane="zmq")
    try:
        client = VirtualConnectorClient(runtime, args.namespace)
        _say(f"following the Planner's decisions for namespace {args.namespace}")
        while True:
            await client.wait()
            decision = await client.get()
            asked = {"prefill": int(decision.num_prefill_workers), "decode": int(decision.num_decode_workers)}
            bounds = {"prefill": (args.prefill_min, args.prefill_max), "decode": (args.decode_min, args.decode_max)}
            if not args.prefill:  # aggregated: the Planner's decode count is the workers'
                asked.pop("prefill")
            asked = {service: count for service, count in asked.items() if count >= 0}  # -1: not decided
            counts = {service: max(bounds[service][0], min(bounds[service][1], n)) for service, n in asked.items()}
            _say(f"decision {decision.decision_id}: " + ", ".join(f"{k}={v}" for k, v in asked.items()))
            outcome = await _hand_in(
                args.socket,
                {
                    "decision": int(decision.decision_id),
                    "replicas": counts,
                    "asked": asked,
                    "bounds": {service: f"{bounds[service][0]}-{bounds[service][1]}" for service in counts},
                    "source": "dynamo-planner",
                },
            )
            await client.complete(decision)
            shortfall = outcome.get("shortfall") or {}
            said = "; ".join(f"{k} {v}" for k, v in shortfall.items()) if isinstance(shortfall, dict) else ""
            _say(f"decision {decision.decision_id} completed: {outcome.get('error') or said or 'done'}")
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
