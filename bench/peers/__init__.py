"""Adapters that drive each benchmarked system through the ``Peer`` interface."""

from __future__ import annotations

import importlib

from peers.base import Peer, SystemUnavailable

# System name -> "module:class". Modules are imported only when their system is
# selected, so a missing package affects only that system.
PEERS = {
    "conveyor": "peers.conveyor_peer:ConveyorPeer",
    "conveyor-8threads": "peers.conveyor_peer:ConveyorDefaultConcurrencyPeer",
    "conveyor-processes": "peers.conveyor_peer:ConveyorProcessesPeer",
    "conveyor-postgres": "peers.conveyor_peer:ConveyorPostgresPeer",
    "celery": "peers.celery_peer:CeleryPeer",
    "dramatiq": "peers.dramatiq_peer:DramatiqPeer",
    "dramatiq-1thread": "peers.dramatiq_peer:DramatiqOneThreadPeer",
    "rq": "peers.rq_peer:RQPeer",
    "huey-sqlite": "peers.huey_peer:HueySqlitePeer",
    "huey-redis": "peers.huey_peer:HueyRedisPeer",
    "procrastinate": "peers.procrastinate_peer:ProcrastinatePeer",
}


def load_peer_class(name: str) -> type[Peer]:
    """Import the adapter class for ``name``, raising SystemUnavailable if that fails."""
    module_name, class_name = PEERS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise SystemUnavailable(f"cannot import {module_name}: {error!r}") from error
    return getattr(module, class_name)
