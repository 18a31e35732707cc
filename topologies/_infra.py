"""etcd and NATS, the control plane of a Dynamo deployment, as services of the topology itself.

Both from Debian (``etcd-server``, ``nats-server``), listening on ``{host}`` (loopback on one machine, the
node's address on a cluster), with their data under the run directory so runs never share state.
Stopped with SIGTERM: etcd re-raises it (dies by signal 15) and nats-server exits 1; during a teardown
every exit is a normal stop, so neither is treated as a failure.
"""

from __future__ import annotations

import supervisor

from ._common import HEAD_NODE

__all__ = ["ETCD", "NATS", "etcd_service", "nats_service"]

ETCD = "etcd"
NATS = "nats"

#: both restart when they die on their own: workers and the frontend reconnect (etcd within its lease TTL)
_RESTART = supervisor.RestartPolicy(policy="always", max_restarts=3)
_STOP = supervisor.StopPolicy("SIGTERM", grace_seconds=5)


def etcd_service(program: str = "etcd") -> supervisor.Service:
    """A single-member etcd cluster on two free ports of its node; ready when ``/health`` says so."""
    client, peer = "http://{host}:{port}", "http://{host}:{peer}"
    return supervisor.Service(
        name=ETCD,
        command=[
            program,
            "--data-dir",
            "{run_dir}/etcd",
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"default={peer}",
        ],
        ports=["port", "peer"],
        ready=supervisor.Probe(supervisor.HttpCheck("http://{host}:{port}/health", json={"health": "true"})),
        stop=_STOP,
        restart=_RESTART,
        placement=HEAD_NODE,
    )


def nats_service(program: str = "nats-server") -> supervisor.Service:
    """NATS with JetStream (Dynamo uses it), its monitoring port for the readiness check."""
    return supervisor.Service(
        name=NATS,
        command=[program, "-js", "-a", "{host}", "-p", "{port}", "-m", "{monitor}", "-sd", "{run_dir}/nats"],
        ports=["port", "monitor"],
        ready=supervisor.Probe(supervisor.HttpCheck("http://{host}:{monitor}/healthz")),
        stop=_STOP,
        restart=_RESTART,
        placement=HEAD_NODE,
    )
