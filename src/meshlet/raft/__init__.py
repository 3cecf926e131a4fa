"""Raft consensus, written for meshlet.

``core`` is sans-IO, after etcd-io/raft: feed it ``tick()``, ``step(message)`` and
``propose(data)``; take a ``Ready`` with ``ready()``; persist its hard state and
entries, then send its messages, then apply its committed entries; then call
``advance(ready)``. The core never touches a clock, socket, disk or global randomness.

``storage`` persists the hard state and log (CRC records, fsync), ``transport``
carries messages over TCP, and ``driver`` runs a node for real in that order. None of
it is wired into the server yet: the server still runs the single-node log
(``meshlet.server.node``).
"""
