"""Where a replica runs on a cluster: the nodes of an allocation and each replica's share of them.

The contract between planning (which node each replica gets, templates such as ``{host}`` and
``{node_rank}`` filled per task) and the Slurm launcher (one ``srun`` step per replica on those nodes).
Without a ``cluster:`` a replica has no placement and runs on this machine.
"""

from __future__ import annotations

import attrs

__all__ = ["ClusterNode", "ReplicaPlacement"]


@attrs.frozen
class ClusterNode:
    """One node of an allocation: Slurm's name for it and the address services reach it by."""

    name: str  #: as Slurm knows it (``n1``), for ``srun -w``
    address: str  #: what ``{host}`` becomes (127.0.0.1 on emulated nodes that share this host)


@attrs.frozen
class ReplicaPlacement:
    """The nodes one replica runs on: one task per node, one ``srun`` step for the replica."""

    nodes: tuple[ClusterNode, ...]  #: node rank = position; the first is the leader (``{leader_host}``)
    argvs: tuple[tuple[str, ...], ...]  #: each task's command, templates such as ``{node_rank}`` filled
    gpus_per_node: int = 0  #: ``--gpus-per-node``; Slurm sets CUDA_VISIBLE_DEVICES

    @property
    def leader(self) -> ClusterNode:
        return self.nodes[0]
