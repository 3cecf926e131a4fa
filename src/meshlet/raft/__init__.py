"""Raft consensus, written for meshlet.

``core`` is sans-IO, after etcd-io/raft: feed it ``tick()``, ``step(message)`` and
``propose(data)``; take a ``Ready`` with ``ready()``; persist its hard state and
entries, then send its messages, then apply its committed entries; then call
``advance(ready)``. The core never touches a clock, socket, disk or global randomness.

Not wired into the server yet: the server still runs the single-node log
(``meshlet.server.node``). Storage, transport and the server's use of this core are
the next steps of the Raft issue.
"""
